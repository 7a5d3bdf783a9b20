"""What a refused console form says: the API's validation and domain errors, as a line a person
can act on (the form is shown again with it and with what was typed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from app.core.errors import DomainError


def problems(exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """A validation error as one line: `step 2: delay (minutes): …`. `names` gives fields the
    words the form shows for them."""
    names = names or {}
    parts: list[str] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = list(error["loc"])
        words: list[str] = []
        while loc:
            item = loc.pop(0)
            if item == "steps" and loc and isinstance(loc[0], int):
                words.append(f"step {int(loc.pop(0)) + 1}")
            elif isinstance(item, int):
                continue
            else:
                words.append(names.get(str(item), str(item).replace("_", " ")))
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(": ".join([*words, message]) if words else message)
    return "; ".join(parts)


def refusal(exc: DomainError) -> str:
    return exc.detail if isinstance(exc.detail, str) else "That was refused"


def field_problems(exc: ValidationError) -> dict[str, str]:
    """A validation error by the form field it concerns (the first part of each location), to
    show each message beside its field; errors with no field go under ''."""
    found: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else ""
        found.setdefault(name, []).append(str(error["msg"]).removeprefix("Value error, "))
    return {name: "; ".join(messages) for name, messages in found.items()}


def field_refusal(exc: DomainError, fields: Iterable[str]) -> tuple[str, str]:
    """A domain error as (field, message): a detail such as `address: not a phone number…` names
    its field first (one of `fields`); any other detail goes under ''."""
    detail = refusal(exc)
    name, colon, rest = detail.partition(": ")
    if colon and name in set(fields):
        return name, rest
    return "", detail
