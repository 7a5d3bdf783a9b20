"""The one HTTP client every request of the run goes through: it records each answered request
for the coverage check, and every secret sent or received for the log check."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from tests.e2e.checks import CheckFailed

if TYPE_CHECKING:
    from tests.e2e.coverage import Coverage

REQUEST_TIMEOUT = 15.0
# Request and answer fields whose values are secrets: none may appear in the server's log.
SECRET_FIELDS = {"password", "new_password", "current_password", "access_token", "key",
                 "secret", "token", "routing_key"}  # fmt: skip


def snippet(response: httpx.Response, limit: int = 300) -> str:
    text = response.text
    return text if len(text) <= limit else text[:limit] + "…"


def body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        where = f"{response.request.method} {response.request.url.path}"
        raise CheckFailed(f"{where}: not JSON: {snippet(response)}") from None


class Api:
    """The one client every request goes through; each response is recorded for coverage.

    `request` answers the response; `get`, `post`, `put` and `delete` check the status (200
    unless `expect` says otherwise) and answer the decoded JSON body.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.coverage: Coverage | None = None
        self.secrets: set[str] = set()
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
            follow_redirects=False,
            event_hooks={"response": [self._observe]},
        )

    def _observe(self, response: httpx.Response) -> None:
        if self.coverage is not None:
            self.coverage.record(response.request.method, response.request.url.path)
        self._remember_secrets(response)

    def _remember_secrets(self, response: httpx.Response) -> None:
        """Every secret this run sent or was given: bearer tokens, passwords, keys, secrets,
        recovery and calendar tokens (in bodies, forms and URLs)."""
        response.read()  # a response hook runs before the body is read
        request = response.request
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            self.secrets.add(credentials)
        for name, value in request.url.params.multi_items():
            if name in SECRET_FIELDS:
                self.secrets.add(value)
        body = request.content or b""
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = httpx.QueryParams(body.decode(errors="replace"))
            self.secrets.update(v for k, v in form.multi_items() if k in SECRET_FIELDS)
        for content in (body, response.content):
            with contextlib.suppress(ValueError):
                self._secrets_in(json.loads(content))

    def _secrets_in(self, value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name in SECRET_FIELDS and isinstance(item, str):
                    self.secrets.add(item)
                elif name == "url" and isinstance(item, str) and "token=" in item:
                    self.secrets.update(httpx.URL(item).params.get_list("token"))
                else:
                    self._secrets_in(item)
        elif isinstance(value, list):
            for item in value:
                self._secrets_in(item)

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        expect: int | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, path, headers=sent, **kwargs)
        if expect is not None and response.status_code != expect:
            raise CheckFailed(
                f"{method} {path} answered {response.status_code}, expected {expect}: "
                f"{snippet(response)}"
            )
        return response

    def _json(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.request(method, path, expect=expect, **kwargs)
        return body(response) if response.content else None

    def get(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("GET", path, expect, **kwargs)

    def post(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("POST", path, expect, **kwargs)

    def put(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("PUT", path, expect, **kwargs)

    def patch(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("PATCH", path, expect, **kwargs)

    def delete(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("DELETE", path, expect, **kwargs)
