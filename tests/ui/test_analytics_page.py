"""The analytics page: the figures of the hand-computed data set of tests/analytics, drawn."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tests.analytics.test_analytics import at, world  # noqa: F401 (the data set, a fixture)

SVG = re.compile(r"<svg\b.*?</svg>", re.S)


def stat(html: str, name: str) -> str:
    found = re.search(rf'<li data-stat="{name}">(.*?)</li>', html, re.S)
    assert found, name
    return re.sub(r"<[^>]+>", "", found.group(1)).split()


def bars(svg: str) -> list[tuple[str, str]]:
    tree = ET.fromstring(svg)  # noqa: S314
    labels = [
        t.text
        for t in tree.iter("{http://www.w3.org/2000/svg}text")
        if t.get("class") == "bar-label"
    ]
    values = [
        t.text
        for t in tree.iter("{http://www.w3.org/2000/svg}text")
        if t.get("class") == "bar-value"
    ]
    return list(zip(labels, values, strict=True))


async def test_the_page_shows_the_hand_computed_figures(harness, signed_in, user, world):  # noqa: F811
    # The 7 days ending at 2026-01-04T00:00Z: i1–i6 and i8 (a microsecond before Jan 1), not i7.
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    answer = await browser.get("/ui/analytics?days=7")
    assert answer.status_code == 200
    html = answer.text
    assert stat(html, "opened") == ["Incidents", "opened", "7"]
    # Acknowledged 60, 120.5, 300, 30 s: mean 127.6 s, p90 300 s. Resolved 600, 1200, 1800, 90 s:
    # mean 922.5 s, p90 1800 s (worked out in tests/analytics/test_analytics.py).
    assert stat(html, "mtta")[:9] == [
        "Time",
        "to",
        "acknowledge",
        "2",
        "min",
        "mean",
        "·",
        "p90",
        "5",
    ]
    assert stat(html, "mttr")[:9] == [
        "Time",
        "to",
        "resolve",
        "15",
        "min",
        "mean",
        "·",
        "p90",
        "30",
    ]
    assert "(4 acknowledged)" in html and "(4 resolved)" in html
    assert stat(html, "steps") == [
        "Escalation",
        "steps",
        "fired",
        "5",
        "3",
        "paged",
        "·",
        "1",
        "skipped",
        "·",
        "1",
        "failed",
    ]
    charts = SVG.findall(html)
    assert len(charts) == 3
    # Pages per person, and the services by incidents (search has i8 here too: 3, as checkout).
    assert bars(charts[1]) == [("Ana Oncall", "3"), ("Ben Oncall", "1"), ("Cleo Oncall", "1")]
    assert sorted(bars(charts[2])) == [("checkout", "3"), ("search", "3")]
    # One column segment per severity present on each day, 7 days drawn.
    opened = ET.fromstring(charts[0])  # noqa: S314
    titles = [t.text for t in opened.iter("{http://www.w3.org/2000/svg}title")]
    assert "2026-01-01: 1 critical" in titles and "2026-01-02: 1 medium" in titles
    assert "2025-12-31: 1 high" in titles  # i8
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(\d+)</td><td>(\d+)</td></tr>", html)
    assert rows == [("db-down", "2", "8"), ("slow-query", "2", "3"), ("disk", "1", "10")]


async def test_one_service_and_bad_choices(harness, signed_in, user, world):  # noqa: F811
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    search = world["search"].id
    html = (await browser.get(f"/ui/analytics?days=7&service={search}")).text
    assert stat(html, "opened") == ["Incidents", "opened", "3"]  # i3, i5, i8
    for query in ("days=5", "days=abc", "service=x"):
        answer = await browser.get(f"/ui/analytics?{query}")
        assert answer.status_code == 400, query


async def test_an_empty_range_says_so(harness, signed_in, user):
    browser, _ = await signed_in(user)
    html = (await browser.get("/ui/analytics")).text
    assert "No incidents in this range" in html and "Nothing in this range" in html
    assert stat(html, "mtta")[3] == "—"
