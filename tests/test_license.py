"""The LICENSE file is the licence pyproject.toml declares (its SPDX `license`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# For each licence the project may declare: the text's first line and a sentence only it has.
TEXTS = {
    "MIT": (
        "MIT License",
        "Permission is hereby granted, free of charge, to any person obtaining a copy\n"
        'of this software and associated documentation files (the "Software"), to deal\n'
        "in the Software without restriction",
    ),
}


def declared() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"])


def test_the_license_file_is_the_declared_licence():
    licence = declared()
    assert licence in TEXTS, f"pyproject.toml declares {licence!r}: add its text's marks to TEXTS"
    first_line, clause = TEXTS[licence]
    text = (ROOT / "LICENSE").read_text()
    assert text.splitlines()[0] == first_line, f"LICENSE is not the {licence} text"
    assert clause in text, f"LICENSE lacks the {licence} permission clause"


def test_the_license_names_its_holders():
    text = (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026 The incident-management contributors" in text
