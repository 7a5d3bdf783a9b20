"""The analytics charts, read back as XML: geometry, labels, escaping, accessibility."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import date, timedelta
from itertools import pairwise

import pytest
from markupsafe import Markup

from app.analytics.schemas import DayCounts
from app.incidents.models import Severity
from app.ui.charts import (
    NO_INCIDENTS,
    NOTHING,
    SEVERITY_COLOURS,
    format_duration,
    horizontal_bars,
    nice_ticks,
    opened_by_day,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = ["<script>alert(1)</script>", "\"&'", "a]]><b>&amp;</b>", "null\x00 and escape\x1b"]


def parse(markup: str) -> ET.Element:
    # Our own output, no DTD or entities in it: the standard parser is safe here (S314 is about
    # untrusted XML), and it is strict, which is the point.
    return ET.fromstring(markup)  # noqa: S314


def find(root: ET.Element, tag: str, css_class: str | None = None) -> list[ET.Element]:
    found = root.iter(SVG + tag)
    return [e for e in found if css_class is None or e.get("class") == css_class]


def num(element: ET.Element, attribute: str) -> float:
    return float(element.attrib[attribute])


def day(when: date, **counts: int) -> DayCounts:
    full = {severity: counts.get(severity, 0) for severity in SEVERITY_COLOURS}
    return DayCounts(date=when, total=sum(full.values()), **full)


def segments(root: ET.Element) -> list[ET.Element]:
    """The column segments (the legend's swatches sit inside its own group)."""
    legend = {id(e) for g in find(root, "g", "legend") for e in g}
    return [r for r in find(root, "rect") if id(r) not in legend]


def baseline(root: ET.Element) -> ET.Element:
    return find(root, "line", "axis")[0]


def range_of(start: date, count: int) -> list[DayCounts]:
    return [day(start + timedelta(i), high=i % 5, info=1) for i in range(count)]


def text_width(text: str, font_size: float) -> float:
    # An independent, slightly narrow estimate: labels the chart keeps apart must be apart
    # by at least this much.
    return len(text) * 0.6 * font_size


class TestOpenedByDay:
    def test_segment_heights_are_proportional_to_counts(self) -> None:
        root = parse(
            opened_by_day(
                [
                    day(date(2026, 11, 3), critical=4),
                    day(date(2026, 11, 4), critical=2),
                    day(date(2026, 11, 5), high=3, low=6),
                ]
            )
        )
        four, two, three, six = segments(root)
        assert num(four, "height") == pytest.approx(2 * num(two, "height"), abs=0.02)
        assert num(six, "height") == pytest.approx(2 * num(three, "height"), abs=0.02)
        assert num(three, "height") == pytest.approx(1.5 * num(two, "height"), abs=0.02)

    def test_segments_stack_from_critical_at_the_bottom_to_info_at_the_top(self) -> None:
        root = parse(
            opened_by_day([day(date(2026, 11, 3), critical=1, high=2, medium=3, low=4, info=5)])
        )
        drawn = segments(root)
        assert [r.get("class") for r in drawn] == [f"sev-{s}" for s in SEVERITY_COLOURS]
        # Each segment sits on the one below it, the first on the x axis.
        bottom = num(baseline(root), "y1")
        for rect in drawn:
            assert num(rect, "y") + num(rect, "height") == pytest.approx(bottom, abs=0.02)
            bottom = num(rect, "y")
        assert [r.get("fill") for r in drawn] == list(SEVERITY_COLOURS.values())

    def test_each_segment_has_a_tooltip_and_empty_severities_draw_nothing(self) -> None:
        root = parse(opened_by_day([day(date(2026, 11, 3), critical=4, low=1)]))
        titles = [r.find(SVG + "title") for r in segments(root)]
        assert [t.text for t in titles if t is not None] == [
            "2026-11-03: 4 critical",
            "2026-11-03: 1 low",
        ]

    @pytest.mark.parametrize("largest", [1, 2, 3, 4, 5, 7, 10, 13, 21, 99, 101, 250, 2500])
    def test_the_axis_has_3_to_5_round_ticks_reaching_the_tallest_column(
        self, largest: int
    ) -> None:
        root = parse(
            opened_by_day([day(date(2026, 1, 1), medium=1), day(date(2026, 1, 2), high=largest)])
        )
        ticks = [int(t.text or "") for t in find(root, "text", "tick")]
        assert 3 <= len(ticks) <= 5
        assert ticks[0] == 0
        steps = {b - a for a, b in pairwise(ticks)}
        assert len(steps) == 1
        (step,) = steps
        assert step / 10 ** math.floor(math.log10(step)) in (1, 2, 5)
        assert ticks[-1] >= largest
        # The top tick is drawn at the top of the tallest column.
        top_label = find(root, "text", "tick")[-1]
        tallest = segments(root)[-1]
        assert num(tallest, "y") >= num(top_label, "y") - 0.02
        if ticks[-1] == largest:
            assert num(tallest, "y") == pytest.approx(num(top_label, "y"), abs=0.02)

    def test_nice_ticks_refuses_a_maximum_of_zero(self) -> None:
        assert nice_ticks(1) == [0, 1, 2]
        with pytest.raises(ValueError):
            nice_ticks(0)

    def test_a_year_of_days_gets_monthly_labels_that_do_not_overlap(self) -> None:
        root = parse(opened_by_day(range_of(date(2026, 1, 1), 365)))
        labels = find(root, "text", "x-label")
        assert 6 <= len(labels) <= 14
        assert [t.text for t in labels][:3] == ["Jan 2026", "Feb", "Mar"]
        assert len(segments(root)) == 2 * 365 - 365 // 5  # high is 0 one day in five

    @pytest.mark.parametrize("count", [1, 2, 7, 14, 30, 31, 45, 60, 90, 120, 180, 270, 365, 366])
    @pytest.mark.parametrize("start", [date(2026, 1, 1), date(2026, 11, 17), date(2027, 2, 28)])
    def test_x_labels_never_overlap_and_stay_inside(self, count: int, start: date) -> None:
        root = parse(opened_by_day(range_of(start, count)))
        font_size = num(root, "font-size")
        width = float((root.get("viewBox") or "").split()[2])
        labels = [(num(t, "x"), t.text or "") for t in find(root, "text", "x-label")]
        assert labels, "every range gets at least one label"
        assert len(labels) <= 14
        for x, text in labels:
            assert x - text_width(text, font_size) / 2 >= 0
            assert x + text_width(text, font_size) / 2 <= width
        for (left, a), (right, b) in pairwise(labels):
            assert right - left >= (text_width(a, font_size) + text_width(b, font_size)) / 2

    def test_short_ranges_label_every_day(self) -> None:
        root = parse(opened_by_day(range_of(date(2026, 11, 1), 7)))
        assert [t.text for t in find(root, "text", "x-label")] == [
            "Nov 1",
            "Nov 2",
            "Nov 3",
            "Nov 4",
            "Nov 5",
            "Nov 6",
            "Nov 7",
        ]

    def test_columns_stay_inside_the_plot_and_apart(self) -> None:
        for count in (1, 3, 365):
            root = parse(opened_by_day(range_of(date(2026, 1, 1), count)))
            axis = baseline(root)
            columns = sorted({(num(r, "x"), num(r, "width")) for r in segments(root)})
            assert columns[0][0] >= num(axis, "x1")
            assert columns[-1][0] + columns[-1][1] <= num(axis, "x2") + 0.01
            for (x, w), (next_x, _) in pairwise(columns):
                assert x + w < next_x

    @pytest.mark.parametrize(
        "days",
        [[], [day(date(2026, 11, 3)), day(date(2026, 11, 4))]],
        ids=["no days", "days without incidents"],
    )
    def test_no_incidents_draws_an_empty_chart_with_a_message(self, days: list[DayCounts]) -> None:
        root = parse(opened_by_day(days))
        assert [t.text for t in find(root, "text", "empty")] == [NO_INCIDENTS]
        assert segments(root) == []
        assert find(root, "text", "tick") == []
        assert len(find(root, "text", "x-label")) == len(days)

    def test_a_chart_with_incidents_has_no_empty_message(self) -> None:
        root = parse(opened_by_day([day(date(2026, 11, 3), info=1)]))
        assert find(root, "text", "empty") == []

    def test_severity_colours_cover_every_severity_with_enough_contrast(self) -> None:
        assert list(SEVERITY_COLOURS) == [s.value for s in Severity]
        for colour in SEVERITY_COLOURS.values():
            assert contrast(colour, "#ffffff") >= 3  # WCAG 1.4.11, graphics


class TestHorizontalBars:
    def test_bar_lengths_are_proportional_and_values_follow_the_bars(self) -> None:
        root = parse(
            horizontal_bars([("checkout", 12), ("search", 6), ("auth", 3)], title="T", unit="u")
        )
        bars = find(root, "rect", "bar")
        widths = [num(b, "width") for b in bars]
        assert widths[0] == pytest.approx(2 * widths[1], abs=0.02)
        assert widths[1] == pytest.approx(2 * widths[2], abs=0.02)
        assert len({num(b, "x") for b in bars}) == 1
        values = find(root, "text", "bar-value")
        assert [v.text for v in values] == ["12", "6", "3"]
        for bar, value in zip(bars, values, strict=True):
            assert num(value, "x") > num(bar, "x") + num(bar, "width")
            assert num(bar, "y") < num(value, "y") < num(bar, "y") + num(bar, "height")
        # The rows do not overlap, and the last one fits in the view box.
        assert all(a < b for a, b in pairwise(num(bar, "y") for bar in bars))
        height = float((root.get("viewBox") or "").split()[3])
        assert num(bars[-1], "y") + num(bars[-1], "height") <= height

    def test_the_longest_bar_and_its_value_fit_in_the_view_box(self) -> None:
        root = parse(horizontal_bars([("a", 123456), ("b", 1)], title="T", unit="u"))
        width = float((root.get("viewBox") or "").split()[2])
        value = find(root, "text", "bar-value")[0]
        font_size = num(root, "font-size")
        assert num(value, "x") + text_width(value.text or "", font_size) <= width

    def test_a_zero_value_draws_no_bar_but_prints_its_value(self) -> None:
        root = parse(horizontal_bars([("a", 5), ("b", 0)], title="T", unit="u"))
        assert len(find(root, "rect", "bar")) == 1
        assert [v.text for v in find(root, "text", "bar-value")] == ["5", "0"]
        root = parse(horizontal_bars([("a", 0)], title="T", unit="u"))
        assert find(root, "rect", "bar") == []

    def test_long_labels_are_cut_with_an_ellipsis_and_kept_whole_in_the_tooltip(self) -> None:
        long = "Payments gateway (EU west, primary cluster)"
        root = parse(horizontal_bars([(long, 2), ("short", 1)], title="T", unit="incidents"))
        cut, short = (t.text or "" for t in find(root, "text", "bar-label"))
        assert cut.endswith("…")
        assert long.startswith(cut[:-1])
        assert len(cut) < len(long)
        assert short == "short"
        # Right-aligned at the bars' start: the cut label must fit left of it.
        label_end = num(find(root, "text", "bar-label")[0], "x")
        assert text_width(cut, num(root, "font-size")) <= label_end
        rows = find(root, "g", "bar-row")
        assert [r.findtext(SVG + "title") for r in rows] == [
            f"{long}: 2 incidents",
            "short: 1 incidents",
        ]

    def test_hostile_names_are_escaped(self) -> None:
        items = [(name, i + 1) for i, name in enumerate(HOSTILE)]
        markup = horizontal_bars(items, title='<b>Pages</b> & "co"', unit="<i>pages</i>")
        assert "<script>" not in markup
        assert "&lt;script&gt;" in markup
        root = parse(markup)  # raises if any text broke the XML
        tags = {element.tag for element in root.iter()}
        assert tags <= {SVG + t for t in ("svg", "title", "g", "text", "rect")}
        labels = [t.text for t in find(root, "text", "bar-label")]
        # Read back as the very text, not markup (the first one cut to fit).
        assert labels[:3] == ["<script>alert(1)</scr…", *HOSTILE[1:3]]
        assert labels[3] == "null\ufffd and escape\ufffd"  # XML cannot carry these at all
        titles = [r.findtext(SVG + "title") for r in find(root, "g", "bar-row")]
        assert titles[0] == "<script>alert(1)</script>: 1 <i>pages</i>"
        assert (root.get("aria-label") or "").startswith('<b>Pages</b> & "co". <script>')

    def test_nothing_in_the_range(self) -> None:
        root = parse(horizontal_bars([], title="Pages per user", unit="pages"))
        assert [t.text for t in find(root, "text", "empty")] == [NOTHING]
        assert find(root, "rect") == []

    def test_negative_values_are_refused(self) -> None:
        with pytest.raises(ValueError):
            horizontal_bars([("a", -1)], title="T", unit="u")


CHARTS = {
    "columns": lambda: opened_by_day(range_of(date(2026, 1, 1), 40)),
    "no columns": lambda: opened_by_day([]),
    "bars": lambda: horizontal_bars([(HOSTILE[0], 3), ("b", 1)], title="Noisiest", unit="alerts"),
    "no bars": lambda: horizontal_bars([], title="Noisiest", unit="alerts"),
}


@pytest.mark.parametrize("chart", CHARTS.values(), ids=CHARTS.keys())
def test_every_chart_is_an_accessible_scalable_svg_without_inline_code(
    chart: Callable[[], Markup],
) -> None:
    markup = chart()
    assert markup == chart()  # deterministic
    root = parse(markup)
    assert root.tag == SVG + "svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    assert root[0].tag == SVG + "title"
    assert root[0].text == root.get("aria-label")
    assert root.get("width") == "100%"
    assert "height" not in root.attrib  # the view box's ratio decides it
    assert len((root.get("viewBox") or "").split()) == 4
    for element in root.iter():
        assert element.tag not in {SVG + "script", SVG + "foreignObject", SVG + "style"}
        for attribute in element.attrib:
            assert not attribute.lower().startswith("on")
            assert attribute not in {"style", "href", "{http://www.w3.org/1999/xlink}href"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 s"),
        (0.4, "0 s"),
        (45, "45 s"),
        (59.4, "59 s"),
        (59.6, "1 min"),  # rounds to 60 s, which is a minute
        (90, "2 min"),  # half up, not to even
        (150, "3 min"),
        (720, "12 min"),
        (3569, "59 min"),
        (3599, "1 h"),
        (3 * 3600, "3 h"),
        (3 * 3600 + 20 * 60, "3 h 20 min"),
        (3 * 3600 + 20 * 60 + 29, "3 h 20 min"),
        (86_399, "1 d"),
        (2 * 86_400 + 4 * 3600, "2 d 4 h"),
        (2 * 86_400 + 4 * 3600 + 1799, "2 d 4 h"),
        (30 * 86_400, "30 d"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_format_duration_refuses_what_is_not_a_duration(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


def contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
