"""CONTRIBUTING.md stays true to the tree: every `make` target it names is one of the Makefile's,
and every file or folder it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "CONTRIBUTING.md").read_text()


def test_every_make_target_named_is_in_the_makefile():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", TEXT))
    assert named, "CONTRIBUTING.md names no make target"
    assert named - targets == set(), f"not Makefile targets: {sorted(named - targets)}"


def test_every_path_named_exists():
    paths = {
        p.rstrip("/")
        for p in re.findall(r"`((?:app|tests|docs|scripts|bench|alembic)/[\w./-]*)`", TEXT)
        if "<" not in p
    }
    paths |= {p for p in re.findall(r"`([\w.-]+\.(?:py|md|toml|txt))`", TEXT) if "/" not in p}
    assert paths, "CONTRIBUTING.md names no path"
    missing = sorted(
        p
        for p in paths
        if not (ROOT / p).exists() and not (ROOT / "app/alerts/sources" / p).exists()
    )
    assert missing == [], f"CONTRIBUTING.md names paths that do not exist: {missing}"
