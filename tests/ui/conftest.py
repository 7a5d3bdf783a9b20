"""Console tests: a browser-like client (cookies kept, forms posted) over the app in process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.factories import DEFAULT_PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> str:
    """Sign in through the login form; returns the session's CSRF token (from the next page)."""
    form = await client.get("/ui/login")
    assert form.status_code == 200
    answer = await client.post(
        "/ui/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
    )
    assert answer.status_code == 303, answer.text
    page = await client.get(answer.headers["location"])
    assert page.status_code == 200
    return csrf_of(page.text)


def sign_in_over_http(client: httpx.Client, email: str, password: str) -> None:
    """The login form, through a real server (a client keeping its cookies)."""
    form = client.get("/ui/login")
    answer = client.post(
        "/ui/login", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
    )
    assert answer.status_code == 303, answer.text


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
