"""The rules for calls a user can aim (webhooks, Slack URLs): which URLs and addresses may be
called. Used when a URL is saved (syntax only) and when it is called (its addresses too)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def check_url_syntax(url: str, *, allow_private: bool) -> str:
    """The reason `url` may not be called, or "" (no DNS lookup; for validating input)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"the URL is malformed ({exc})"
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        return "the URL must use https" if not allow_private else "the URL must use http(s)"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed"
    if allow_private:
        return ""
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        if parts.hostname.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
            return PRIVATE
        return ""
    return "" if is_public(address) else PRIVATE


PRIVATE = "the URL points at a private, loopback or link-local address"
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable, including any IPv4 address an IPv6 one carries (mapped, 6to4, NAT64)."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo:
            embedded.append(address.teredo[1])
        if address in NAT64 or int(address) >> 32 == 0:  # NAT64, or the old ::a.b.c.d form
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(v4 is None or v4.is_global for v4 in embedded)
    return True
