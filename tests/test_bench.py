"""The benchmark report: its table, the section of docs/performance.md it rewrites, the figures
calibrated by the run's calibration, comparing two reports, and the summary of an A/B run."""

from __future__ import annotations

import json
import os
from importlib import import_module

bench = import_module("bench.__main__")

REPORT = {
    "date": "2026-11-28 14:00 UTC", "commit": "abc1234", "database": "PostgreSQL",
    "name": "2026-11-28-abc1234-postgresql", "duration_s": 240.0,
    "machine": {"cores": 2, "python": "3.11.7", "postgresql": "15.20", "load_generator": "bare"},
    "scenarios": {
        "ingestion": {"workers": 2, "idle_rss_mb": 180.0, "peak_rss_mb": 260.0, "scenarios": [
            {"source": "generic", "mode": "new", "per_s": 1500.0, "p50_ms": 20.0,
             "p95_ms": 30.0, "p99_ms": 40.0, "max_ms": 60.0, "client_share": 0.04},
        ]},
        "escalation": {"steps": 10000, "workers": 2, "lateness_p50_s": 1.1,
                       "lateness_p99_s": 2.6, "lateness_max_s": 2.7, "steps_per_s": 3200.0},
    },
}  # fmt: skip


def test_the_table_puts_targets_beside_figures():
    table = bench.markdown(REPORT)
    row = "| alerts (generic), new | 1,500/s, p50 20 / p95 30 / p99 40 ms; load generator 4% of "
    assert row + "the CPU | 1,500/s, p99 < 50 ms |" in table
    assert "p50 1.10 / p99 2.60 / max 2.70 s; 3,200 steps/s | p99 < 1 s |" in table
    assert "idle 180 MiB, peak 260 MiB" in table
    assert "commit `abc1234`" in table and "2 cores" in table


def test_the_summary_section_is_rewritten_and_nothing_else(tmp_path, monkeypatch):
    summary = tmp_path / "performance.md"
    summary.write_text(f"# Title\n\nbefore\n{bench.BEGIN}\nold table\n{bench.END}\nafter\n")
    monkeypatch.setattr(bench, "SUMMARY", summary)
    bench.update_summary(REPORT)
    text = summary.read_text()
    assert "old table" not in text and "| alerts (generic), new |" in text
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{bench.END}\nafter\n")


def test_compare_prints_the_ratio_of_every_shared_figure(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(REPORT))
    faster = json.loads(json.dumps(REPORT))
    faster["scenarios"]["ingestion"]["scenarios"][0]["per_s"] = 3000.0
    second.write_text(json.dumps(faster))
    lines: list[str] = []
    bench.compare(first, second, show=lines.append)
    by_name = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_name["ingestion.scenarios.generic.new.per_s"][1:4] == ["1500.000", "3000.000", "2.00"]
    assert by_name["escalation.steps_per_s"][3] == "1.00"
    assert by_name["escalation.steps_per_s"][4:] == ["—", "—", "—"]  # no calibration in either


def test_the_summary_is_in_docs_performance():
    text = bench.SUMMARY.read_text()
    assert bench.SUMMARY.name == "performance.md"
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1


CALIBRATED = json.loads(json.dumps(REPORT)) | {"name": "2026-12-08-def5678-postgresql"}
CALIBRATED["scenarios"] |= {
    "calibration": {
        "route": "GET /", "workers": 2,
        "http": {"concurrency": 32, "per_s": 5000.0, "p50_ms": 5.0, "p99_ms": 15.0,
                 "app_cpu_ms": 0.25, "db_cpu_ms": 0.0},
        "http_1": {"concurrency": 1, "per_s": 4000.0, "p50_ms": 0.25, "p99_ms": 0.5,
                   "app_cpu_ms": 0.2, "db_cpu_ms": 0.0},
        "insert": {"connections": 32, "per_s": 15000.0, "p50_ms": 2.0, "p99_ms": 6.0,
                   "db_cpu_ms": 0.05},
    },
    "ingestion_1": {"workers": 2, "concurrency": 1, "scenarios": [
        {"source": "generic", "mode": "new", "per_s": 400.0, "p50_ms": 2.5, "p95_ms": 3.0,
         "p99_ms": 4.0, "max_ms": 9.0, "app_cpu_ms": 1.0, "db_cpu_ms": 0.2,
         "machine_busy": 0.5, "concurrency": 1},
    ]},
    "ingestion_prod": {"workers": 2, "concurrency": 32, "scenarios": [
        {"source": "generic", "mode": "new", "per_s": 1200.0, "p50_ms": 25.0, "p95_ms": 36.0,
         "p99_ms": 50.0, "max_ms": 70.0, "app_cpu_ms": 2.0, "db_cpu_ms": 0.6,
         "machine_busy": 0.97},
    ]},
}  # fmt: skip
CALIBRATED["scenarios"]["ingestion"]["scenarios"][0] |= {"app_cpu_ms": 1.5, "db_cpu_ms": 0.5,
                                                         "machine_busy": 0.98}  # fmt: skip


def test_each_figure_is_divided_by_the_matching_calibration_figure():
    cal = bench.calibrated(bench.flatten(CALIBRATED))
    new = "ingestion.scenarios.generic.new"
    assert cal[f"{new}.per_s"] == 1500 / 5000  # rate ÷ the trivial route's rate
    assert cal[f"{new}.p99_ms"] == 40 / 5  # latency ÷ the trivial route's p50
    assert cal[f"{new}.app_cpu_ms"] == 1.5 / 0.25  # server CPU ÷ the trivial route's
    assert cal[f"{new}.db_cpu_ms"] == 0.5 / 0.05  # database CPU ÷ a raw insert's
    one = "ingestion_1.scenarios.generic.new"  # one sender: the calibration at one sender
    assert cal[f"{one}.per_s"] == 400 / 4000 and cal[f"{one}.p50_ms"] == 2.5 / 0.25
    assert cal[f"{one}.app_cpu_ms"] == 1.0 / 0.2
    assert cal["escalation.lateness_p99_s"] == 2600 / 5  # seconds, in ms
    assert cal["escalation.steps_per_s"] == 3200 / 5000
    # Neither the calibration itself nor settings, memory, or shares have a ratio.
    assert not any(name.startswith("calibration.") for name in cal)
    for name in (f"{new}.client_share", f"{new}.machine_busy", "ingestion.workers",
                 "ingestion.idle_rss_mb"):  # fmt: skip
        assert name not in cal
    assert bench.calibrated(bench.flatten(REPORT)) == {}  # no calibration, no ratios


def test_production_is_divided_by_lean_per_figure():
    over = bench.production_over_lean(bench.flatten(CALIBRATED))
    assert over["scenarios.generic.new.per_s"] == 1200 / 1500
    assert over["scenarios.generic.new.p99_ms"] == 50 / 40
    assert over["scenarios.generic.new.app_cpu_ms"] == 2.0 / 1.5
    assert "workers" not in over and "concurrency" not in over


def test_the_table_gives_each_figure_with_its_calibrated_ratio():
    table = bench.markdown(CALIBRATED)
    assert "| calibration: GET / (no database) on the same server, 32 senders | 5,000/s" in table
    assert "single-row INSERT, autocommit, 32 asyncpg connections | 15,000/s" in table
    row = ("| alerts (generic), new | 1,500/s [0.3], p50 20 [4] / p95 30 [6] / p99 40 [8] ms; "
           "CPU per request: app 1.50 [6] / db 0.50 [10] ms; machine 98% busy; load generator "
           "4% of the CPU | 1,500/s, p99 < 50 ms |")  # fmt: skip
    assert row in table
    assert "| alerts (generic), new, one sender | 400/s [0.1], p50 2.5 [10]" in table
    assert "production / lean: rate 0.80, p99 1.25, app CPU 1.33, db CPU 1.20 |" in table
    assert bench.LEGEND in table


def test_compare_gives_the_calibrated_ratios_of_two_days(tmp_path):
    """Day B's machine is twice as slow: every raw figure halves, the calibrated ones hold."""
    slower = json.loads(json.dumps(CALIBRATED))
    slower["scenarios"]["calibration"]["http"]["per_s"] = 2500.0
    slower["scenarios"]["ingestion"]["scenarios"][0]["per_s"] = 750.0
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(CALIBRATED))
    second.write_text(json.dumps(slower))
    lines: list[str] = []
    bench.compare(first, second, show=lines.append)
    assert lines[0].split() == ["figure", "A", "B", "B/A", "A/cal", "B/cal", "B/A", "cal"]
    by_name = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert by_name["ingestion.scenarios.generic.new.per_s"] == [
        "1500.000", "750.000", "0.50", "0.300", "0.300", "1.00"]  # fmt: skip
    assert by_name["ingestion.idle_rss_mb"][3:] == ["—", "—", "—"]


def test_the_ab_summary_gives_medians_and_the_spread_of_the_rounds_ratios():
    a = [{"x.per_s": 100.0, "x.workers": 2.0}, {"x.per_s": 120.0, "x.workers": 2.0},
         {"x.per_s": 80.0, "x.workers": 2.0}]  # fmt: skip
    b = [{"x.per_s": 150.0, "x.workers": 2.0}, {"x.per_s": 120.0, "x.workers": 2.0},
         {"x.per_s": 120.0, "x.workers": 2.0}]  # fmt: skip
    [row] = bench.ab_summary(a, b)  # settings (workers) left out
    assert row["figure"] == "x.per_s"
    assert (row["a"], row["b"]) == (100.0, 120.0)
    assert row["ratio"] == 1.5 and (row["low"], row["high"]) == (1.0, 1.5)  # 1.5, 1.0, 1.5
    text = bench.ab_markdown({
        "a": {"ref": "ce04e5c", "commit": "ce04e5c"}, "b": {"ref": "HEAD", "commit": "822a09c"},
        "date": "2026-12-08 10:00 UTC", "only": ["ingestion"], "rounds": 3, "scale": 1.0,
        "duration_s": 600.0, "summary": [row],
    })  # fmt: skip
    assert "| x.per_s | 100.000 | 120.000 | 1.50 (1.00–1.50) |" in text
    assert "A = `ce04e5c`, B = `822a09c`" in text


def test_the_ab_summary_needs_a_figure_in_every_round():
    a = [{"x.per_s": 1.0, "y.per_s": 1.0}, {"x.per_s": 1.0}]
    b = [{"x.per_s": 2.0, "y.per_s": 2.0}, {"x.per_s": 2.0, "y.per_s": 2.0}]
    assert [row["figure"] for row in bench.ab_summary(a, b)] == ["x.per_s"]
    assert bench.ab_summary([], b) == []


def test_scale_multiplies_the_request_counts_only():
    arguments = ["--requests", "10000", "--warmup", "0", "--sources", "generic", "100000"]
    assert bench.scaled(arguments, 0.25) == [
        "--requests", "2500", "--warmup", "0", "--sources", "generic", "100000"]  # fmt: skip
    assert bench.scaled(["--requests", "3"], 0.01) == ["--requests", "1"]
    assert bench.scaled(arguments, 1) == arguments


def test_cpu_spent_counts_exited_processes_and_is_never_negative():
    from bench.loadgen import busy_share, cpu_spent

    ticks_per_s = os.sysconf("SC_CLK_TCK")
    # pid 2 exited (its 10 more ticks are in its parent's reaped total), pid 3 is new.
    before = ({1: 100, 2: 50}, {9: 1000})
    after = ({1: 130, 3: 20}, {9: 1010})
    assert cpu_spent(before, after) == (30 + 20 + 10) / ticks_per_s
    assert cpu_spent(after, after) == 0
    assert busy_share((100, 1000), (150, 1200)) == 1 - 50 / 200


def test_a_profile_is_charged_to_the_code_that_ran(tmp_path):
    """py-spy's collapsed stacks: each sample goes to the part of its innermost frame, whatever
    called it (SQLAlchemy's greenlets cut the request's stack anyway)."""
    profile = import_module("bench.profile")
    samples = tmp_path / "generic-new-c1.txt"
    samples.write_text(
        "process 1:gunicorn;run (uvicorn/server.py:10);execute (sqlalchemy/engine/base.py:3) 7\n"
        "process 1:gunicorn;handle (app/flows/ingest.py:5);_gen (sqlalchemy/sql/cache_key.py:9) 2\n"
        "process 1:gunicorn;handle (app/flows/ingest.py:5) 4\n"
        "process 1:gunicorn;emit (logging/__init__.py:1);format (pythonjsonlogger/json.py:2) 3\n"
        "process 1:gunicorn;call (app/core/observe.py:3) 1\n"
        "process 1:gunicorn 3\n"
        "not a sample line\n"
    )
    parts = profile.budget(samples.read_text().splitlines())
    assert parts == {"driver": 7, "SQL building": 2, "application": 4, "logging": 3, "HTTP": 1,
                     "other": 3}  # fmt: skip
    shown = profile.show(samples)
    assert "generic-new-c1.txt (20 samples" in shown
    assert "driver" in shown.splitlines()[1] and "35.0%" in shown.splitlines()[1]


def test_each_commit_runs_first_in_a_round_as_often_as_second():
    assert bench.round_order(1) == ["AB"]
    assert bench.round_order(4) == ["AB", "BA", "AB", "BA"]
    assert [order[0] for order in bench.round_order(6)].count("A") == 3
