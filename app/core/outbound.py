"""The rules for calls a user can aim (webhooks, Slack URLs): which URLs and addresses may be
called. Used when a URL is saved (syntax only) and when it is called: then its host is resolved
once, every address is checked, and the connection goes to a checked address (GuardedTransport),
so that a name answering a public address to the check and a private one to the connection (DNS
rebinding) reaches nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx


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
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local-use translation
SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, but routed inside some networks


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable, including any IPv4 address an IPv6 one carries (mapped, 6to4, NAT64)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in SITE_LOCAL or address in LOCAL_NAT64:
            return False
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo:
            embedded.append(address.teredo[1])
        if address in NAT64 or int(address) >> 32 == 0:  # NAT64, or the old ::a.b.c.d form
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(v4 is None or v4.is_global for v4 in embedded)
    return True


# ---- calling: resolve once, check every address, connect to a checked one ------------------------

REFUSED = "destination refused: not a public address"
"""The one phrase a refused destination leaves in the delivery log, whatever the address was:
the log must not tell a user which private addresses exist or which ports are open."""

Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedDestination(Exception):
    """The host resolved to an address that may not be called (or to none)."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` has, as the system's resolver answers (one lookup)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but a host name is resolved here, once, every address it has
    is checked, and the connection goes to a checked address. httpcore still starts TLS with the
    host name (SNI and the certificate check), and httpx still sends it as the Host header, so
    nothing changes for the receiver; only a second lookup, which a rebinding name would answer
    with a private address, no longer happens."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await asyncio.wait_for(self.resolver(host, port), timeout)
            except (TimeoutError, OSError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        if not self.allow_private and not all(
            is_public(ipaddress.ip_address(a)) for a in addresses
        ):
            raise RefusedDestination()
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a GuardedBackend: the client for every URL a user can aim (webhooks,
    Slack). No proxies, so the connection goes where the check said."""

    def __init__(self, *, limits: httpx.Limits, backend: GuardedBackend) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx builds its pool without a way to pass a network backend; this is the same pool
        # (same TLS context and limits) on ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
