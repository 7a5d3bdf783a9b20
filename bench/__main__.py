"""Every performance scenario in one command, one report, and a comparison of two reports.

    make bench                                   # python -m bench: PostgreSQL
    .venv/bin/python -m bench --sqlite           # SQLite instead
    make bench-compare A=bench/results/x.json B=bench/results/y.json

Each scenario runs one of the scripts in scripts/ (they can be run alone too) against a database
made for it and dropped afterwards (a temporary file for SQLite): the service under the production
server (gunicorn with uvicorn workers) or its worker processes, driven from a separate process
over loopback, bounded in count and time. The report goes to bench/results/<date>-<commit>-<db>.json
with a Markdown table beside it, and the latest-benchmark table of docs/performance.md (between its
bench markers)
is rewritten from it, targets beside figures. About four minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.databases import PostgresDatabase, fetch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SUMMARY = ROOT / "docs" / "performance.md"  # its table between BEGIN and END
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: list[tuple[str, list[str]]]  # (script, arguments); the last one writes the figures
    timeout: float


SCENARIOS = [
    Scenario("ingestion", [("bench_ingest", ["--requests", "10000", "--warmup", "1000",
                                             "--sources", "generic,pagerduty,api"])], 600),
    Scenario("incident_list", [("seed_incidents", ["100000"]),
                               ("bench_incidents", ["--requests", "200"])], 600),
    Scenario("escalation", [("bench_escalation", ["10000", "--workers", "2"])], 600),
    Scenario("delivery", [("bench_delivery", ["5000", "--workers", "2"])], 600),
]  # fmt: skip


@contextmanager
def database(server: str | None, name: str) -> Iterator[str]:
    """A fresh database URL for one scenario, dropped afterwards."""
    if server is None:
        with tempfile.TemporaryDirectory(prefix="ims-bench-") as folder:
            yield f"sqlite+aiosqlite:///{folder}/{name}.db"
        return
    with PostgresDatabase(server, name=f"ims_bench_{name}_{os.getpid()}") as url:
        yield url


def run(scenario: Scenario, server: str | None, folder: Path) -> Any:
    figures = folder / f"{scenario.name}.json"
    with database(server, scenario.name) as url:
        env = os.environ | {"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
        for script, arguments in scenario.steps:
            command = [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *arguments]
            if (script, arguments) == scenario.steps[-1]:
                command += ["--json", str(figures)]
            print(f"== {scenario.name}: {' '.join(command[1:])}", flush=True)
            subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=scenario.timeout)  # noqa: S603
    return json.loads(figures.read_text())


def commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or "unknown"


def machine(server: str | None) -> dict[str, Any]:
    version = None
    if server is not None:
        [row] = asyncio.run(fetch(f"{server}/postgres", "SHOW server_version"))
        version = row[0]
    return {
        "cores": os.cpu_count(), "python": platform.python_version(),
        "postgresql": version, "platform": platform.platform(),
        "load_generator": "a separate process on the same cores (a bare HTTP/1.1 keep-alive "
        "client, about 0.05 ms of CPU per request); worker benchmarks have no client",
    }  # fmt: skip


# ---- the table ----------------------------------------------------------------------------------


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, measured, target) for docs/performance.md and the Markdown file."""
    out: list[tuple[str, str, str]] = []
    figures = report["scenarios"]
    ingestion = figures.get("ingestion")
    if ingestion:
        targets = {("generic", "new"): "1,500/s, p99 < 50 ms",
                   ("generic", "dedup"): "3,000/s, p99 < 50 ms",
                   ("api", "new"): "1,000/s"}  # fmt: skip
        names = {"generic": "alerts (generic)", "pagerduty": "alerts (PagerDuty /v2/enqueue)",
                 "api": "incidents via POST /v1/incidents/"}  # fmt: skip
        for s in ingestion["scenarios"]:
            kind = "new" if s["mode"] == "new" else "deduplicated"
            share = (
                f"; load generator {s['client_share']:.0%} of the CPU"
                if "client_share" in s
                else ""
            )
            out.append((
                f"{names.get(s['source'], s['source'])}, {kind}",
                f"{s['per_s']:,.0f}/s, p50 {s['p50_ms']:.0f} / p95 {s['p95_ms']:.0f} / "
                f"p99 {s['p99_ms']:.0f} ms{share}",
                targets.get((s["source"], s["mode"]), "—"),
            ))  # fmt: skip
        out.append((
            f"server memory (RSS, {ingestion['workers']} workers together)",
            f"idle {ingestion['idle_rss_mb']:.0f} MiB, peak {ingestion['peak_rss_mb']:.0f} MiB",
            "—",
        ))  # fmt: skip
    for query in figures.get("incident_list", []):
        if query["query"].startswith("/v1/incidents/?status=triggered&severity=critical"):
            out.append((
                f"filtered first page at {query['incidents']:,} incidents (server time)",
                f"p50 {query['server_p50_ms']:.1f} / p95 {query['server_p95_ms']:.1f} / "
                f"p99 {query['server_p99_ms']:.1f} ms",
                "< 20 ms",
            ))  # fmt: skip
    escalation = figures.get("escalation")
    if escalation:
        out.append((
            f"escalation, {escalation['steps']:,} steps due at once, {escalation['workers']} "
            "workers: lateness",
            f"p50 {escalation['lateness_p50_s']:.2f} / p99 {escalation['lateness_p99_s']:.2f} / "
            f"max {escalation['lateness_max_s']:.2f} s; {escalation['steps_per_s'] or 0:,.0f} "
            "steps/s",
            "p99 < 1 s",
        ))  # fmt: skip
    delivery = figures.get("delivery")
    if delivery:
        out.append((
            f"notification delivery to a local webhook sink, {delivery['workers']} workers",
            f"{delivery['per_s']:,.0f}/s ({delivery['sent']:,} sent, the sink received "
            f"{delivery['received']:,})",
            "—",
        ))  # fmt: skip
    return out


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    lines = [
        f"Measured {report['date']} at commit `{report['commit']}` on {report['database']}, "
        f"{info['cores']} cores, Python {info['python']}"
        + (f", PostgreSQL {info['postgresql']}" if info["postgresql"] else "")
        + f"; load generator: {info['load_generator']}. `make bench` "
        f"({report['duration_s']:.0f} s) wrote `bench/results/{report['name']}.json`.",
        "",
        "| scenario | measured | target |",
        "|---|---|---|",
    ]
    lines += [f"| {what} | {measured} | {target} |" for what, measured, target in rows(report)]
    return "\n".join(lines) + "\n"


def update_summary(report: dict[str, Any]) -> None:
    text = SUMMARY.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{SUMMARY.name} has no {BEGIN} … {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    SUMMARY.write_text(f"{head}{BEGIN}\n{markdown(report)}{END}{tail}")


# ---- comparing two reports ----------------------------------------------------------------------


def flatten(report: dict[str, Any]) -> dict[str, float]:
    """Every number of a report under a dotted name, e.g. ingestion.generic.new.per_s."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            flat[prefix] = float(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    label = ".".join(str(item[k]) for k in ("source", "mode", "query") if k in item)
                    rest = {k: v for k, v in item.items() if k not in ("source", "mode", "query")}
                    walk(f"{prefix}.{label}", rest)

    walk("", report["scenarios"])
    return flat


def compare(first: Path, second: Path, show: Callable[[str], None] = print) -> None:
    a, b = flatten(json.loads(first.read_text())), flatten(json.loads(second.read_text()))
    show(f"{'figure':<72} {'A':>12} {'B':>12} {'B/A':>7}")
    for name in sorted(a.keys() & b.keys()):
        ratio = f"{b[name] / a[name]:.2f}" if a[name] else "—"
        show(f"{name:<72} {a[name]:>12.3f} {b[name]:>12.3f} {ratio:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "compare", "summary"))
    parser.add_argument("files", nargs="*", type=Path, help="compare: two reports")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
        help="a PostgreSQL server (no database: one is made per scenario and dropped)",
    )
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite instead")
    parser.add_argument(
        "--only", default=",".join(s.name for s in SCENARIOS), help="scenarios to run"
    )
    args = parser.parse_args()
    if args.command == "compare":
        if len(args.files) != 2:
            parser.error("compare takes two report files")
        compare(*args.files)
        return
    if args.command == "summary":  # from the latest full PostgreSQL report
        full = [p for p in RESULTS.glob("*-postgresql.json")]
        update_summary(json.loads(max(full, key=lambda p: p.stat().st_mtime).read_text()))
        return
    server = None if args.sqlite else args.postgres_url.rstrip("/")
    wanted = args.only.split(",")
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "database": "SQLite" if server is None else "PostgreSQL",
        "machine": machine(server),
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="ims-bench-") as folder:
        for scenario in SCENARIOS:
            if scenario.name in wanted:
                report["scenarios"][scenario.name] = run(scenario, server, Path(folder))
    report["duration_s"] = time.monotonic() - started
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    complete = set(wanted) >= {s.name for s in SCENARIOS}
    report["name"] = f"{day}-{report['commit']}-{'sqlite' if server is None else 'postgresql'}" + (
        "" if complete else "-" + "+".join(wanted)  # a partial run never replaces a full report
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{report['name']}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{report['name']}.md").write_text(markdown(report))
    if server is not None and complete:
        update_summary(report)
    print(markdown(report))


if __name__ == "__main__":
    main()
