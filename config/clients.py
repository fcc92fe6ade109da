"""The client's address: one answer for every place that keys on it or records it.

The ASGI server runs without proxy headers (``--no-proxy-headers``), so ``REMOTE_ADDR`` is the
socket peer. Forwarding headers count only when that peer is one of ``TRUSTED_PROXIES``: then
``X-Forwarded-For`` is walked from the right, each hop a trusted proxy vouches for the one to its
left, and the first address that is not a trusted proxy is the client. With no proxy trusted
(the default), the client is the socket peer, whatever the request says.

``TrustedProxyMiddleware`` (config/middleware.py) applies this once at the top of every request,
so that ``REMOTE_ADDR`` means the client for everything after it; the sign-in limits
(config/throttle.py), ``/metrics`` and the audit log's sign-in events call ``client_address``
themselves as well, which gives the same answer on a request already resolved.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

from django.conf import settings

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Forwarding headers, as request.META names them: they count only from a trusted proxy.
FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED")
# A longer header is cut: nobody has a chain of this many proxies.
MAX_HOPS = 32


def address_parse(value: str) -> Address | None:
    """An IP address from a socket peer or an X-Forwarded-For hop (``1.2.3.4``, ``1.2.3.4:5678``,
    ``::1``, ``[::1]:5678``); IPv4-mapped IPv6 becomes IPv4. None when it is not an address."""
    text = value.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def trusted_proxies() -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` as networks (an address is a network of one)."""
    return _networks(tuple(settings.TRUSTED_PROXIES))


def is_trusted_proxy(address: Address | None, networks: Iterable[Network] | None = None) -> bool:
    if address is None:
        return False
    return any(address in network for network in (trusted_proxies() if networks is None else networks))


def _meta(request: Any) -> Mapping[str, Any]:
    # A Django request or a DRF one (which proxies META to the Django request it wraps).
    return getattr(request, "META", None) or {}


def peer_is_trusted(request: Any) -> bool:
    """Whether the socket peer is a trusted proxy, whose forwarding headers count."""
    return is_trusted_proxy(address_parse(str(_meta(request).get("REMOTE_ADDR") or "")))


def client_address(request: Any) -> str:
    """The client's IP address as the trusted chain gives it; "" when there is none (no request,
    or a peer that is not an IP address, such as a unix socket)."""
    if request is None:
        return ""
    meta = _meta(request)
    peer = address_parse(str(meta.get("REMOTE_ADDR") or ""))
    if peer is None:
        return ""
    networks = trusted_proxies()
    if not is_trusted_proxy(peer, networks):
        return str(peer)
    client = peer
    hops = [hop for hop in str(meta.get(FORWARDED_FOR) or "").split(",") if hop.strip()][-MAX_HOPS:]
    for hop in reversed(hops):
        address = address_parse(hop)
        if address is None:
            # Not an address: no trusted proxy wrote it. The last hop vouched for is the client.
            break
        client = address
        if not is_trusted_proxy(address, networks):
            break
    return str(client)


def is_loopback(address: str) -> bool:
    parsed = address_parse(address)
    return parsed is not None and parsed.is_loopback
