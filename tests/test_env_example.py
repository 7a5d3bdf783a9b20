"""`.env.example` lists exactly the variables something of ours reads, both ways: every setting
(a field of Settings), every variable app/ reads from the environment itself (gunicorn's, the
metrics directory, the CLI's), and every ${VAR} compose.yaml fills in; and nothing else. A line
may be commented out (`# NAME=value`): it is listed, as an example left unset.

Read from the source (ast), so a new `os.environ.get("X")` in app/ fails here until .env.example
says what X is.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from app.core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
LISTED = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
COMPOSE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def listed(text: str) -> set[str]:
    return set(LISTED.findall(text))


def _is_environ(node: ast.expr) -> bool:
    """`os.environ` (or `environ` imported from os)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id == "environ"


def _name_read(call: ast.Call) -> ast.expr | None:
    """The name argument of `os.environ.get(name, …)` or `os.getenv(name, …)`."""
    func = call.func
    if not call.args or not isinstance(func, ast.Attribute):
        return None
    if func.attr == "get" and _is_environ(func.value):
        return call.args[0]
    if func.attr == "getenv":
        return call.args[0]
    return None


def read_in(tree: ast.Module) -> Iterator[str]:
    """The variables a module reads: `os.environ.get("X")`, `os.getenv("X")`,
    `os.environ["X"]` (read, not assigned), `envvar="X"` (typer), and the literal first argument
    of calls to a function of the module that reads its parameter of that name (`_number("X")`)."""
    readers: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            params = [a.arg for a in node.args.args]
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call):
                    name = _name_read(inner)
                    if isinstance(name, ast.Name) and params and name.id == params[0]:
                        readers.add(node.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name_read(node)
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                yield name.value
            func = node.func
            if isinstance(func, ast.Name) and func.id in readers and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield first.value
            for keyword in node.keywords:
                if keyword.arg == "envvar" and isinstance(keyword.value, ast.Constant):
                    yield str(keyword.value.value)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_environ(node.value)
            and isinstance(node.slice, ast.Constant)
        ):
            yield str(node.slice.value)


def read_by_the_code() -> dict[str, str]:
    """Each variable read, and where (the first place found)."""
    found: dict[str, str] = {}
    for field in Settings.model_fields:
        found.setdefault(field.upper(), "app/core/config.py (Settings)")
    for path in sorted((ROOT / "app").rglob("*.py")):
        for name in read_in(ast.parse(path.read_text())):
            found.setdefault(name, str(path.relative_to(ROOT)))
    for name in COMPOSE_VARIABLE.findall((ROOT / "compose.yaml").read_text()):
        found.setdefault(name, "compose.yaml")
    return found


def test_every_variable_the_code_reads_is_in_the_example():
    listed_names = listed((ROOT / ".env.example").read_text())
    read = read_by_the_code()
    missing = sorted(
        f"{name} (read in {where})" for name, where in read.items() if name not in listed_names
    )
    assert missing == [], f".env.example lacks {', '.join(missing)}: add each with a comment"


def test_every_variable_in_the_example_is_read_by_the_code():
    read = read_by_the_code()
    extra = sorted(listed((ROOT / ".env.example").read_text()) - set(read))
    assert extra == [], f".env.example lists {', '.join(extra)}, which nothing reads: remove them"


def test_every_listed_variable_has_a_comment_above_it():
    """A comment above each variable, or above the group it belongs to (no blank line between)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    bare = []
    for number, line in enumerate(lines):
        match = LISTED.match(line)
        if not match:
            continue
        above = number - 1
        while above >= 0 and LISTED.match(lines[above]):
            above -= 1
        if above < 0 or not lines[above].startswith("#"):
            bare.append(match.group(1))
    assert bare == [], f"no comment above {', '.join(bare)} in .env.example"


class TestTheCheckItself:
    """The reader sees each way of reading the environment, and the comparison names names."""

    def test_each_form_of_read_is_seen(self):
        source = """
import os
from os import environ
A = os.environ.get("ONE")
B = os.getenv("TWO", "x")
C = os.environ["THREE"]
os.environ["WRITTEN"] = "1"
os.environ.setdefault("DEFAULTED", "1")
D = environ.get("FOUR")
def _number(name, default):
    return int(os.environ.get(name, "").strip() or default)
E = _number("FIVE", 3)
def command(password: str = typer.Option(None, envvar="SIX")): ...
"""
        assert sorted(read_in(ast.parse(source))) == ["FIVE", "FOUR", "ONE", "SIX", "THREE", "TWO"]

    def test_commented_out_examples_count_as_listed(self):
        text = "# A comment with X=1 inside\nLIVE=1\n# EXAMPLE=2\n#   SPACED=3\n"
        assert listed(text) == {"LIVE", "EXAMPLE", "SPACED"}

    def test_the_real_tree_has_the_settings_and_the_other_reads(self):
        read = read_by_the_code()
        for name in ("DATABASE_URL", "UI_SESSION_HOURS", "GUNICORN_BIND", "WEB_CONCURRENCY"):
            assert name in read
        assert read["POSTGRES_PASSWORD"] == "compose.yaml"
        assert read["GUNICORN_TIMEOUT"] == "app/gunicorn_conf.py"  # through _number("…")
        assert "PYTHONUNBUFFERED" not in read  # app/cli.py sets it (setdefault), never reads it
