"""Signing in to the console (/ui) as a browser does: the login form and its CSRF token."""

from __future__ import annotations

import re

import httpx

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
