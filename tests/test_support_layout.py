"""Where the tests' support code lives: tests/support, one implementation of each helper.

- No module under tests/, scripts/ or bench/ (nor run_e2e_tests.py) imports from a test module
  (test_*.py) or from a conftest.py: helpers are imported from tests/support, and fixtures reach
  tests through pytest (a conftest.py, or a tests/support module registered as a plugin).
- No module outside tests/support defines a function or class of the name of one that
  tests/support defines (a second free_port, SMTP inbox, receiver, serve, …), nor the constants
  that must have one value (TEST_SECRET, CLI).

Read from the source (ast), so a module is judged without being imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"
SHARED_CONSTANTS = {"TEST_SECRET", "CLI"}
# Helpers of the same name outside tests/support that are not the same helper, each with why.
SAME_NAME_ALLOWED = {
    # polls the database's counts of escalation rows, not a probe of its caller's (waiting.py)
    ("tests/escalation/test_workers.py", "wait_until"),
    # Playwright's page through the login form, not an httpx client (console.py)
    ("tests/ui/test_browser.py", "sign_in"),
    # the module's two live servers and their data, not the analytics data set (analytics.py)
    ("tests/ui/test_browser.py", "world"),
    # an integration on a service given by id, answering all of it, not (key, service id)
    ("tests/ui/test_directory.py", "make_integration"),
}


def python_files() -> Iterator[Path]:
    yield ROOT / "run_e2e_tests.py"
    for folder in ("tests", "scripts", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import, at any depth (also inside functions)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:  # `from tests.alerts import test_alerts`
                yield node.lineno, f"{node.module}.{alias.name}"


def forbidden_imports(source: str, where: str) -> list[str]:
    found = []
    for line, module in imported_modules(ast.parse(source)):
        last = module.rsplit(".", 1)[-1]
        if module.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
            found.append(f"{where}:{line} imports {module}")
    return found


def top_level_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(functions and classes, assigned names) defined at a module's top level."""
    defined, assigned = set(), set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            assigned |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            assigned.add(node.target.id)
    return defined, assigned


def shared_helpers() -> set[str]:
    """The public functions and classes of tests/support."""
    names: set[str] = set()
    for path in SUPPORT.glob("*.py"):
        defined, _ = top_level_names(ast.parse(path.read_text()))
        names |= {name for name in defined if not name.startswith("_")}
    return names


def second_definitions(source: str, where: str, helpers: set[str]) -> list[str]:
    defined, assigned = top_level_names(ast.parse(source))
    twice = (defined & helpers) | (assigned & SHARED_CONSTANTS)
    return [
        f"{where} defines {name}, which tests/support defines"
        for name in sorted(twice)
        if (where, name) not in SAME_NAME_ALLOWED
    ]


def test_no_module_imports_a_test_module_or_a_conftest():
    found = [
        problem
        for path in python_files()
        for problem in forbidden_imports(path.read_text(), relative(path))
    ]
    assert not found, "import these from tests/support instead:\n" + "\n".join(found)


def test_each_shared_helper_is_defined_once_in_tests_support():
    helpers = shared_helpers()
    assert {"free_port", "SMTPInbox", "HTTPReceiver", "make_settings", "serve"} <= helpers
    found = [
        problem
        for path in python_files()
        if SUPPORT not in path.parents
        for problem in second_definitions(path.read_text(), relative(path), helpers)
    ]
    assert not found, "use the one in tests/support instead:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for():
    """Each rule, on a planted violation (so that the tests above cannot pass vacuously)."""
    assert forbidden_imports("from tests.alerts.test_alerts import make_integration\n", "x")
    assert forbidden_imports("def f():\n    from tests.test_processes import serve\n", "x")
    assert forbidden_imports("from tests.alerts import test_alerts\n", "x")
    assert forbidden_imports("from tests.conftest import make_settings\n", "x")
    assert forbidden_imports("import tests.ui.conftest\n", "x")
    assert not forbidden_imports("from tests.support.data import make_integration\n", "x")
    helpers = shared_helpers()
    assert second_definitions("def free_port():\n    return 0\n", "x", helpers)
    assert second_definitions("class HTTPReceiver:\n    pass\n", "x", helpers)
    assert second_definitions('TEST_SECRET = "another"\n', "x", helpers)
    assert not second_definitions("def helper_of_my_own():\n    pass\n", "x", helpers)
