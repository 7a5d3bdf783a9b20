"""Signup, login, token checks: every success and failure path of /v1/auth."""

from __future__ import annotations

import secrets
from datetime import timedelta

import jwt
import pytest

from tests.factories import DEFAULT_PASSWORD
from tests.support.settings import TEST_SECRET


async def login(client, email: str, password: str):
    return await client.post(
        "/v1/auth/login/access-token", data={"username": email, "password": password}
    )


class TestSignup:
    async def test_first_account_is_admin_and_later_ones_are_users(self, client):
        first = await client.post(
            "/v1/auth/signup",
            json={"email": "Founder@Example.com", "password": "long enough", "full_name": "F"},
        )
        second = await client.post(
            "/v1/auth/signup",
            json={"email": "second@example.com", "password": "long enough", "full_name": "S"},
        )
        assert first.status_code == 201, first.text
        assert first.json()["role"] == "admin"
        assert first.json()["email"] == "founder@example.com"
        assert second.status_code == 201
        assert second.json()["role"] == "user"
        assert set(first.json()) == {
            "id", "email", "full_name", "role", "is_active", "phone", "timezone", "created_at"
        }  # fmt: skip

    async def test_duplicate_email_is_409_whatever_the_case(self, client, user):
        response = await client.post(
            "/v1/auth/signup",
            json={"email": "USER@example.com", "password": "long enough", "full_name": "X"},
        )
        assert response.status_code == 409
        assert "already exists" in response.json()["detail"]

    async def test_turned_off_signup_is_403(self, harness, client):
        harness.settings.signup_enabled = False
        response = await client.post(
            "/v1/auth/signup",
            json={"email": "a@example.com", "password": "long enough", "full_name": "A"},
        )
        assert response.status_code == 403
        assert (await login(client, "a@example.com", "long enough")).status_code == 401

    @pytest.mark.parametrize(
        "body",
        [
            {"email": "not-an-email", "password": "long enough", "full_name": "A"},
            {"email": "a@example.com", "password": "short", "full_name": "A"},
            {"email": "a@example.com", "password": "x" * 129, "full_name": "A"},
            {"email": "a@example.com", "password": "long enough", "full_name": ""},
            {"email": "a@example.com", "password": "long enough"},
            {
                "email": "a@example.com",
                "password": "long enough",
                "full_name": "A",
                "role": "admin",
            },
        ],
        ids=["bad-email", "short-password", "long-password", "empty-name", "missing", "extra"],
    )
    async def test_invalid_body_is_422(self, client, body):
        response = await client.post("/v1/auth/signup", json=body)
        assert response.status_code == 422
        assert response.json()["detail"]

    async def test_password_is_never_returned_or_stored_in_clear(self, client, harness):
        response = await client.post(
            "/v1/auth/signup",
            json={"email": "a@example.com", "password": "long enough", "full_name": "A"},
        )
        assert "password" not in response.text
        stored = await harness.factory.reload_user(response.json()["id"])
        assert stored.hashed_password.startswith("$argon2")
        assert "long enough" not in stored.hashed_password


class TestLogin:
    async def test_login_returns_a_working_bearer_token(self, client, user):
        response = await login(client, "USER@example.com", DEFAULT_PASSWORD)
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 60 * 60
        me = await client.post(
            "/v1/auth/login/test-token",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert me.status_code == 200
        assert me.json()["email"] == "user@example.com"

    @pytest.mark.parametrize(
        ("email", "password"),
        [
            ("user@example.com", "wrong password"),
            ("nobody@example.com", DEFAULT_PASSWORD),
            ("user@example.com", "x" * 10_000),
            ("", ""),
        ],
        ids=["wrong-password", "unknown-email", "huge-password", "empty"],
    )
    async def test_wrong_credentials_are_401(self, client, user, email, password):
        response = await login(client, email, password)
        assert response.status_code in (401, 422)
        assert "access_token" not in response.json()

    async def test_inactive_user_cannot_log_in(self, client, factory):
        await factory.user(email="gone@example.com", is_active=False)
        response = await login(client, "gone@example.com", DEFAULT_PASSWORD)
        assert response.status_code == 401


class TestTokens:
    async def test_missing_token_is_401_with_bearer_challenge(self, client):
        response = await client.post("/v1/auth/login/test-token")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_token_expires_by_the_injected_clock(self, harness, user_client):
        assert (await user_client.get("/v1/users/me")).status_code == 200
        harness.clock.advance(minutes=59)
        assert (await user_client.get("/v1/users/me")).status_code == 200
        harness.clock.advance(minutes=1)
        assert (await user_client.get("/v1/users/me")).status_code == 401

    async def test_token_of_a_deactivated_user_is_refused(self, admin_client, user_client, user):
        response = await admin_client.put(f"/v1/users/{user.id}", json={"is_active": False})
        assert response.status_code == 200
        assert (await user_client.get("/v1/users/me")).status_code == 401
        # Reactivating does not bring back tokens issued before the deactivation.
        await admin_client.put(f"/v1/users/{user.id}", json={"is_active": True})
        assert (await user_client.get("/v1/users/me")).status_code == 401

    async def test_token_of_a_deleted_user_is_refused(self, admin_client, user_client, user):
        assert (await admin_client.delete(f"/v1/users/{user.id}")).status_code == 200
        assert (await user_client.get("/v1/users/me")).status_code == 401

    async def test_token_issued_before_a_password_change_is_refused(self, client, user_client):
        changed = await user_client.post(
            "/v1/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "a brand new one"},
        )
        assert changed.status_code == 200
        assert (await user_client.get("/v1/users/me")).status_code == 401
        assert (await login(client, "user@example.com", DEFAULT_PASSWORD)).status_code == 401
        fresh = await login(client, "user@example.com", "a brand new one")
        assert fresh.status_code == 200

    @pytest.mark.parametrize(
        "forge",
        [
            lambda claims: jwt.encode(claims, key=None, algorithm="none"),
            lambda claims: jwt.encode(claims, TEST_SECRET, algorithm="HS512"),
            lambda claims: jwt.encode(claims, "another secret of enough length!!", "HS256"),
            lambda claims: jwt.encode({**claims, "type": "refresh"}, TEST_SECRET, "HS256"),
            lambda claims: jwt.encode({**claims, "ver": 1}, TEST_SECRET, "HS256"),
            lambda claims: jwt.encode({k: v for k, v in claims.items() if k != "exp"}, TEST_SECRET),
            lambda claims: "not.a.jwt",
            lambda claims: jwt.encode({**claims, "sub": str(2**63)}, TEST_SECRET, "HS256"),
            lambda claims: jwt.encode({**claims, "sub": str(2**70)}, TEST_SECRET, "HS256"),
            lambda claims: jwt.encode({**claims, "sub": "-1"}, TEST_SECRET, "HS256"),
            lambda claims: jwt.encode({**claims, "ver": 2**64}, TEST_SECRET, "HS256"),
        ],
        ids=[
            "alg-none",
            "other-alg",
            "other-key",
            "wrong-type",
            "old-version",
            "no-exp",
            "junk",
            "sub-2^63",
            "sub-2^70",
            "sub-negative",
            "ver-2^64",
        ],
    )
    async def test_forged_or_malformed_tokens_are_refused(self, harness, user, forge):
        now = harness.clock.now()
        claims = {
            "sub": str(user.id),
            "ver": 0,
            "type": "access",
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
        }
        # The genuine token with these claims works, so a refusal below is the forgery's doing.
        genuine = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
        async with harness.make_client(genuine) as ok_client:
            assert (await ok_client.get("/v1/users/me")).status_code == 200
        async with harness.make_client(forge(claims)) as forged_client:
            response = await forged_client.get("/v1/users/me")
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid or expired token"}


async def test_a_deleted_users_token_never_works_for_the_next_account(
    harness, admin_client, factory
):
    """Ids are never reused (SQLite AUTOINCREMENT): an old token cannot become someone else's."""
    leaver = await factory.user(email="leaver@example.com")
    async with harness.make_client(factory.token(leaver)) as old:
        assert (await admin_client.delete(f"/v1/users/{leaver.id}")).status_code == 200
        created = await admin_client.post(
            "/v1/users/",
            json={"email": "next@example.com", "password": "long enough", "full_name": "N",
                  "role": "admin"},
        )  # fmt: skip
        assert created.json()["id"] != leaver.id
        assert (await old.get("/v1/users/me")).status_code == 401
        assert (await old.get("/v1/users/")).status_code == 401


class TestSignupDefault:
    def test_signup_is_open_in_development_and_closed_in_production_unless_set(self):
        from app.core.config import Settings

        strong = {"secret_key": secrets.token_urlsafe(32), "database_url": "postgresql://db/x"}
        assert Settings(_env_file=None, signup_enabled=None).allow_signup is True
        production = Settings(_env_file=None, environment="production", **strong)
        assert production.allow_signup is False
        opened = Settings(_env_file=None, environment="production", signup_enabled=True, **strong)
        assert opened.allow_signup is True
