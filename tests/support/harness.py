"""The app in the test's process, as the `harness` fixture (tests/conftest.py) gives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.core.clock import FrozenClock
from app.core.config import Settings
from tests.factories import Factory


@dataclass
class Harness:
    """The running app and what tests need around it."""

    app: object
    settings: Settings
    clock: FrozenClock
    factory: Factory
    make_client: Callable[..., httpx.AsyncClient]

    async def run_jobs(self) -> dict[str, int]:
        """One pass of every worker job at the clock's current time."""
        result: dict[str, int] = await self.app.state.worker.run_once()  # type: ignore[attr-defined]
        return result
