"""Checks: what a check may conclude (passed, failed, skipped, blocked), the expectations they
assert, and the runner that records each outcome and goes on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

# Check groups: the OpenAPI tags, plus the run's own set-up and the docs pages.
SETUP, DOCS, HEALTH, AUTH, USERS = "setup", "docs", "health", "auth", "users"
SERVICES, INTEGRATIONS, ALERTS, INCIDENTS = "services", "integrations", "alerts", "incidents"
ESCALATION, NOTIFICATIONS = "escalation", "notifications"
WEBHOOKS, SCHEDULES, LOGS = "webhooks", "schedules", "logs"
ANALYTICS = "analytics"
API_KEYS = "api-keys"
TEAMS = "teams"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
EXTERNAL = "skipped (external server)"

T = TypeVar("T")


class CheckFailed(Exception):
    """An expectation of a check did not hold."""


class Blocked(Exception):
    """A check cannot run because an earlier check it depends on failed."""


class Skipped(Exception):
    """A check does not apply to this run."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


_MISSING = object()


def expect_fields(actual: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    """Each key of `expected` has its value in `actual` (other keys are not compared)."""
    wrong = [
        f"{key} is {actual.get(key, '<missing>')!r}, expected {value!r}"
        for key, value in expected.items()
        if actual.get(key, _MISSING) != value
    ]
    if wrong:
        raise CheckFailed(f"{what}: " + "; ".join(wrong))


def expect_detail(answer: Mapping[str, Any], *words: str) -> None:
    """An error answer's `detail` says each of `words`."""
    detail = str(answer.get("detail"))
    missing = [w for w in words if w not in detail]
    expect(not missing, f"detail {detail!r} does not mention {missing}")


def need(value: T | None, what: str) -> T:
    """The value an earlier check produced, or Blocked naming what is missing."""
    if value is None:
        raise Blocked(f"needs {what}, which an earlier check did not provide")
    return value


@dataclass
class CheckResult:
    name: str
    group: str
    status: str
    error: str | None
    duration: float


class Runner:
    """Runs checks: `with runner.check(name, group): ...` records the outcome and goes on."""

    def __init__(self, *, verbose: bool) -> None:
        self.verbose = verbose
        self.results: list[CheckResult] = []

    @contextlib.contextmanager
    def check(self, name: str, group: str) -> Iterator[None]:
        started = time.perf_counter()
        status, error = PASSED, None
        try:
            yield
        except Skipped as exc:
            status, error = SKIPPED, str(exc)
        except Blocked as exc:
            status, error = FAILED, f"blocked: {exc}"
        except (CheckFailed, AssertionError) as exc:  # AssertionError: tests/support's waits
            status, error = FAILED, str(exc)
        except Exception as exc:  # an unexpected error fails the check, not the run
            status, error = FAILED, f"{type(exc).__name__}: {exc}"
        result = CheckResult(name, group, status, error, time.perf_counter() - started)
        self.results.append(result)
        if self.verbose or status == FAILED:
            label = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "SKIP"}[status]
            detail = f": {error}" if error else ""
            print(f"  {label}  [{group}] {name} ({result.duration:.2f} s){detail}", flush=True)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


# ---- coverage ------------------------------------------------------------------------------------
