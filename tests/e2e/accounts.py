"""Accounts: sign-up, login and tokens, users and their own profile, password recovery by mail."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.base import (
    USER_FIELDS,
    WalkBase,
    new_password,
    plain_text,
)
from tests.e2e.checks import (
    API_KEYS,
    AUTH,
    EXTERNAL,
    TEAMS,
    USERS,
    Skipped,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
    need,
)


class Accounts(WalkBase):
    def auth(self) -> None:
        ada, bob = self.ada, self.bob
        with self.check("POST /v1/auth/signup: the first account becomes admin", AUTH):
            signup = {"email": ada.email, "password": ada.password, "full_name": ada.full_name}
            user = self.api.post("/v1/auth/signup", json=signup, expect=201)
            ada.id = user["id"]
            expect(set(user) >= USER_FIELDS, f"user fields missing: {USER_FIELDS - set(user)}")
            expect(not {"password", "hashed_password"} & set(user), "the answer has a password")
            expected: dict[str, Any] = {
                "email": ada.email.lower(),
                "full_name": ada.full_name,
                "is_active": True,
            }
            expect_fields(user, expected, "user (email stored lower-case)")
            if user["role"] != "admin" and self.local is None and self.admin_login is not None:
                ada.email, ada.password = self.admin_login
                ada.id = None
                raise Skipped(f"{EXTERNAL}: the database is not empty; acting as --admin-email")
            expect_eq(user["role"], "admin", "role of the first account")
        with self.check("POST /v1/auth/signup: later accounts are plain users", AUTH):
            signup = {"email": bob.email, "password": bob.password, "full_name": bob.full_name}
            user = self.api.post("/v1/auth/signup", json=signup, expect=201)
            bob.id = user["id"]
            expect_fields(user, {"role": "user", "email": bob.email}, "user")
        with self.check("POST /v1/auth/signup: a taken email (any case) is 409", AUTH):
            taken = {"email": bob.email.upper(), "password": new_password(), "full_name": "Imp"}
            expect_detail(self.api.post("/v1/auth/signup", json=taken, expect=409), "")
        with self.check("POST /v1/auth/signup: a short password is 422", AUTH):
            short = {
                "email": f"short.{self.run}@example.com",
                "password": "short",
                "full_name": "S",
            }
            self.api.post("/v1/auth/signup", json=short, expect=422)
        with self.check("POST /v1/auth/login/access-token: a bearer token", AUTH):
            form = {"username": ada.email, "password": ada.password}
            token = self.api.post("/v1/auth/login/access-token", data=form)
            expect_eq(token.get("token_type"), "bearer", "token_type")
            expect(isinstance(token.get("access_token"), str), "no access_token")
            if self.local is not None:
                expect_eq(token.get("expires_in"), 3600, "expires_in (60 minutes by default)")
            expect(token.get("expires_in", 0) > 0, "expires_in")
            ada.token = token["access_token"]
            bob.token = self.login(bob)
        with self.check("POST /v1/auth/login/access-token: a wrong password is 401", AUTH):
            form = {"username": ada.email, "password": "not-the-password"}
            answer = self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            expect_detail(answer, "Incorrect email or password")
        with self.check("POST /v1/auth/login/test-token: the token's user", AUTH):
            user = self.api.post("/v1/auth/login/test-token", token=ada.bearer)
            if ada.id is None:  # acting as --admin-email: the account is theirs
                ada.id, ada.full_name = user["id"], user["full_name"]
            expect_fields(user, {"id": ada.uid, "role": "admin", "full_name": ada.full_name}, "ada")
            user = self.api.post("/v1/auth/login/test-token", token=bob.bearer)
            expect_fields(user, {"id": bob.uid, "role": "user", "email": bob.email}, "bob")
        with self.check("POST /v1/auth/login/test-token: no token or a forged one is 401", AUTH):
            self.api.post("/v1/auth/login/test-token", expect=401)
            forged = bob.bearer[:-4] + ("AAAA" if not bob.bearer.endswith("AAAA") else "BBBB")
            self.api.post("/v1/auth/login/test-token", token=forged, expect=401)
        with self.check("POST /v1/auth/password-recovery/{email}: one answer for anyone", AUTH):
            known = self.api.post(f"/v1/auth/password-recovery/{bob.email}")
            unknown = self.api.post(f"/v1/auth/password-recovery/nobody.{self.run}@example.com")
            expect(isinstance(known.get("message"), str) and known["message"], "no message")
            expect_eq(unknown, known, "the answer for an unknown email")
        with self.check("POST /v1/auth/reset-password/: a bad token is 400", AUTH):
            reset = {"token": "not-a-real-token", "new_password": new_password()}
            answer = self.api.post("/v1/auth/reset-password/", json=reset, expect=400)
            expect_detail(answer, "Invalid or expired password reset token")

    def users(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run
        with self.check("GET /v1/users/me: your own account", USERS):
            me = self.api.get("/v1/users/me", token=bob.bearer)
            expect_fields(me, {"id": bob.uid, "email": bob.email, "role": "user"}, "me")
        with self.check("PUT /v1/users/me: only the given fields change", USERS):
            change: dict[str, Any] = {
                "full_name": "Bob Builder",
                "phone": "+4915112345678",
                "timezone": "Asia/Tokyo",
            }
            me = self.api.put("/v1/users/me", token=bob.bearer, json=change)
            expect_fields(me, {**change, "email": bob.email, "role": "user"}, "me")
            bob.full_name = change["full_name"]
        with self.check("PUT /v1/users/me: a new email without current_password is 403", USERS):
            change = {"email": f"bobby.{run}@example.com"}
            self.api.put("/v1/users/me", token=bob.bearer, json=change, expect=403)
            expect_eq(self.api.get("/v1/users/me", token=bob.bearer)["email"], bob.email, "email")
        with self.check("PUT /v1/users/me: a new email with current_password", USERS):
            change = {"email": f"Bobby.{run}@example.com", "current_password": bob.password}
            me = self.api.put("/v1/users/me", token=bob.bearer, json=change)
            expect_eq(me["email"], f"bobby.{run}@example.com", "email (lower-case)")
            bob.email = me["email"]
        with self.check("POST /v1/users/me/password: a wrong current password is 401", USERS):
            change = {"current_password": "wrong-password", "new_password": new_password()}
            self.api.post("/v1/users/me/password", token=bob.bearer, json=change, expect=401)
        with self.check("POST /v1/users/me/password: old tokens stop, the new one works", USERS):
            old_token, password = bob.bearer, new_password()
            change = {"current_password": bob.password, "new_password": password}
            me = self.api.post("/v1/users/me/password", token=old_token, json=change)
            expect_eq(me["id"], bob.uid, "id")
            self.api.get("/v1/users/me", token=old_token, expect=401)
            bob.password, bob.token = password, self.login(bob, password)
            expect_eq(self.api.get("/v1/users/me", token=bob.token)["id"], bob.uid, "me")
        with self.check("admin routes refuse a plain user (403)", USERS):
            self.api.get("/v1/users/", token=bob.bearer, expect=403)
            new: dict[str, Any] = {
                "email": f"x.{run}@example.com",
                "password": new_password(),
                "full_name": "X",
            }
            self.api.post("/v1/users/", token=bob.bearer, json=new, expect=403)
            self.api.get(f"/v1/users/{ada.uid}", token=bob.bearer, expect=403)
            self.api.delete(f"/v1/users/{ada.uid}", token=bob.bearer, expect=403)
        people = [
            (carol, {"phone": "+15555550123", "timezone": "Europe/Berlin"}),
            (dave, {"timezone": "America/New_York"}),
        ]
        for account, extra in people:
            with self.check(f"POST /v1/users/: an admin creates {account.key}", USERS):
                new = {"email": account.email, "password": account.password, "role": "user"}
                new |= {"full_name": account.full_name, **extra}
                user = self.api.post("/v1/users/", token=ada.bearer, json=new, expect=201)
                account.id = user["id"]
                expected: dict[str, Any] = {k: v for k, v in new.items() if k != "password"}
                expect_fields(user, {**expected, "is_active": True}, account.key)
                account.token = self.login(account)
        with self.check("POST /v1/users/: a taken email is 409", USERS):
            new = {"email": carol.email, "password": new_password(), "full_name": "Carol 2"}
            self.api.post("/v1/users/", token=ada.bearer, json=new, expect=409)
        with self.check("GET /v1/users/: search, role filter and cursor paging", USERS):
            found = self.page("/v1/users/", ada.bearer, q=f"carol.{run}")
            expect_eq([u["id"] for u in found], [carol.uid], "users matching q")
            admins = {u["id"] for u in self.page("/v1/users/", ada.bearer, role="admin")}
            expect(ada.uid in admins and bob.uid not in admins, f"role=admin gave {admins}")
            first = self.api.get("/v1/users/", token=ada.bearer, params={"limit": 1})
            expect_eq(len(first["items"]), 1, "items with limit=1")
            cursor = need(first.get("next_cursor"), "a next_cursor with limit=1")
            params = {"limit": 1, "cursor": cursor}
            second = self.api.get("/v1/users/", token=ada.bearer, params=params)["items"]
            expect(second and second[0]["id"] != first["items"][0]["id"], "page 2 repeats page 1")
        with self.check("GET /v1/users/{id}: one user; an unknown id is 404", USERS):
            user = self.api.get(f"/v1/users/{carol.uid}", token=ada.bearer)
            expect_fields(user, {"id": carol.uid, "email": carol.email}, "user")
            self.api.get("/v1/users/999999999", token=ada.bearer, expect=404)
        with self.check("PUT /v1/users/{id}: an admin changes a user", USERS):
            carol.full_name = "Carol On-Call"
            change = {"full_name": carol.full_name}
            user = self.api.put(f"/v1/users/{carol.uid}", token=ada.bearer, json=change)
            expect_fields(user, {"full_name": carol.full_name, "email": carol.email}, "user")
        with self.check("PUT /v1/users/{id}: demoting the last admin is 409", USERS):
            active = self.page("/v1/users/", ada.bearer, role="admin", is_active="true")
            if [u["id"] for u in active] != [ada.uid]:
                # Never risk demoting an admin of someone else's server.
                raise Skipped(f"{EXTERNAL}: {len(active)} active admins, not only ours")
            demote = {"role": "user"}
            answer = self.api.put(f"/v1/users/{ada.uid}", token=ada.bearer, json=demote, expect=409)
            expect_detail(answer, "admin")
            expect_eq(self.api.get("/v1/users/me", token=ada.bearer)["role"], "admin", "role")

    def api_keys(self) -> None:
        bob = self.bob
        made: dict[str, Any] | None = None
        with self.check("POST /v1/api-keys: a personal key, shown once", API_KEYS):
            body = {"name": f"e2e {self.run}", "role": "user"}
            made = self.api.post("/v1/api-keys", token=bob.bearer, json=body, expect=201)
            expect(made["key"].startswith(made["prefix"] + "_"), "the key starts with its prefix")
            listed = self.api.get("/v1/api-keys", token=bob.bearer)["items"]
            expect(made["id"] in [k["id"] for k in listed], "the key is listed")
            expect("key" not in self.api.get(f"/v1/api-keys/{made['id']}", token=bob.bearer),
                   "the key is never shown again")  # fmt: skip
        with self.check("API keys: a key works as a bearer token, not beyond its owner", API_KEYS):
            key = need(made, "the key made above")
            me = self.api.get("/v1/users/me", token=key["key"])
            expect_eq(me["id"], bob.id, "the key's user")
            self.api.post("/v1/api-keys", token=key["key"], json={"name": "x", "role": "user"},
                          expect=403)  # fmt: skip
            admin_key = {"name": "x", "role": "admin"}
            self.api.post("/v1/api-keys", token=bob.bearer, json=admin_key, expect=403)
        with self.check("DELETE /v1/api-keys/{id}: revoked at once", API_KEYS):
            key = need(made, "the key made above")
            self.api.delete(f"/v1/api-keys/{key['id']}", token=bob.bearer)
            self.api.get("/v1/users/me", token=key["key"], expect=401)
            self.api.delete(f"/v1/api-keys/{key['id']}", token=bob.bearer, expect=409)

    def teams(self) -> None:
        ada, bob, carol = self.ada, self.bob, self.carol
        team: dict[str, Any] | None = None
        with self.check("POST /v1/teams/: an admin makes a team; names are unique", TEAMS):
            body = {"name": f"e2e team {self.run}", "description": "made by the e2e run"}
            team = self.api.post("/v1/teams/", token=ada.bearer, json=body, expect=201)
            expect_fields(team, {"name": body["name"], "is_private": False}, "team")
            self.api.post("/v1/teams/", token=ada.bearer, json=body, expect=409)
            self.api.post("/v1/teams/", token=bob.bearer, json={"name": "x"}, expect=403)
        with self.check("team members: add, change a role, keep a manager", TEAMS):
            t = need(team, "the team made above")
            members = f"/v1/teams/{t['id']}/members"
            self.api.post(members, token=ada.bearer, json={"user_id": bob.uid, "role": "manager"},
                          expect=201)  # fmt: skip
            self.api.post(members, token=bob.bearer, json={"email": carol.email}, expect=201)
            self.api.post(members, token=bob.bearer, json={"user_id": carol.uid}, expect=409)
            self.api.put(f"{members}/{carol.uid}", token=bob.bearer, json={"role": "observer"})
            self.api.delete(f"{members}/{bob.uid}", token=bob.bearer, expect=409)  # the last
            listed = self.api.get(members, token=carol.bearer)
            roles = {m["user_id"]: m["role"] for m in listed}
            expect_eq(roles, {bob.uid: "manager", carol.uid: "observer"}, "members")
            mine = self.api.get("/v1/teams/", token=carol.bearer, params={"mine": "true"})
            expect_eq([x["id"] for x in mine["items"]], [t["id"]], "carol's teams")
        with self.check("teams: a manager runs the team's services, an observer reads", TEAMS):
            t = need(team, "the team made above")
            svc = {"name": f"e2e team service {self.run}", "team_id": t["id"]}
            service = self.api.post("/v1/services/", token=bob.bearer, json=svc, expect=201)
            self.api.put(f"/v1/services/{service['id']}", token=carol.bearer,
                         json={"description": "x"}, expect=403)  # fmt: skip
            self.api.put(f"/v1/teams/{t['id']}", token=bob.bearer, json={"is_private": True})
            seen = self.api.get(f"/v1/services/{service['id']}", token=carol.bearer)
            expect_eq(seen["team_id"], t["id"], "the service's team")
            log = self.api.get("/v1/audit", token=bob.bearer, params={"team_id": t["id"]})
            expect(any(e["object_type"] == "service" for e in log["items"]), "the team's log")
            self.api.delete(f"/v1/teams/{t['id']}", token=ada.bearer, expect=409)  # owns it
            self.api.delete(f"/v1/services/{service['id']}", token=bob.bearer)
            self.api.delete(f"/v1/teams/{t['id']}/members/{carol.uid}", token=bob.bearer,
                            expect=204)  # fmt: skip
            self.api.get(f"/v1/teams/{t['id']}", token=carol.bearer, expect=404)  # private
            self.api.delete(f"/v1/teams/{t['id']}", token=ada.bearer)

    def password_recovery(self) -> None:
        dave = self.dave
        with self.check("password recovery: the mailed token resets the password", AUTH):
            local = self.needs_local()
            old_token = dave.bearer
            answer = self.api.post(f"/v1/auth/password-recovery/{dave.email}")
            expect(answer.get("message"), f"no message: {answer}")
            mail = local.inbox.wait_for(
                f"password recovery for {dave.email}",
                lambda m, rcpt: dave.email in rcpt and "recovery" in str(m["Subject"]).lower(),
            )
            expect_eq(str(mail["From"]), "incidents@localhost", "From (SMTP_FROM)")
            content = plain_text(mail)
            match = re.search(r'"token": "([^"]+)"', content)
            token = need(match.group(1) if match else None, "a token in the recovery mail")
            expect(f"{self.api.base_url}/v1/auth/reset-password/" in content, "no reset link")
            password = new_password()
            reset = {"token": token, "new_password": password}
            answer = self.api.post("/v1/auth/reset-password/", json=reset)
            expect_eq(answer, {"message": "Password updated"}, "answer")
            again = {"token": token, "new_password": new_password()}
            self.api.post("/v1/auth/reset-password/", json=again, expect=400)
            form = {"username": dave.email, "password": dave.password}
            self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            self.api.get("/v1/users/me", token=old_token, expect=401)
            dave.password = password
            dave.token = self.login(dave)
