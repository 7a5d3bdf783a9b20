"""The guarded network backend of outbound calls a user can aim (app/core/outbound.py): one
lookup, every address checked, the connection made to a checked address."""

from __future__ import annotations

import ipaddress

import httpcore
import pytest

from app.core.outbound import GuardedBackend, RefusedDestination, is_public

PUBLIC, OTHER_PUBLIC = "93.184.216.34", "2606:2800:220:1::1"


class Recorder(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect; refuses the addresses in `down`; never connects."""

    def __init__(self, down: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.down = down

    async def connect_tcp(
        self,
        host,
        port,
        timeout=None,  # noqa: ASYNC109
        local_address=None,
        socket_options=None,
    ):
        self.calls.append((host, port))
        raise httpcore.ConnectError(f"{host} is down" if host in self.down else "stand-in")


def resolver(*answers: list[str]):
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


async def test_each_address_is_tried_in_order_and_only_checked_ones():
    inner = Recorder(down=(PUBLIC,))
    backend = GuardedBackend(
        allow_private=False, resolver=resolver([PUBLIC, OTHER_PUBLIC]), inner=inner
    )
    with pytest.raises(httpcore.ConnectError, match="stand-in"):
        await backend.connect_tcp("hooks.example.com", 443)
    assert inner.calls == [(PUBLIC, 443), (OTHER_PUBLIC, 443)]


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], [PUBLIC, "10.0.0.7"], ["::ffff:169.254.169.254"], ["64:ff9b::a00:1"], []],
)
async def test_a_name_with_any_address_not_public_connects_nowhere(answer):
    inner = Recorder()
    backend = GuardedBackend(allow_private=False, resolver=resolver(answer), inner=inner)
    with pytest.raises((RefusedDestination, httpcore.ConnectError)) as raised:
        await backend.connect_tcp("hooks.example.com", 443)
    assert isinstance(raised.value, RefusedDestination) == bool(answer)
    assert inner.calls == []


async def test_an_address_literal_is_checked_without_a_lookup():
    inner, lookup = Recorder(), resolver()
    backend = GuardedBackend(allow_private=False, resolver=lookup, inner=inner)
    with pytest.raises(RefusedDestination):
        await backend.connect_tcp("127.0.0.1", 8080)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp(PUBLIC, 443)
    assert lookup.asked == [] and inner.calls == [(PUBLIC, 443)]


async def test_where_private_networks_are_allowed_loopback_is_connected_once_resolved():
    inner, lookup = Recorder(), resolver(["127.0.0.1"])
    backend = GuardedBackend(allow_private=True, resolver=lookup, inner=inner)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("receiver.internal", 9000)
    assert lookup.asked == ["receiver.internal"] and inner.calls == [("127.0.0.1", 9000)]


async def test_a_name_that_does_not_resolve_is_a_connection_error_and_unix_sockets_are_refused():
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    backend = GuardedBackend(allow_private=False, resolver=nowhere, inner=Recorder())
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nowhere\.example"):
        await backend.connect_tcp("nowhere.example", 443)
    with pytest.raises(RefusedDestination):
        await backend.connect_unix_socket("/run/docker.sock")


@pytest.mark.parametrize(
    "address",
    ["fec0::1", "64:ff9b:1::a00:1", "64:ff9b:1::5db8:d822", "ff0e::1", "224.0.0.251", "ff02::fb"],
)
def test_site_local_local_use_nat64_and_multicast_are_not_public(address):
    """Python's is_global takes these for global (3.11): the check must not."""
    assert not is_public(ipaddress.ip_address(address))
    assert is_public(ipaddress.ip_address("2606:2800:220:1::1"))
