"""The benchmark report: its table, the section of docs/performance.md it rewrites, and comparing
two reports."""

from __future__ import annotations

import json
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
    assert by_name["ingestion.scenarios.generic.new.per_s"][1:] == ["1500.000", "3000.000", "2.00"]
    assert by_name["escalation.steps_per_s"][-1] == "1.00"


def test_the_summary_is_in_docs_performance():
    text = bench.SUMMARY.read_text()
    assert bench.SUMMARY.name == "performance.md"
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
