"""/v1/users: self-service and admin management, roles, pagination, last-admin protection."""

from __future__ import annotations

import pytest

from tests.factories import DEFAULT_PASSWORD


class TestMe:
    async def test_read_me(self, user_client, user):
        response = await user_client.get("/v1/users/me")
        assert response.status_code == 200
        assert response.json()["id"] == user.id
        assert response.json()["role"] == "user"

    async def test_update_me_changes_only_given_fields(self, user_client):
        response = await user_client.put(
            "/v1/users/me",
            json={"full_name": "Uma U.", "phone": "+4915112345678", "timezone": "Europe/Berlin"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["full_name"], body["phone"], body["timezone"]) == (
            "Uma U.", "+4915112345678", "Europe/Berlin"
        )  # fmt: skip
        assert body["email"] == "user@example.com"
        cleared = await user_client.put("/v1/users/me", json={"phone": None})
        assert cleared.json()["phone"] is None
        assert cleared.json()["full_name"] == "Uma U."

    @pytest.mark.parametrize(
        "body",
        [
            {"role": "admin"},
            {"is_active": False},
            {"phone": "0151 123"},
            {"timezone": "Mars/Olympus"},
            {"email": "nope"},
            {"full_name": None},
            {"email": None},
        ],
        ids=["role", "is_active", "phone", "timezone", "email", "null-name", "null-email"],
    )
    async def test_update_me_refuses_what_a_user_may_not_set(self, user_client, body):
        response = await user_client.put("/v1/users/me", json=body)
        assert response.status_code == 422
        me = (await user_client.get("/v1/users/me")).json()
        assert me["role"] == "user" and me["is_active"] is True

    async def test_email_taken_by_another_account_is_409(self, user_client, admin):
        response = await user_client.put(
            "/v1/users/me",
            json={"email": "ADMIN@example.com", "current_password": DEFAULT_PASSWORD},
        )
        assert response.status_code == 409

    @pytest.mark.parametrize("password", [None, "not my password"])
    async def test_changing_email_needs_the_current_password(self, user_client, password):
        body = {"email": "new@example.com"} | ({"current_password": password} if password else {})
        response = await user_client.put("/v1/users/me", json=body)
        assert response.status_code == 403
        assert (await user_client.get("/v1/users/me")).json()["email"] == "user@example.com"
        ok = await user_client.put(
            "/v1/users/me", json={"email": "new@example.com", "current_password": DEFAULT_PASSWORD}
        )
        assert ok.status_code == 200 and ok.json()["email"] == "new@example.com"

    async def test_change_password_needs_the_current_one(self, user_client):
        response = await user_client.post(
            "/v1/users/me/password",
            json={"current_password": "not it at all", "new_password": "a brand new one"},
        )
        assert response.status_code == 401
        assert (await user_client.get("/v1/users/me")).status_code == 200

    async def test_anonymous_is_401(self, client):
        assert (await client.get("/v1/users/me")).status_code == 401
        assert (await client.put("/v1/users/me", json={"full_name": "x"})).status_code == 401


ADMIN_ROUTES = [
    ("GET", "/v1/users/", None),
    ("POST", "/v1/users/", {"email": "n@example.com", "password": "long enough", "full_name": "N"}),
    ("GET", "/v1/users/{id}", None),
    ("PUT", "/v1/users/{id}", {"full_name": "Changed"}),
    ("DELETE", "/v1/users/{id}", None),
]


class TestRoles:
    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
    async def test_plain_user_gets_403_and_nothing_changes(
        self, user_client, admin, method, path, body
    ):
        response = await user_client.request(
            method, path.format(id=admin.id), json=body if body else None
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "Admin role required"}

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
    async def test_anonymous_gets_401(self, client, admin, method, path, body):
        response = await client.request(method, path.format(id=admin.id), json=body)
        assert response.status_code == 401

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES[2:])
    async def test_missing_user_is_404(self, admin_client, method, path, body):
        response = await admin_client.request(method, path.format(id=999_999), json=body)
        assert response.status_code == 404
        assert response.json() == {"detail": "User 999999 not found"}


class TestAdminManagement:
    async def test_create_then_read_update_delete(self, admin_client, client):
        created = await admin_client.post(
            "/v1/users/",
            json={
                "email": "New@Example.com",
                "password": "long enough",
                "full_name": "New Person",
                "role": "admin",
                "phone": "+15555550123",
                "timezone": "America/New_York",
            },
        )
        assert created.status_code == 201, created.text
        new = created.json()
        assert (new["email"], new["role"], new["timezone"]) == (
            "new@example.com", "admin", "America/New_York"
        )  # fmt: skip
        login = await client.post(
            "/v1/auth/login/access-token",
            data={"username": "new@example.com", "password": "long enough"},
        )
        assert login.status_code == 200

        assert (await admin_client.get(f"/v1/users/{new['id']}")).json() == new
        updated = await admin_client.put(
            f"/v1/users/{new['id']}", json={"role": "user", "full_name": "Renamed"}
        )
        assert updated.status_code == 200
        assert (updated.json()["role"], updated.json()["full_name"]) == ("user", "Renamed")

        deleted = await admin_client.delete(f"/v1/users/{new['id']}")
        assert deleted.status_code == 200
        assert deleted.json()["email"] == "new@example.com"
        assert (await admin_client.get(f"/v1/users/{new['id']}")).status_code == 404

    async def test_duplicate_email_is_409(self, admin_client, user):
        response = await admin_client.post(
            "/v1/users/",
            json={"email": "user@EXAMPLE.com", "password": "long enough", "full_name": "Dup"},
        )
        assert response.status_code == 409
        renamed = await admin_client.put(
            f"/v1/users/{user.id}", json={"email": "admin@example.com"}
        )
        assert renamed.status_code == 409

    async def test_admin_sets_a_password_and_old_tokens_stop(self, admin_client, user_client, user):
        response = await admin_client.put(
            f"/v1/users/{user.id}", json={"password": "set by the admin"}
        )
        assert response.status_code == 200
        assert (await user_client.get("/v1/users/me")).status_code == 401

    async def test_list_pages_through_every_user_once(self, admin_client, factory, admin):
        for _ in range(11):
            await factory.user()
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
            response = await admin_client.get("/v1/users/", params=params)
            assert response.status_code == 200
            body = response.json()
            seen += [u["id"] for u in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert len(seen) == len(set(seen)) == 12
        assert seen == sorted(seen)

    async def test_list_filters(self, admin_client, factory, admin):
        await factory.user(email="quiet@example.com", full_name="Quinn", is_active=False)
        await factory.user(email="boss@example.com", full_name="Bo 100%_", role="admin")
        by_role = await admin_client.get("/v1/users/", params={"role": "admin"})
        assert {u["email"] for u in by_role.json()["items"]} == {
            "admin@example.com", "boss@example.com"
        }  # fmt: skip
        inactive = await admin_client.get("/v1/users/", params={"is_active": "false"})
        assert [u["email"] for u in inactive.json()["items"]] == ["quiet@example.com"]
        search = await admin_client.get("/v1/users/", params={"q": "QUI"})
        assert [u["email"] for u in search.json()["items"]] == ["quiet@example.com"]
        # LIKE wildcards in the query are matched literally.
        literal = await admin_client.get("/v1/users/", params={"q": "%_"})
        assert [u["email"] for u in literal.json()["items"]] == ["boss@example.com"]

    @pytest.mark.parametrize("cursor", ["garbage", "eyJpZCI6ICJ4In0", "W10", "e30"])
    async def test_bad_cursor_is_422(self, admin_client, cursor):
        response = await admin_client.get("/v1/users/", params={"cursor": cursor})
        assert response.status_code == 422
        assert "cursor" in response.json()["detail"]


class TestLastAdmin:
    @pytest.mark.parametrize(
        ("method", "body"),
        [("PUT", {"role": "user"}), ("PUT", {"is_active": False}), ("DELETE", None)],
        ids=["demote", "deactivate", "delete"],
    )
    async def test_last_active_admin_cannot_be_lost(self, admin_client, admin, method, body):
        response = await admin_client.request(method, f"/v1/users/{admin.id}", json=body)
        assert response.status_code == 409
        assert "last active admin" in response.json()["detail"]
        me = await admin_client.get("/v1/users/me")
        assert me.status_code == 200
        assert me.json()["role"] == "admin" and me.json()["is_active"] is True

    async def test_an_inactive_admin_does_not_count(self, admin_client, admin, factory):
        await factory.user(role="admin", is_active=False)
        response = await admin_client.put(f"/v1/users/{admin.id}", json={"role": "user"})
        assert response.status_code == 409

    async def test_with_a_second_admin_the_first_may_step_down(
        self, harness, admin_client, admin, factory
    ):
        other = await factory.user(role="admin")
        response = await admin_client.put(f"/v1/users/{admin.id}", json={"role": "user"})
        assert response.status_code == 200
        assert (await admin_client.get("/v1/users/")).status_code == 403
        # Now the other admin is the last one and cannot step down in turn.
        async with harness.make_client(factory.token(other)) as other_client:
            again = await other_client.put(f"/v1/users/{other.id}", json={"role": "user"})
        assert again.status_code == 409


async def test_password_in_an_update_is_hashed(admin_client, user, factory):
    await admin_client.put(f"/v1/users/{user.id}", json={"password": "set by the admin"})
    stored = await factory.reload_user(user.id)
    assert stored.hashed_password.startswith("$argon2")
    assert stored.hashed_password != DEFAULT_PASSWORD


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(harness, admin, factory):
    import asyncio

    other = await factory.user(role="admin")
    async with (
        harness.make_client(factory.token(admin)) as first,
        harness.make_client(factory.token(other)) as second,
    ):
        responses = await asyncio.gather(
            first.put(f"/v1/users/{other.id}", json={"role": "user"}),
            second.put(f"/v1/users/{admin.id}", json={"role": "user"}),
        )
    # The loser either sees the winner's change before it is authorised (403) or after (409).
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200 and codes[1] in (403, 409)
    roles = {(await factory.reload_user(u.id)).role for u in (admin, other)}
    assert roles == {"admin", "user"}


async def test_simultaneous_first_signups_make_exactly_one_admin(harness):
    import asyncio

    async with harness.make_client() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/auth/signup",
                    json={
                        "email": f"u{i}@example.com",
                        "password": "long enough",
                        "full_name": "U",
                    },
                )
                for i in range(5)
            )
        )
    assert [r.status_code for r in responses] == [201] * 5
    assert sorted(r.json()["role"] for r in responses) == ["admin"] + ["user"] * 4
