"""The layers of app/ (docs/architecture.md), enforced on the source: core imports no domain, a
domain reads other domains' declarations only (never their services), flows sit above the domains,
and no module imports itself back through others.

The checker is run on the real tree, and on the tree with a back-edge planted, so that a rule
that stopped seeing anything would fail here too.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# What a domain may read of another domain: its declarations (tables, closed sets, API shapes,
# read-only lookups, the timeline's entry types and builders, what a policy says), and the alert
# formats (what a source sends, and the registry of sources). Never a service.
DECLARATIONS = {"models", "enums", "schemas", "queries", "timeline", "policy"}
SHARED = ("app.alerts.alert", "app.alerts.source", "app.alerts.sources")
# The callers: they may use flows and any domain's services.
ENTRY_MODULES = {"router", "dependencies", "signin"}
ENTRY_PACKAGES = {"ui", "worker"}
ENTRY_TOP = {
    "main",
    "api",
    "cli",
    "openapi",
    "migrations",
    "gunicorn_conf",
    "healthcheck",
    "models",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _parsed() -> tuple[tuple[str, ast.Module], ...]:
    return tuple((module_name(path), ast.parse(path.read_text())) for path in APP.rglob("*.py"))


def modules() -> dict[str, ast.Module]:
    return dict(sorted(_parsed()))


def imports(name: str, tree: ast.Module, known: set[str]) -> Iterator[tuple[str, str]]:
    """(imported module, imported name or "") for every import of an app module, anywhere in the
    file (an import inside a function is a dependency all the same)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("app"):
                    yield alias.name, ""
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("app"):
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:
                    yield submodule, ""
                else:
                    yield node.module, alias.name


def layer(name: str) -> str:
    parts = name.split(".")
    if name == "app" or parts[1] == "core":
        return "core"
    if parts[1] == "flows":
        return "flows"
    if len(parts) == 2 and parts[1] in ENTRY_TOP:
        return "entry"
    if parts[1] in ENTRY_PACKAGES or (len(parts) >= 3 and parts[2] in ENTRY_MODULES):
        return "entry"
    return "domain"


def domain(name: str) -> str:
    return name.split(".")[1]


def declaration(name: str) -> bool:
    parts = name.split(".")
    return (len(parts) >= 3 and parts[2] in DECLARATIONS) or name.startswith(SHARED)


def problems(tree: dict[str, ast.Module]) -> list[str]:
    known = set(tree)
    found: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in tree}
    for name, module in tree.items():
        for target, imported in imports(name, module, known):
            if target not in known:
                found.append(f"{name} imports {target}, which does not exist")
                continue
            graph[name].add(target)
            if imported.startswith("_") and not imported.startswith("__") and target != name:
                found.append(f"{name} imports the private {target}.{imported}")
            here, there = layer(name), layer(target)
            if here == "core" and there != "core":
                found.append(f"core module {name} imports {target}")
            elif here == "domain" and there in ("flows", "entry"):
                found.append(f"domain module {name} imports the {there} module {target}")
            elif here == "domain" and there == "domain" and domain(name) != domain(target):
                if not declaration(target):
                    found.append(f"domain module {name} imports another domain's {target}")
            elif here == "flows" and there == "entry":
                found.append(f"flow {name} imports the entry module {target}")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_tree_keeps_its_layers():
    assert problems(modules()) == []


def plant(tree: dict[str, ast.Module], into: str, statement: str) -> dict[str, ast.Module]:
    planted = dict(tree)
    planted[into] = ast.Module(body=[*tree[into].body, *ast.parse(statement).body], type_ignores=[])
    return planted


@pytest.mark.parametrize(
    ("into", "statement", "expected"),
    [
        # A domain calling back up into the flow that calls it: a layer broken, and a cycle.
        ("app.incidents.service", "from app.flows import incidents",
         "domain module app.incidents.service imports the flows module app.flows.incidents"),
        ("app.escalation.runs", "from app.notifications import outbox",
         "domain module app.escalation.runs imports another domain's app.notifications.outbox"),
        ("app.core.db", "from app.incidents.models import Incident",
         "core module app.core.db imports app.incidents.models"),
        ("app.flows.paging", "from app.ui import incidents",
         "flow app.flows.paging imports the entry module app.ui.incidents"),
        ("app.ui.admin", "from app.escalation.policies import check_webhook_urls as _x\n"
                         "from app.incidents.router import _note",
         "app.ui.admin imports the private app.incidents.router._note"),
        ("app.incidents.models", "import app.incidents.timeline", "import cycle: "),
    ],
)  # fmt: skip
def test_a_planted_back_edge_is_found(into, statement, expected):
    tree = modules()
    assert problems(tree) == []
    found = problems(plant(tree, into, statement))
    assert any(problem.startswith(expected) for problem in found), found


def test_the_architecture_page_names_only_what_exists():
    """docs/architecture.md stays true to the tree: every path and module it names exists."""
    page = (APP.parent / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:app|tests)/[\w/]+(?:\.py)?)`", page))
    modules = set(re.findall(r"`(app(?:\.\w+)+)`", page))
    assert len(paths) > 20 and len(modules) >= 3
    missing = [p for p in sorted(paths) if not (APP.parent / p).exists()]
    missing += [
        m for m in sorted(modules)
        if not (APP.parent / (m.replace(".", "/") + ".py")).exists()
        and not (APP.parent / m.replace(".", "/")).is_dir()
    ]  # fmt: skip
    assert missing == []
