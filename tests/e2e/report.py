"""The end-of-run summary printed for people, and the JSON report written for machines."""

from __future__ import annotations

from typing import Any

from tests.e2e.base import now_utc
from tests.e2e.checks import FAILED, PASSED, SKIPPED, Runner
from tests.e2e.coverage import Coverage


def summarise(
    runner: Runner,
    coverage: Coverage | None,
    duration: float,
    *,
    base_url: str | None,
    database: str,
) -> dict[str, Any]:
    """Print the summary; answer the JSON report."""
    passed, failed, skipped = (runner.count(s) for s in (PASSED, FAILED, SKIPPED))
    total = len(runner.results)
    rate = 100.0 * passed / (passed + failed) if passed + failed else 0.0
    groups: dict[str, dict[str, int]] = {}
    for result in runner.results:
        counts = groups.setdefault(result.group, {PASSED: 0, FAILED: 0, SKIPPED: 0})
        counts[result.status] += 1
    covered = coverage.by_group() if coverage else {}
    missing = coverage.missing() if coverage else []
    operations = len(coverage.operations) if coverage else 0
    called = operations - len(missing)
    percent = 100.0 * called / operations if operations else 0.0
    complete = coverage is not None and not missing
    ok = not failed and complete

    rule = "=" * 70
    lines = [
        "",
        rule,
        "END-TO-END TEST SUMMARY".center(70),
        rule,
        f"Target:        {base_url or 'not started'} ({database})",
        f"Total checks:  {total}",
        f"Passed:        {passed}",
        f"Failed:        {failed}",
        *([f"Skipped:       {skipped}"] if skipped else []),
        f"Duration:      {duration:.1f} s",
        f"Success rate:  {rate:.1f}%  (passed / (passed + failed))",
        "",
        "Checks per endpoint group:",
        f"  {'group':<15}{'checks':>7}{'passed':>8}{'failed':>8}{'skipped':>9}  operations called",
    ]
    for group in [*groups, *(g for g in covered if g not in groups)]:
        counts = groups.get(group, {PASSED: 0, FAILED: 0, SKIPPED: 0})
        calls = "{}/{}".format(*covered[group]) if group in covered else "-"
        lines.append(
            f"  {group:<15}{sum(counts.values()):>7}{counts[PASSED]:>8}{counts[FAILED]:>8}"
            f"{counts[SKIPPED]:>9}  {calls}"
        )
    lines.append("")
    if coverage is None:
        lines.append("Endpoint coverage: unknown (the OpenAPI document could not be read)")
    else:
        shown = f"{percent:.0f}" if complete or not called else f"{percent:.1f}"
        lines.append(f"Endpoint coverage: {called}/{operations} operations ({shown}%)")
        lines += [f"  NOT CALLED: {op.method} {op.template}  [{op.group}]" for op in missing]
    failures = [r for r in runner.results if r.status == FAILED]
    if failures:
        lines.append("\nFailed checks:")
        lines += [f"  [{r.group}] {r.name}\n      {r.error}" for r in failures]
    lines += ["", ("PASSED" if ok else "FAILED").center(70), rule]
    print("\n".join(lines), flush=True)

    counts_by_call = (
        {f"{m} {t}": n for (m, t), n in sorted(coverage.calls.items())} if coverage else {}
    )
    outside = coverage.outside.items() if coverage else []
    return {
        "ok": ok,
        "base_url": base_url,
        "database": database,
        "finished_at": now_utc().isoformat(),
        "totals": {
            "checks": total,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "duration_seconds": round(duration, 3),
            "success_rate_percent": round(rate, 2),
        },
        "groups": groups,
        "coverage": {
            "operations": operations,
            "called": called,
            "percent": round(percent, 2),
            "complete": complete,
            "missing": [f"{op.method} {op.template}" for op in missing],
            "calls": counts_by_call,
            "requests_outside_the_document": {f"{m} {p}": n for (m, p), n in sorted(outside)},
        },
        "checks": [
            {
                "name": r.name,
                "group": r.group,
                "status": r.status,
                "ok": r.status != FAILED,
                "error": r.error,
                "duration_seconds": round(r.duration, 4),
            }
            for r in runner.results
        ],
    }
