"""Password recovery over a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import make_settings
from tests.factories import DEFAULT_PASSWORD

SAME_MESSAGE = "If an active account uses that email, a password recovery email has been sent"


@pytest.fixture
def settings(database_url, smtp_server):
    _, port = smtp_server
    return make_settings(database_url, smtp_host="127.0.0.1", smtp_port=port)


def token_from(message) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"^ {4}([A-Za-z0-9_-]{43})\r?$", body, re.MULTILINE)
    assert match, body
    return match.group(1)


async def recover(client, email: str):
    return await client.post(f"/v1/auth/password-recovery/{email}")


async def reset(client, token: str, password: str = "my new passphrase"):
    return await client.post(
        "/v1/auth/reset-password/", json={"token": token, "new_password": password}
    )


async def test_recovery_mails_a_token_that_resets_the_password_once(
    client, user, user_client, smtp_server
):
    inbox, _ = smtp_server
    response = await recover(client, "User@Example.com")
    assert response.status_code == 200
    assert response.json() == {"message": SAME_MESSAGE}
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["To"] == "user@example.com"
    assert "password recovery" in message["Subject"]
    token = token_from(message)

    assert (await reset(client, token)).json() == {"message": "Password updated"}
    # The old password and every token issued before the reset stop working.
    assert (await user_client.get("/v1/users/me")).status_code == 401
    old = await client.post(
        "/v1/auth/login/access-token",
        data={"username": "user@example.com", "password": DEFAULT_PASSWORD},
    )
    assert old.status_code == 401
    new = await client.post(
        "/v1/auth/login/access-token",
        data={"username": "user@example.com", "password": "my new passphrase"},
    )
    assert new.status_code == 200

    again = await reset(client, token, "yet another passphrase")
    assert again.status_code == 400
    assert again.json() == {"detail": "Invalid or expired password reset token"}


async def test_unknown_and_inactive_accounts_get_the_same_answer_and_no_mail(
    client, factory, smtp_server
):
    inbox, _ = smtp_server
    await factory.user(email="inactive@example.com", is_active=False)
    unknown = await recover(client, "nobody@example.com")
    inactive = await recover(client, "inactive@example.com")
    assert unknown.status_code == inactive.status_code == 200
    assert unknown.json() == inactive.json() == {"message": SAME_MESSAGE}
    assert inbox.messages == []


async def test_token_expires(client, harness, user, smtp_server):
    inbox, _ = smtp_server
    await recover(client, "user@example.com")
    token = token_from(inbox.messages[0])
    harness.clock.advance(minutes=60)
    response = await reset(client, token)
    assert response.status_code == 400


async def test_a_reset_spends_every_outstanding_token(client, user, smtp_server):
    inbox, _ = smtp_server
    await recover(client, "user@example.com")
    await recover(client, "user@example.com")
    first, second = (token_from(m) for m in inbox.messages)
    assert first != second
    assert (await reset(client, second)).status_code == 200
    assert (await reset(client, first)).status_code == 400


@pytest.mark.parametrize("token", ["", "x" * 43, "x" * 257])
async def test_bad_tokens_are_refused(client, user, token):
    response = await reset(client, token)
    assert response.status_code in (400, 422)


async def test_new_password_must_be_valid(client, user, smtp_server):
    inbox, _ = smtp_server
    await recover(client, "user@example.com")
    response = await reset(client, token_from(inbox.messages[0]), "short")
    assert response.status_code == 422
    # The token was not spent by the refused attempt.
    assert (await reset(client, token_from(inbox.messages[0]))).status_code == 200


async def test_unreachable_smtp_server_still_answers_the_same(
    client, harness, user, smtp_server, caplog
):
    harness.settings.smtp_port = 1  # nothing listens there
    with caplog.at_level(logging.ERROR, logger="app.auth.router"):
        response = await recover(client, "user@example.com")
    assert response.status_code == 200
    assert response.json() == {"message": SAME_MESSAGE}
    assert "could not send the password recovery email" in caplog.text


class TestWithoutSmtp:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, smtp_host=None)

    async def test_development_logs_the_token_instead(self, client, user, caplog):
        with caplog.at_level(logging.INFO, logger="app.auth.router"):
            await recover(client, "user@example.com")
        match = re.search(r"SMTP_HOST unset\): (\S+)", caplog.text)
        assert match, caplog.text
        assert (await reset(client, match.group(1))).status_code == 200


class TestProductionWithoutSmtp:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(
            database_url, smtp_host=None, environment="production", allow_sqlite_in_production=True
        )

    async def test_production_never_logs_the_token(self, client, user, caplog):
        with caplog.at_level(logging.INFO, logger="app.auth.router"):
            await recover(client, "user@example.com")
        assert "SMTP_HOST is not set; no email sent" in caplog.text
        assert not re.search(r"[A-Za-z0-9_-]{43}", caplog.text)
