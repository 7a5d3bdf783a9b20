"""Waiting with a deadline: every wait names what it waits for and fails when its time is up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """What a wait waited for did not happen in time."""


def poll(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    last: Callable[[], object] | None = None,
) -> T:
    """Call `probe` until it answers something other than None, for at most `timeout` seconds
    (20 s: the longest the end-to-end run waits for the worker, a mail or a delivery); then
    fail naming `what` (and what `last` says was seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            seen = f"; last seen: {last()!r}"[:600] if last is not None else ""
            raise TimedOut(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)


async def wait_until(
    what: str, probe: Callable[[], Awaitable[T | None]], *, seconds: float, every: float = 0.2
) -> T:
    """`poll` for coroutines: await `probe` until it answers something other than None."""
    deadline = time.monotonic() + seconds
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(every)
