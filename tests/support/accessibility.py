"""What the console's accessibility checks read of a page (no browser needed): every control
labelled, errors tied to their fields, ids unique, buttons named, one h1 first and headings in
order. Used by tests/ui/test_access.py (every page) and the pages' own tests."""

from __future__ import annotations

from html.parser import HTMLParser
from itertools import pairwise


class _Structure(HTMLParser):
    """What the checks below read of a page: its controls, labels, headings and ids."""

    CONTROLS = ("input", "select", "textarea")

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []  # with "wrapped": inside a <label>
        self.headings: list[int] = []
        self.roles: dict[str, str | None] = {}  # id → role
        self.buttons: list[str] = []
        self._open_labels = 0
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
            self.roles[str(found["id"])] = found.get("role")
        if tag == "label":
            self._open_labels += 1
            if found.get("for"):
                self.label_for.add(str(found["for"]))
        elif tag in self.CONTROLS and found.get("type") not in ("hidden", "submit"):
            self.controls.append(found | {"tag": tag, "wrapped": "1" if self._open_labels else ""})
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.headings.append(int(tag[1]))
        elif tag == "button":
            self._button = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._open_labels -= 1
        elif tag == "button" and self._button is not None:
            self.buttons.append(" ".join("".join(self._button).split()))
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.append(data)


def accessibility_problems(page: str) -> list[str]:
    found = _Structure()
    found.feed(page)
    problems = [f"id {i!r} used twice" for i in set(found.ids) if found.ids.count(i) > 1]
    for control in found.controls:
        name = control.get("name") or control.get("id")
        labelled = (
            control["wrapped"]
            or control.get("id") in found.label_for
            or control.get("aria-label")
            or control.get("aria-labelledby")
        )
        if not labelled:
            problems.append(f"{control['tag']} {name!r} has no label")
        described = (control.get("aria-describedby") or "").split()
        missing = [i for i in described if i not in found.ids]
        problems += [f"{name!r} is described by missing #{i}" for i in missing]
        if control.get("aria-invalid") == "true" and not any(
            found.roles.get(i) == "alert" for i in described
        ):
            problems.append(f"{name!r} is invalid with no error tied to it")
    problems += ["a button without a name" for b in found.buttons if not b]
    if found.headings[:1] != [1] or found.headings.count(1) != 1:
        problems.append(f"one h1 first, not {found.headings}")
    for before, heading in pairwise(found.headings):
        if heading > before + 1:
            problems.append(f"h{heading} right after h{before}")
    return problems
