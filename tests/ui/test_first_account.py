"""The sign-in page of an empty database says how the first account (the admin) is made; once an
account exists, it says nothing of it."""

from __future__ import annotations

import html

from tests.support.console import csrf_of, sign_in

NOTE = "data-first-account"


async def login_page_text(browser) -> str:
    answer = await browser.get("/ui/login")
    assert answer.status_code == 200
    return html.unescape(answer.text)


async def test_an_empty_database_shows_how_to_sign_up_the_admin(harness, browser_factory):
    page = await login_page_text(browser_factory())
    assert NOTE in page and "No account exists yet" in page
    assert "The first account to sign up becomes the administrator" in page
    # On PUBLIC_BASE_URL, where users reach the service (never the request's Host header).
    assert f"curl -X POST {harness.settings.public_base_url}/v1/auth/signup" in page
    assert "incident-management create-admin --email you@example.com" in page


async def test_following_the_note_makes_the_admin_and_the_note_goes(harness, browser_factory):
    """The command the page shows, sent as it says, makes an admin who can then sign in."""
    browser = browser_factory()
    page = await login_page_text(browser)
    body = '{"email": "you@example.com", "password": "a long passphrase", "full_name": "You"}'
    assert f"-d '{body}'" in page
    async with harness.make_client() as api:
        made = await api.post(
            "/v1/auth/signup", content=body, headers={"Content-Type": "application/json"}
        )
    assert made.status_code == 201 and made.json()["role"] == "admin"
    assert NOTE not in await login_page_text(browser)
    await sign_in(browser, "you@example.com", "a long passphrase")


async def test_with_an_account_the_note_is_absent(harness, browser_factory, user):
    page = await login_page_text(browser_factory())
    assert NOTE not in page and "No account exists yet" not in page
    assert "/v1/auth/signup" not in page


async def test_with_signup_turned_off_it_points_to_create_admin(harness, browser_factory):
    harness.settings.signup_enabled = False
    page = await login_page_text(browser_factory())
    assert "No account exists yet" in page and "Signup is turned off" in page
    assert "incident-management create-admin --email you@example.com" in page
    assert "/v1/auth/signup" not in page


async def test_a_failed_sign_in_on_an_empty_database_still_explains(harness, browser_factory):
    browser = browser_factory()
    form = await browser.get("/ui/login")
    answer = await browser.post(
        "/ui/login",
        data={"email": "me@example.com", "password": "whatever!", "csrf_token": csrf_of(form.text)},
    )
    assert answer.status_code == 401
    assert "No account exists yet" in html.unescape(answer.text)
