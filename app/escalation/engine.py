"""Pure escalation logic: which policy applies, and where a run goes next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from app.escalation.policy import Conditions, IncidentLike

P = TypeVar("P")


def choose(policies: Sequence[tuple[P, Conditions]], incident: IncidentLike) -> P | None:
    """The first policy whose conditions match; callers pass active policies, each with its
    conditions, ordered by (priority, id)."""
    return next((policy for policy, conditions in policies if conditions.matches(incident)), None)


def next_position(
    step: int, cycle: int, *, steps: int, repeat_count: int
) -> tuple[int, int] | None:
    """The (step, cycle) after this one, both counted from 1; None when the run is over.

    A policy runs its steps once, then `repeat_count` more times.
    """
    if step < steps:
        return step + 1, cycle
    if cycle <= repeat_count:
        return 1, cycle + 1
    return None
