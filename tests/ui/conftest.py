"""Console tests: a browser-like client (cookies kept, forms posted) over the app in process
(signing in: tests/support/console.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from tests.support.console import sign_in
from tests.support.harness import Harness


@pytest.fixture
async def browser_factory(
    harness: Harness,
) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=harness.app),  # type: ignore[arg-type]
            base_url="http://test",
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


SignIn = Callable[[Any], Coroutine[Any, Any, tuple[httpx.AsyncClient, str]]]


@pytest.fixture
def signed_in(browser_factory: Callable[[], httpx.AsyncClient]) -> SignIn:
    """A new browser signed in as the given user: (client, csrf token)."""

    async def make(user: Any) -> tuple[httpx.AsyncClient, str]:
        client = browser_factory()
        token = await sign_in(client, user.email)
        return client, token

    return make
