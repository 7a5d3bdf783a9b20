"""Every performance scenario in one command, one report, and comparisons of reports and commits.

    make bench                                   # python -m bench: PostgreSQL
    .venv/bin/python -m bench --sqlite           # SQLite instead
    make bench-compare A=bench/results/x.json B=bench/results/y.json
    make bench-ab A=ce04e5c B=HEAD ONLY=ingestion,incident_list ROUNDS=3

Each scenario runs one or more of the scripts in scripts/ (they can be run alone too) against a
database made for it and dropped afterwards (a temporary file for SQLite): the service under the
production server (gunicorn with uvicorn workers) or its worker processes, driven from a separate
process over loopback, bounded in count and time. Every run starts with the calibration
(scripts/bench_calibrate.py: the same server answering a route without the database, and raw
single-row INSERTs on the same PostgreSQL), and every figure is also given as its ratio to the
matching calibration figure (`calibrated`), which compares across days. The report goes to
bench/results/<date>-<commit>-<db>.json with a Markdown table beside it, and the latest-benchmark
table of docs/performance.md (between its bench markers) is rewritten from it, targets beside
figures. About eight minutes on the 2-core machine.

`ab` runs chosen scenarios for two commits alternately (A B, B A, A B …), each commit's server
from a temporary worktree of it, the load generator and figures from this checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
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

from bench import profile
from tests.support.databases import PostgresDatabase, fetch
from tests.support.processes import terminate_on_signal

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SUMMARY = ROOT / "docs" / "performance.md"  # its table between BEGIN and END
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Step:
    script: str  # scripts/<script>.py
    arguments: list[str]
    figures: str | None = None  # the name of what it writes in the report (None: nothing)
    # `harness`: this checkout's load generator, which imports nothing of `app` and is told the
    # tree whose server to start (`--tree`); `app`: imports the tree's `app` (run in the tree,
    # with it on PYTHONPATH); `in_process`: measures this checkout's app in its own process (not
    # run by `ab`).
    kind: str = "harness"


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: list[Step]
    timeout: float  # per step


CALIBRATION = Scenario(
    "calibration",
    [
        Step(
            "bench_calibrate",
            ["--requests", "10000", "--warmup", "1000", "--inserts", "20000"],
            "calibration",
        )
    ],
    300,
)
SCENARIOS = [
    CALIBRATION,
    Scenario("ingestion", [Step("bench_ingest", ["--requests", "10000", "--warmup", "1000",
                                                 "--sources", "generic,pagerduty,api"],
                                "ingestion")], 600),
    # One sender: the CPU and latency of a request alone (fewer requests: one at a time).
    Scenario("ingestion_1", [Step("bench_ingest", ["--concurrency", "1", "--requests", "2000",
                                                   "--warmup", "200", "--sources", "generic,api"],
                                  "ingestion_1")], 600),
    # The server as `make run-prod` starts it (bench/server.py), beside the lean one above.
    Scenario("ingestion_prod", [Step("bench_ingest", ["--production", "--requests", "10000",
                                                      "--warmup", "1000", "--sources", "generic"],
                                     "ingestion_prod")], 600),
    Scenario("incident_list", [Step("seed_incidents", ["100000"], kind="app"),
                               Step("bench_incidents", ["--requests", "200"], "incident_list",
                                    kind="in_process"),
                               Step("bench_list", ["--requests", "3000", "--warmup", "200"],
                                    "incident_list_http"),
                               # The same page asked by a user in 20 teams, then with 5 private
                               # teams besides (their incidents left out): what authorization
                               # costs a list.
                               Step("bench_list", ["--requests", "3000", "--warmup", "200",
                                                   "--member", "20"],
                                    "incident_list_member"),
                               Step("bench_list", ["--requests", "3000", "--warmup", "200",
                                                   "--member", "20", "--hidden", "5"],
                                    "incident_list_hidden")], 600),
    Scenario("escalation", [Step("bench_escalation", ["10000", "--workers", "2"], "escalation",
                                 kind="in_process")], 600),
    Scenario("delivery", [Step("bench_delivery", ["5000", "--workers", "2"], "delivery",
                               kind="in_process")], 600),
]  # fmt: skip
# What `ab` runs unless told: the scenarios whose every measuring step is a server's.
AB_DEFAULT = ("ingestion", "incident_list")
AB_SCALE = 0.5  # ab's request counts by default: half of a run's (each figure is a median)
COUNTS = ("--requests", "--warmup", "--inserts")  # the arguments `--scale` multiplies


def scaled(arguments: list[str], scale: float) -> list[str]:
    """`arguments` with the value of each of COUNTS times `scale` (at least 1; 0 stays 0)."""
    out = list(arguments)
    for i, argument in enumerate(out[:-1]):
        if argument in COUNTS and scale != 1:
            value = int(out[i + 1])
            out[i + 1] = str(max(1, round(value * scale)) if value else 0)
    return out


@contextmanager
def database(server: str | None, name: str) -> Iterator[str]:
    """A fresh database URL for one scenario, dropped afterwards."""
    if server is None:
        with tempfile.TemporaryDirectory(prefix="ims-bench-") as folder:
            yield f"sqlite+aiosqlite:///{folder}/{name}.db"
        return
    with PostgresDatabase(server, name=f"ims_bench_{name}_{os.getpid()}") as url:
        yield url


def run_step(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> None:
    """A step's process; on a failure, a timeout or an interruption here it gets SIGTERM (so that
    it stops the server it started), then SIGKILL a minute later."""
    process = subprocess.Popen(command, env=env, cwd=cwd)  # noqa: S603
    try:
        code = process.wait(timeout=timeout)
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


# Scripts that can sample their server with py-spy (`--profile`, see bench/profile.py).
PROFILED = frozenset({"bench_ingest", "bench_list"})


def run(
    scenario: Scenario,
    server: str | None,
    folder: Path,
    *,
    tree: Path = ROOT,
    scale: float = 1,
    profile: Path | None = None,
) -> dict[str, Any]:
    """The figures of one scenario, by name, with the server (and any set-up that imports `app`)
    from `tree`; `in_process` steps only when `tree` is this checkout; with `profile`, py-spy's
    samples of the servers into that folder."""
    found: dict[str, Any] = {}
    with database(server, scenario.name) as url:
        for step in scenario.steps:
            if step.kind == "in_process" and tree != ROOT:
                print(f"== {scenario.name}: {step.script} skipped (runs this checkout's app in "
                      "process)", flush=True)  # fmt: skip
                continue
            command = [sys.executable, str(ROOT / "scripts" / f"{step.script}.py"),
                       *scaled(step.arguments, scale)]  # fmt: skip
            home = tree if step.kind == "app" else ROOT
            env = os.environ | {
                "DATABASE_URL": url,
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(home),
            }
            if step.kind == "harness":
                log = folder / f"{scenario.name}-{step.script}-server.log"
                command += ["--tree", str(tree), "--log", str(log)]
            if step.figures:
                command += ["--json", str(folder / f"{step.figures}.json")]
            if profile is not None and step.script in PROFILED:
                command += ["--profile", str(profile.resolve())]
            print(f"== {scenario.name}: {' '.join(command[1:])}", flush=True)
            run_step(command, env, home, scenario.timeout)
            if step.figures:
                found[step.figures] = json.loads((folder / f"{step.figures}.json").read_text())
    return found


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


# ---- calibrated ratios --------------------------------------------------------------------------

# Figures measured at one sender: divided by the calibration at one sender (`http_1`).
ONE_SENDER = ("ingestion_1.",)
# Figures that are settings of a run, not measurements: no ratios between runs or set-ups.
SETTINGS = {"ok", "failed", "workers", "concurrency", "rows", "connections", "incidents", "steps",
            "sent", "received"}  # fmt: skip


def calibration_of(name: str) -> tuple[str, float] | None:
    """The calibration figure that the figure `name` is divided by (and a factor for its value
    first), None if none matches:

    - rates (`per_s`, `…_per_s`) ÷ the trivial route's requests per second (`calibration.http`, or
      `calibration.http_1` for figures measured at one sender);
    - the server's CPU per request (`app_cpu_ms`) ÷ the trivial route's CPU per request;
    - the database's CPU per request (`db_cpu_ms`) ÷ the database's CPU per raw INSERT
      (`calibration.insert`);
    - latencies (`p50_ms` … `max_ms`, `server_p50_ms` …, `lateness_…_s` in ms) ÷ the trivial
      route's p50.
    """
    if name.startswith("calibration."):
        return None
    http = "calibration.http_1" if name.startswith(ONE_SENDER) else "calibration.http"
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "per_s" or leaf.endswith("_per_s"):
        return f"{http}.per_s", 1
    if leaf == "app_cpu_ms":
        return f"{http}.app_cpu_ms", 1
    if leaf == "db_cpu_ms":
        return "calibration.insert.db_cpu_ms", 1
    if re.fullmatch(r"(?:server_)?(?:p\d+|max)_ms", leaf):
        return f"{http}.p50_ms", 1
    if re.fullmatch(r"lateness_(?:p\d+|max)_s", leaf):
        return f"{http}.p50_ms", 1000
    return None


def calibrated(flat: dict[str, float]) -> dict[str, float]:
    """Each figure of `flatten(report)` that has a calibration figure in the same report, divided
    by it (see `calibration_of`)."""
    out: dict[str, float] = {}
    for name, value in flat.items():
        found = calibration_of(name)
        if found is not None and flat.get(found[0]):
            out[name] = value * found[1] / flat[found[0]]
    return out


def production_over_lean(flat: dict[str, float]) -> dict[str, float]:
    """production / lean for each figure of `ingestion_prod` that `ingestion` has too (the same
    source and mode, measured in the same run)."""
    out: dict[str, float] = {}
    for name, value in flat.items():
        if name.startswith("ingestion_prod.") and name.rsplit(".", 1)[-1] not in SETTINGS:
            lean = flat.get("ingestion." + name.removeprefix("ingestion_prod."))
            if lean:
                out[name.removeprefix("ingestion_prod.")] = value / lean
    return out


# ---- the table ----------------------------------------------------------------------------------

NAMES = {"generic": "alerts (generic)", "pagerduty": "alerts (PagerDuty /v2/enqueue)",
         "api": "incidents via POST /v1/incidents/"}  # fmt: skip
TARGETS = {("generic", "new"): "1,500/s, p99 < 50 ms", ("generic", "dedup"): "3,000/s, p99 < 50 ms",
           ("api", "new"): "1,000/s"}  # fmt: skip


def ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f" [{value:.0f}]" if value >= 10 else f" [{value:.2g}]"


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def traffic(
    figures: dict[str, Any], prefix: str, cal: dict[str, float], unit: str = "request"
) -> str:
    """Rate, latencies, CPU per request, the machine's busy share and the load generator's share
    of one measured run (figures under `prefix` in `cal`), each with its calibrated ratio."""

    def c(key: str) -> str:
        return ratio(cal.get(f"{prefix}.{key}"))

    f = figures
    text = (
        f"{f['per_s']:,.0f}{'' if unit == 'request' else f' {unit}s'}/s{c('per_s')}, "
        f"p50 {ms(f['p50_ms'])}{c('p50_ms')} / p95 "
        f"{ms(f['p95_ms'])}{c('p95_ms')} / p99 {ms(f['p99_ms'])}{c('p99_ms')} ms"
    )
    if "app_cpu_ms" in f:
        text += (
            f"; CPU per {unit}: app {f['app_cpu_ms']:.2f}{c('app_cpu_ms')} / "
            f"db {f['db_cpu_ms']:.2f}{c('db_cpu_ms')} ms"
        )
    if f.get("machine_busy") is not None and f.get("concurrency", 32) > 1:
        text += f"; machine {f['machine_busy']:.0%} busy"
    if "client_share" in f:
        text += f"; load generator {f['client_share']:.0%} of the CPU"
    return text


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, measured, target) for docs/performance.md and the Markdown file."""
    out: list[tuple[str, str, str]] = []
    figures = report["scenarios"]
    flat = flatten(report)
    cal = calibrated(flat)
    calibration = figures.get("calibration")
    if calibration:
        for name in ("http", "http_1"):
            http = calibration[name]
            out.append((
                f"calibration: {calibration['route']} (no database) on the same server, "
                f"{http['concurrency']} sender{'s' if http['concurrency'] > 1 else ''}",
                f"{http['per_s']:,.0f}/s, p50 {http['p50_ms']:.2f} / p99 {http['p99_ms']:.2f} ms; "
                f"CPU per request: app {http['app_cpu_ms']:.3f} / db {http['db_cpu_ms']:.3f} ms",
                "—",
            ))  # fmt: skip
        insert = calibration.get("insert")
        if insert:
            out.append((
                f"calibration: single-row INSERT, autocommit, {insert['connections']} asyncpg "
                "connections",
                f"{insert['per_s']:,.0f}/s, p50 {insert['p50_ms']:.2f} / p99 "
                f"{insert['p99_ms']:.2f} ms; db CPU per insert {insert['db_cpu_ms']:.3f} ms",
                "—",
            ))  # fmt: skip
    for key, suffix in (("ingestion", ""), ("ingestion_1", ", one sender")):
        for s in (figures.get(key) or {}).get("scenarios", []):
            kind = "new" if s["mode"] == "new" else "deduplicated"
            out.append((
                f"{NAMES.get(s['source'], s['source'])}, {kind}{suffix}",
                traffic(s, f"{key}.scenarios.{s['source']}.{s['mode']}", cal),
                TARGETS.get((s["source"], s["mode"]), "—") if not suffix else "—",
            ))  # fmt: skip
    over = production_over_lean(flat)
    for s in (figures.get("ingestion_prod") or {}).get("scenarios", []):
        label = f"scenarios.{s['source']}.{s['mode']}"
        against = ", ".join(
            f"{what} {over[f'{label}.{key}']:.2f}"
            for what, key in (("rate", "per_s"), ("p99", "p99_ms"), ("app CPU", "app_cpu_ms"),
                              ("db CPU", "db_cpu_ms"))
            if f"{label}.{key}" in over
        )  # fmt: skip
        out.append((
            f"{NAMES.get(s['source'], s['source'])}, "
            f"{'new' if s['mode'] == 'new' else 'deduplicated'}, production set-up (run-prod)",
            traffic(s, f"ingestion_prod.{label}", cal)
            + (f"; production / lean: {against}" if against else ""),
            "—",
        ))  # fmt: skip
    ingestion = figures.get("ingestion")
    if ingestion:
        out.append((
            f"server memory (RSS, {ingestion['workers']} workers together)",
            f"idle {ingestion['idle_rss_mb']:.0f} MiB, peak {ingestion['peak_rss_mb']:.0f} MiB",
            "—",
        ))  # fmt: skip
    for query in figures.get("incident_list", []):
        if query["query"].startswith("/v1/incidents/?status=triggered&severity=critical"):
            name = f"incident_list.{query['query']}"
            out.append((
                f"filtered first page at {query['incidents']:,} incidents (server time)",
                f"p50 {query['server_p50_ms']:.1f}{ratio(cal.get(f'{name}.server_p50_ms'))} / p95 "
                f"{query['server_p95_ms']:.1f}{ratio(cal.get(f'{name}.server_p95_ms'))} / p99 "
                f"{query['server_p99_ms']:.1f}{ratio(cal.get(f'{name}.server_p99_ms'))} ms",
                "< 20 ms",
            ))  # fmt: skip
    listing = figures.get("incident_list_http")
    if listing:
        out.append((
            f"incident list over HTTP, `GET {listing['query']}` ({listing['rows']} a page), "
            f"{listing['concurrency']} clients, 100,000 incidents",
            traffic(listing, "incident_list_http", cal, unit="page"),
            "—",
        ))  # fmt: skip
    for key in ("incident_list_member", "incident_list_hidden"):
        member = figures.get(key)
        if member and "member_of" in member:
            hidden = member.get("hidden_teams", 0)
            out.append((
                f"the same page asked by a user in {member['member_of']} teams"
                + (f", {hidden} private teams besides (their incidents left out)" if hidden
                   else ""),
                traffic(member, key, cal, unit="page"),
                "as fast as the admin's",
            ))  # fmt: skip
    escalation = figures.get("escalation")
    if escalation:
        c = {k: ratio(cal.get(f"escalation.{k}")) for k in
             ("lateness_p50_s", "lateness_p99_s", "lateness_max_s", "steps_per_s")}  # fmt: skip
        out.append((
            f"escalation, {escalation['steps']:,} steps due at once, {escalation['workers']} "
            "workers: lateness",
            f"p50 {escalation['lateness_p50_s']:.2f}{c['lateness_p50_s']} / p99 "
            f"{escalation['lateness_p99_s']:.2f}{c['lateness_p99_s']} / max "
            f"{escalation['lateness_max_s']:.2f}{c['lateness_max_s']} s; "
            f"{escalation['steps_per_s'] or 0:,.0f}{c['steps_per_s']} steps/s",
            "p99 < 1 s",
        ))  # fmt: skip
    delivery = figures.get("delivery")
    if delivery:
        out.append((
            f"notification delivery to a local webhook sink, {delivery['workers']} workers",
            f"{delivery['per_s']:,.0f}/s{ratio(cal.get('delivery.per_s'))} ({delivery['sent']:,} "
            f"sent, the sink received {delivery['received']:,})",
            "—",
        ))  # fmt: skip
    return out


LEGEND = (
    "In brackets: the figure divided by the matching one of this run's calibration (its first "
    "rows): a rate by the trivial route's requests per second, the server's CPU per request by "
    "the trivial route's, the database's CPU per request by its CPU per raw INSERT, a latency by "
    "the trivial route's p50; figures at one sender by the calibration at one sender. See "
    "[how to measure](#how-to-measure)."
)


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
    if "calibration" in report["scenarios"]:
        lines += ["", LEGEND]
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
    """Every figure of both reports: A, B and B/A as measured, then each one's calibrated ratio
    (÷ its own run's calibration) and B/A of those, which holds across days."""
    a, b = flatten(json.loads(first.read_text())), flatten(json.loads(second.read_text()))
    cal_a, cal_b = calibrated(a), calibrated(b)

    def quotient(x: float | None, y: float | None) -> str:
        return f"{y / x:.2f}" if x and y is not None else "—"

    def number(x: float | None) -> str:
        return f"{x:.3f}" if x is not None else "—"

    show(f"{'figure':<72} {'A':>12} {'B':>12} {'B/A':>7} {'A/cal':>9} {'B/cal':>9} {'B/A cal':>7}")
    for name in sorted(a.keys() & b.keys()):
        ca, cb = cal_a.get(name), cal_b.get(name)
        show(
            f"{name:<72} {a[name]:>12.3f} {b[name]:>12.3f} {quotient(a[name], b[name]):>7} "
            f"{number(ca):>9} {number(cb):>9} {quotient(ca, cb):>7}"
        )


# ---- two commits, alternately -------------------------------------------------------------------


def ab_summary(
    first: list[dict[str, float]], second: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """Per figure that every round of both has (`flatten`ed, settings left out): A's median, B's
    median, the median of the rounds' B/A ratios (each round's A and B ran back to back) and the
    lowest and highest of them."""
    rounds = first + second
    if not first or not second:
        return []
    names = set.intersection(*(set(flat) for flat in rounds))
    out = []
    for name in sorted(names):
        if name.split(".")[-1] in SETTINGS:
            continue
        a, b = [flat[name] for flat in first], [flat[name] for flat in second]
        if not all(map(_finite, a + b)):
            continue
        ratios = [y / x for x, y in zip(a, b, strict=True) if x]
        out.append({
            "figure": name, "a": statistics.median(a), "b": statistics.median(b),
            "ratio": statistics.median(ratios) if ratios else None,
            "low": min(ratios) if ratios else None, "high": max(ratios) if ratios else None,
        })  # fmt: skip
    return out


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def ab_markdown(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"`python -m bench ab {a['ref']} {b['ref']}` on {result['date']}: A = `{a['commit']}`, "
        f"B = `{b['commit']}`, scenarios {', '.join(result['only'])}, {result['rounds']} rounds "
        f"(A B, then B A, alternately, each on a fresh database; request counts "
        f"× {result['scale']:g}), "
        f"{result['duration_s']:.0f} s. B/A: the median of the rounds' ratios, their lowest and "
        "highest in brackets; `….calibrated`: the figure ÷ its run's calibration.",
        "",
        "| figure | A (median) | B (median) | B/A (min–max) |",
        "|---|---|---|---|",
    ]
    for row in result["summary"]:
        spread = (
            f"{row['ratio']:.2f} ({row['low']:.2f}–{row['high']:.2f})"
            if row["ratio"] is not None
            else "—"
        )
        lines.append(f"| {row['figure']} | {row['a']:.3f} | {row['b']:.3f} | {spread} |")
    return "\n".join(lines) + "\n"


def git(*args: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def worktrees(commits: dict[str, str], folder: Path) -> Iterator[dict[str, Path]]:
    """A detached worktree of each commit under `folder` (label -> path), removed on leaving,
    whatever happened."""
    made: dict[str, Path] = {}
    try:
        for label, sha in commits.items():
            path = folder / f"{label}-{sha[:12]}"
            git("worktree", "add", "--detach", str(path), sha)
            made[label] = path
        yield made
    finally:
        for path in made.values():
            subprocess.run(  # noqa: S603
                ["git", "worktree", "remove", "--force", str(path)],  # noqa: S607
                cwd=ROOT, capture_output=True, check=False,
            )  # fmt: skip
            shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)  # noqa: S607


def round_order(rounds: int) -> list[str]:
    """Which commit runs first in each round: A B, then B A, and so on. A run right after another
    measured slower on the machine this was written on (2026-12-07: the same commit second in
    the round, 5–20 % more CPU per request, its load generator's too), so each commit runs first
    as often as second."""
    return ["AB" if n % 2 == 0 else "BA" for n in range(rounds)]


def ab(
    refs: tuple[str, str], only: list[str], rounds: int, server: str | None, scale: float
) -> dict[str, Any]:
    """The chosen scenarios for commits A and B, `rounds` times, in the order of `round_order`;
    the figures of every round and their summary (`ab_summary`)."""
    chosen = [s for s in SCENARIOS if s.name in only]
    commits = {
        label: git("rev-parse", f"{ref}^{{commit}}") for label, ref in zip("AB", refs, strict=True)
    }
    started = time.monotonic()
    flats: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    with (
        tempfile.TemporaryDirectory(prefix="ims-bench-ab-") as folder,
        worktrees(commits, Path(folder)) as trees,
    ):
        for n, order in enumerate(round_order(rounds)):
            for label in order:
                print(f"==== round {n + 1} of {rounds}: {label} = {commits[label][:9]}", flush=True)
                found: dict[str, Any] = {}
                for scenario in chosen:
                    found |= run(scenario, server, Path(folder), tree=trees[label], scale=scale)
                flat = flatten({"scenarios": found})
                flat |= {f"{k}.calibrated": v for k, v in calibrated(flat).items()}
                flats[label].append(flat)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "a": {"ref": refs[0], "commit": commits["A"][:9]},
        "b": {"ref": refs[1], "commit": commits["B"][:9]},
        "only": [s.name for s in chosen], "rounds": rounds, "scale": scale,
        "database": "SQLite" if server is None else "PostgreSQL", "machine": machine(server),
        "duration_s": time.monotonic() - started,
        "summary": ab_summary(flats["A"], flats["B"]), "figures": flats,
    }  # fmt: skip


# ---- the command --------------------------------------------------------------------------------


def main() -> None:
    signal.signal(signal.SIGTERM, terminate_on_signal)  # unwind: servers stopped, databases dropped
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", nargs="?", default="run",
        choices=("run", "compare", "summary", "ab", "budget"),
    )  # fmt: skip
    parser.add_argument(
        "items", nargs="*", help="compare: two reports; ab: two commits; budget: py-spy files"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
        help="a PostgreSQL server (no database: one is made per scenario and dropped)",
    )
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite instead")
    parser.add_argument(
        "--only",
        help=f"scenarios to run (run: all, the calibration first in any case; ab: "
        f"{','.join(AB_DEFAULT)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="ab: rounds of A then B")
    parser.add_argument(
        "--scale",
        type=float,
        help=f"multiply every request count by this (run: 1; ab: {AB_SCALE}, so that 3 rounds of "
        "ingestion and incident_list take under 20 minutes)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run: sample each server under load with py-spy into this folder (keep it out of "
        "the repository; see bench/profile.py), then print where the CPU went",
    )
    args = parser.parse_args()
    if args.command == "budget":
        for item in args.items:
            print(profile.show(Path(item)))
        return
    if args.command == "compare":
        if len(args.items) != 2:
            parser.error("compare takes two report files")
        compare(Path(args.items[0]), Path(args.items[1]))
        return
    if args.command == "summary":  # from the latest full PostgreSQL report
        full = [p for p in RESULTS.glob("*-postgresql.json")]
        update_summary(json.loads(max(full, key=lambda p: p.stat().st_mtime).read_text()))
        return
    server = None if args.sqlite else args.postgres_url.rstrip("/")
    names = {s.name for s in SCENARIOS}
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    if args.command == "ab":
        if len(args.items) != 2 or args.rounds < 1:
            parser.error("ab takes two commits (and --rounds of at least 1)")
        only = args.only.split(",") if args.only else list(AB_DEFAULT)
        if set(only) - names:
            parser.error(f"unknown scenarios {sorted(set(only) - names)}; known: {sorted(names)}")
        for scenario in SCENARIOS:
            if scenario.name in only and all(s.kind == "in_process" for s in scenario.steps):
                parser.error(f"{scenario.name} runs this checkout's app in process: not for ab")
        scale = AB_SCALE if args.scale is None else args.scale
        result = ab((args.items[0], args.items[1]), only, args.rounds, server, scale)
        name = f"{day}-ab-{result['a']['commit'][:7]}-{result['b']['commit'][:7]}"
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(ab_markdown(result))
        print(ab_markdown(result))
        print(f"wrote bench/results/{name}.md and .json")
        return
    wanted = args.only.split(",") if args.only else sorted(names)
    if set(wanted) - names:
        parser.error(f"unknown scenarios {sorted(set(wanted) - names)}; known: {sorted(names)}")
    wanted = ["calibration", *(w for w in wanted if w != "calibration")]
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
                report["scenarios"] |= run(
                    scenario, server, Path(folder), scale=args.scale or 1, profile=args.profile
                )
    report["duration_s"] = time.monotonic() - started
    flat = flatten(report)
    report["calibrated"] = calibrated(flat)
    report["production_over_lean"] = production_over_lean(flat)
    complete = set(wanted) >= names and (args.scale or 1) == 1
    report["name"] = (
        f"{day}-{report['commit']}-{'sqlite' if server is None else 'postgresql'}"
        + (
            "" if complete else "-" + "+".join(wanted)  # a partial run never replaces a full report
        )
        + ("-profiled" if args.profile else "")
    )  # its figures include py-spy's cost
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{report['name']}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{report['name']}.md").write_text(markdown(report))
    if server is not None and complete and not args.profile:
        update_summary(report)
    print(markdown(report))
    for sampled in sorted(args.profile.glob("*.txt")) if args.profile else ():
        print(profile.show(sampled))


if __name__ == "__main__":
    main()
