"""Load for the fault tests: clients bounded in time, and every answer they got."""

from __future__ import annotations

import time
from typing import Any

import httpx


class Answers:
    """Every answer the load got: (what was asked, status or the transport error's name)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int | str, httpx.Response | None]] = []
        self.slowest = 0.0  # seconds: the longest any request took to be answered (or fail)

    async def call(
        self, client: httpx.AsyncClient, what: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, bounded by the client timeout; a transport error is recorded, not raised."""
        started = time.monotonic()
        try:
            answer = await client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            self.log.append((what, f"timeout ({type(exc).__name__})", None))
            return None
        except httpx.TransportError as exc:
            self.log.append((what, type(exc).__name__, None))
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        self.log.append((what, answer.status_code, answer))
        return answer

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for _, status, _ in self.log:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def unexpected(self, allowed: set[int | str]) -> list[str]:
        return [
            f"{what}: {status} {answer.text[:200] if answer is not None else ''}"
            for what, status, answer in self.log
            if status not in allowed
        ]


def load_client(
    base_url: str, *, token: str | None = None, seconds: float = 15
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url, timeout=seconds, headers=headers, trust_env=False,
        limits=httpx.Limits(max_connections=20),
    )  # fmt: skip
