"""A small API client for setting things up over HTTP, as an admin would."""

from __future__ import annotations

from typing import Any

import httpx

PASSWORD = "a long enough passphrase"  # of every account `Admin` makes, itself included


class Admin:
    """An admin's client for one API process: signs up (the first user is admin) and sets up."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=20, trust_env=False)
        self.token = ""

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = await self.client.request(method, path, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    async def sign_up(self, email: str = "admin@example.com") -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "full_name": "Admin"}
        user: dict[str, Any] = await self.call("POST", "/v1/auth/signup", 201, json=body)
        await self.log_in(email)
        return user

    async def log_in(self, email: str) -> None:
        """Sign in as an existing account whose password is PASSWORD (one made by `sign_up`, or
        by `incident-management create-admin`); later calls carry its bearer token."""
        token = await self.call(
            "POST", "/v1/auth/login/access-token", data={"username": email, "password": PASSWORD}
        )
        self.token = token["access_token"]
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    async def user(self, email: str) -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "full_name": email, "role": "user"}
        user: dict[str, Any] = await self.call("POST", "/v1/users/", 201, json=body)
        return user

    async def integration(self, service_id: int, kind: str = "generic") -> str:
        found = await self.call(
            "POST", f"/v1/services/{service_id}/integrations/", 201,
            json={"name": kind, "kind": kind},
        )  # fmt: skip
        key: str = found["key"]
        return key

    async def service(self, name: str, policy_id: int | None = None) -> dict[str, Any]:
        body = {"name": name, "escalation_policy_id": policy_id}
        service: dict[str, Any] = await self.call("POST", "/v1/services/", 201, json=body)
        return service

    async def policy(self, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        body = {"name": "fault", "priority": 1, "steps": steps} | fields
        policy: dict[str, Any] = await self.call("POST", "/v1/escalation/policies/", 201, json=body)
        return policy

    async def notification_rule(
        self, user_id: int, kind: str, address: str, delay_minutes: int = 0
    ) -> dict[str, Any]:
        """A contact method of the user (vouched for when it needs proof; reused when it exists)
        and a rule notifying by it after `delay_minutes`."""
        methods = f"/v1/users/{user_id}/contact-methods"
        found = [
            m
            for m in (await self.call("GET", methods))["items"]
            if (m["type"], m["address"]) == (kind, address)
        ]
        if found:
            method = found[0]
        else:
            method = await self.call("POST", methods, 201, json={"type": kind, "address": address})
        if not method["verified"]:
            await self.call("POST", f"{methods}/{method['id']}/verified")
        body = {"contact_method_id": method["id"], "delay_minutes": delay_minutes}
        rule: dict[str, Any] = await self.call(
            "POST", f"/v1/users/{user_id}/notification-rules", 201, json=body
        )
        return rule
