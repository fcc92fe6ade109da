"""The client's address (config/clients.py) and the middleware that applies it to every request."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from config.clients import address_parse, client_address, is_loopback, peer_is_trusted
from config.middleware import TrustedProxyMiddleware


def request(peer: str = "127.0.0.1", forwarded_for: str | None = None, **meta: str):
    extra = {"REMOTE_ADDR": peer, **meta}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:51234", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:192.0.2.9", "192.0.2.9"),  # IPv4-mapped: the IPv4 address
        ("unknown", None),
        ("", None),
        ("_hidden", None),
        ("999.1.1.1", None),
    ],
)
def test_address_parse(value, expected):
    parsed = address_parse(value)
    assert (str(parsed) if parsed is not None else None) == expected


class TestNoProxyTrusted:
    """The default: the client is the socket peer, whatever the request says."""

    def test_forwarded_for_is_ignored(self):
        assert client_address(request("127.0.0.1", "203.0.113.7")) == "127.0.0.1"
        assert client_address(request("198.51.100.2", "127.0.0.1")) == "198.51.100.2"

    def test_the_peer(self):
        assert client_address(request("198.51.100.2")) == "198.51.100.2"
        assert client_address(request("::1")) == "::1"

    def test_no_address(self):
        assert client_address(None) == ""
        assert client_address(request("")) == ""
        assert client_address(request("not-an-ip", "203.0.113.7")) == ""


class TestTrustedProxies:
    @pytest.fixture(autouse=True)
    def trusted(self, settings):
        settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]

    def test_the_forwarded_address_from_a_trusted_peer(self):
        assert client_address(request("127.0.0.1", "203.0.113.7")) == "203.0.113.7"

    def test_walks_from_the_right_past_trusted_proxies(self):
        # client -> 10.1.2.3 (proxy) -> 10.0.0.5 (proxy) -> 127.0.0.1 (proxy, the peer)
        assert client_address(request("127.0.0.1", "203.0.113.7, 10.1.2.3, 10.0.0.5")) == "203.0.113.7"

    def test_what_the_client_wrote_left_of_it_does_not_count(self):
        # The client sent "X-Forwarded-For: 192.0.2.1"; the proxy appended the address it saw.
        assert client_address(request("127.0.0.1", "192.0.2.1, 203.0.113.7")) == "203.0.113.7"
        assert client_address(request("127.0.0.1", "127.0.0.1, 203.0.113.7")) == "203.0.113.7"

    def test_an_untrusted_peer_gets_no_say(self):
        assert client_address(request("198.51.100.2", "203.0.113.7")) == "198.51.100.2"

    def test_a_trusted_peer_without_the_header_is_the_client(self):
        assert client_address(request("127.0.0.1")) == "127.0.0.1"
        assert client_address(request("127.0.0.1", "")) == "127.0.0.1"

    def test_every_hop_trusted_gives_the_leftmost(self):
        assert client_address(request("127.0.0.1", "10.0.0.9, 10.0.0.5")) == "10.0.0.9"

    def test_a_hop_that_is_not_an_address_ends_the_walk_at_the_last_trusted_one(self):
        assert client_address(request("127.0.0.1", "203.0.113.7, garbage")) == "127.0.0.1"
        assert client_address(request("127.0.0.1", "garbage, 10.0.0.5")) == "10.0.0.5"

    def test_ports_and_ipv6_hops(self):
        assert client_address(request("127.0.0.1", "[2001:db8::7]:4711, 10.0.0.5:80")) == "2001:db8::7"

    def test_a_very_long_header_is_cut(self):
        hops = ", ".join(["10.0.0.1"] * 1000 + ["203.0.113.7"])
        assert client_address(request("127.0.0.1", hops)) == "203.0.113.7"
        all_trusted = ", ".join(["192.0.2.1"] + ["10.0.0.1"] * 1000)
        assert client_address(request("127.0.0.1", all_trusted)) == "10.0.0.1"  # at most MAX_HOPS are read

    def test_peer_is_trusted(self):
        assert peer_is_trusted(request("10.200.0.1"))
        assert not peer_is_trusted(request("198.51.100.2"))

    def test_a_drf_request_gives_the_same_answer(self):
        from rest_framework.request import Request

        assert client_address(Request(request("127.0.0.1", "203.0.113.7"))) == "203.0.113.7"


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.9.9.9")
    assert not is_loopback("203.0.113.7") and not is_loopback("") and not is_loopback("localhost")


# --- The middleware: REMOTE_ADDR is the client for everything after it -------------------


def through_middleware(req):
    seen = {}

    def view(r):
        seen.update(r.META)
        return HttpResponse()

    TrustedProxyMiddleware(view)(req)
    return seen


def test_forwarding_headers_from_an_untrusted_peer_are_dropped():
    seen = through_middleware(
        request("127.0.0.1", "203.0.113.7", HTTP_X_FORWARDED_PROTO="https", HTTP_FORWARDED="for=203.0.113.7")
    )
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert not {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED"} & set(seen)


@override_settings(TRUSTED_PROXIES=["127.0.0.1"])
def test_from_a_trusted_peer_remote_addr_becomes_the_client_and_the_scheme_counts():
    seen = through_middleware(request("127.0.0.1", "192.0.2.1, 203.0.113.7", HTTP_X_FORWARDED_PROTO="https"))
    assert seen["REMOTE_ADDR"] == "203.0.113.7"
    assert "HTTP_X_FORWARDED_FOR" not in seen  # consumed: read once, here
    assert seen["HTTP_X_FORWARDED_PROTO"] == "https"


@override_settings(TRUSTED_PROXIES=["127.0.0.1"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_https_is_believed_only_from_a_trusted_proxy():
    # What config/settings.py sets when TRUSTED_PROXIES is not empty (tests/config/test_settings.py).
    trusted = request("127.0.0.1", HTTP_X_FORWARDED_PROTO="https")
    through_middleware(trusted)
    assert trusted.is_secure()
    direct = request("198.51.100.2", HTTP_X_FORWARDED_PROTO="https")
    through_middleware(direct)
    assert not direct.is_secure()
