"""Text that must stay on one line: names shown in calendars, headers and logs."""

from __future__ import annotations

import re

# Line breaks and other control characters (C0, DEL, C1, the Unicode line and paragraph
# separators): in a log line, an iCal property or a header, a CR/LF starts a forged line.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` on one line: control characters as Python escapes (`\\n`, `\\x1b`, `\\u2028`)."""
    if not CONTROL.search(text):
        return text
    return CONTROL.sub(
        lambda m: _ESCAPES.get(m[0]) or (
            f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}"
        ),
        text,
    )  # fmt: skip


def single_line(value: str) -> str:
    """A validator for names: refuses control characters (a pydantic ValueError: 422)."""
    found = CONTROL.search(value)
    if found:
        raise ValueError(
            f"must be one line without control characters (found {escape_controls(found[0])})"
        )
    return value


def flattened(text: str) -> str:
    """`text` with each control character as a space: for output that cannot escape them."""
    return CONTROL.sub(" ", text)
