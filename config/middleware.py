"""Request and response hygiene applied in one place, for every page.

- ``TrustedProxyMiddleware`` (first): forwarding headers count only from ``TRUSTED_PROXIES``.
  From a trusted proxy, ``REMOTE_ADDR`` becomes the client that the chain gives
  (config/clients.py) and ``X-Forwarded-For`` is consumed; from anyone else every forwarding
  header is dropped, so that neither Django (``SECURE_PROXY_SSL_HEADER``) nor a library (DRF's
  throttles read ``X-Forwarded-For``) can be told a different client or scheme.
- ``SecurityHeadersMiddleware`` (after Django's ``ContentSecurityPolicyMiddleware``): pages that
  show a signed-in person's data are never stored by a browser or a proxy
  (``Cache-Control: private, no-store``), and the policy's ``connect-src`` names this host's
  websocket origin (``ws:``/``wss:``) beside ``'self'``, for browsers whose ``'self'`` does not
  cover it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control

from config.clients import FORWARDED_FOR, FORWARDING_HEADERS, client_address, peer_is_trusted

# Pages whose content belongs to the signed-in person: the inbox, the operator console, run
# traces, the admin, and the account pages (sign-in, password change).
PRIVATE_PATH_PREFIXES = ("/inbox/", "/console/", "/runs/", "/admin/", "/accounts/")

Handler = Callable[[HttpRequest], HttpResponseBase]


class TrustedProxyMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        meta = request.META
        if peer_is_trusted(request):
            meta["REMOTE_ADDR"] = client_address(request)
            meta.pop(FORWARDED_FOR, None)  # consumed: nothing after this reads it again
        else:
            for header in FORWARDING_HEADERS:
                meta.pop(header, None)
        return self.get_response(request)


def is_private_path(path: str) -> bool:
    return path.startswith(PRIVATE_PATH_PREFIXES)


def websocket_origin(request: HttpRequest) -> str | None:
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'wss' if request.is_secure() else 'ws'}://{host}"


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if is_private_path(request.path):
            patch_cache_control(response, private=True, no_store=True)
        policy = settings.SECURE_CSP
        origin = websocket_origin(request) if policy else None
        if origin is not None and not hasattr(response, "_csp_config"):
            # Read by django.middleware.csp.ContentSecurityPolicyMiddleware, which runs after this.
            connect = [*policy.get("connect-src", ["'self'"]), origin]
            response._csp_config = {**policy, "connect-src": connect}  # type: ignore[attr-defined]
        return response
