"""Charts for the analytics page, drawn on the server as inline SVG.

Pure functions from the analytics report to markup: no JavaScript, no external assets, and no
`style=` attributes or event handlers, so that the page runs under a strict Content Security
Policy. Colours are presentation attributes (`fill=`) next to class names, so the page's own
stylesheet can restyle them (a CSS rule beats a presentation attribute). Every text drawn from
the data (names, dedup keys) is escaped, and characters XML forbids are replaced, so that a
hostile name stays text and the SVG still parses. Each chart has a fixed `viewBox` and
`width="100%"`: it scales to the width of its container, a phone's included.

Text widths are estimated (no font metrics on the server) with a deliberately wide average
character, so that labels judged not to overlap do not overlap in the browser either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import date
from itertools import pairwise

from markupsafe import Markup, escape

from app.analytics.schemas import DayCounts

# Bottom of a column to its top. Colours have at least 3:1 contrast against white (WCAG's
# figure for graphics) and differ in lightness as well as hue, for colour-blind readers.
SEVERITY_COLOURS: dict[str, str] = {
    "critical": "#9f1239",
    "high": "#c2410c",
    "medium": "#a87b00",
    "low": "#2563eb",
    "info": "#6b7280",
}
SEVERITIES = tuple(SEVERITY_COLOURS)

FONT_FAMILY = "system-ui, sans-serif"
FONT_SIZE = 11
CHAR_WIDTH = 0.65  # of the font size: wider than the average glyph, on purpose
LABEL_GAP = 6  # the least room between two x labels
AXIS_COLOUR = "#6b7280"
GRID_COLOUR = "#e5e7eb"
BAR_COLOUR = "#2563eb"

NO_INCIDENTS = "No incidents in this range"
NOTHING = "Nothing in this range"

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Column chart geometry (viewBox units).
COLUMNS_WIDTH = 640
COLUMNS_HEIGHT = 260
PLOT_LEFT = 44
PLOT_RIGHT = COLUMNS_WIDTH - 16
PLOT_TOP = 36
PLOT_BOTTOM = COLUMNS_HEIGHT - 28
MAX_COLUMN_WIDTH = 40

# Horizontal bar geometry.
BARS_WIDTH = 640
BAR_LABEL_WIDTH = 180  # labels end here (right-aligned), bars start just after
ROW_HEIGHT = 24
BAR_HEIGHT = 16
BAR_FONT_SIZE = 12

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def opened_by_day(days: Sequence[DayCounts]) -> Markup:
    """A stacked column chart of incidents opened per day: one column a day, critical at the
    bottom and info at the top, a legend, a y axis of 3 to 5 round ticks, x labels thinned so
    they never overlap, and a tooltip (`<title>`) on each segment."""
    largest = max((_day_total(day) for day in days), default=0)
    if days:
        label = (
            f"Incidents opened per day, {days[0].date.isoformat()} to {days[-1].date.isoformat()}:"
            f" {sum(_day_total(day) for day in days)} in total, at most {largest} in a day"
        )
    else:
        label = "Incidents opened per day: none"
    parts = [_svg_open(COLUMNS_WIDTH, COLUMNS_HEIGHT, label, "chart chart-opened-by-day")]
    parts.append(_legend())

    ticks = nice_ticks(largest) if largest > 0 else []
    scale = (PLOT_BOTTOM - PLOT_TOP) / ticks[-1] if ticks else 0.0
    for tick in ticks:
        y = PLOT_BOTTOM - tick * scale
        if tick:
            parts.append(
                f'<line class="grid" x1="{PLOT_LEFT}" y1="{_n(y)}" x2="{PLOT_RIGHT}"'
                f' y2="{_n(y)}" stroke="{GRID_COLOUR}"/>'
            )
        parts.append(
            f'<text class="tick" x="{PLOT_LEFT - 6}" y="{_n(y)}" dy="0.32em"'
            f' text-anchor="end" fill="currentColor">{tick}</text>'
        )

    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(days), 1)
    column = min(slot * 0.8, MAX_COLUMN_WIDTH)
    for index, day in enumerate(days):
        parts.extend(_column(day, PLOT_LEFT + index * slot + (slot - column) / 2, column, scale))

    parts.append(
        f'<line class="axis" x1="{PLOT_LEFT}" y1="{PLOT_BOTTOM}" x2="{PLOT_RIGHT}"'
        f' y2="{PLOT_BOTTOM}" stroke="{AXIS_COLOUR}"/>'
    )
    for x, text in _x_labels([day.date for day in days], slot):
        parts.append(
            f'<line class="axis" x1="{_n(x)}" y1="{PLOT_BOTTOM}" x2="{_n(x)}"'
            f' y2="{PLOT_BOTTOM + 4}" stroke="{AXIS_COLOUR}"/>'
            f'<text class="x-label" x="{_n(x)}" y="{PLOT_BOTTOM + 16}" text-anchor="middle"'
            f' fill="currentColor">{_text(text)}</text>'
        )
    if largest == 0:
        parts.append(
            _message(NO_INCIDENTS, (PLOT_LEFT + PLOT_RIGHT) / 2, (PLOT_TOP + PLOT_BOTTOM) / 2)
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every value in it went through _text or _n)


def horizontal_bars(items: Sequence[tuple[str, int]], *, title: str, unit: str) -> Markup:
    """Labelled horizontal bars in the order given (pages per user, noisiest services): long
    labels cut with an ellipsis (the whole label stays in the row's tooltip), each value
    printed at the end of its bar. `title` names the chart for screen readers and `unit` says
    what the values count ("pages", "incidents"): both appear in the tooltips and the
    accessible name, not on the bars."""
    if any(value < 0 for _, value in items):
        raise ValueError("bar values are counts and cannot be negative")
    if items:
        listing = "; ".join(f"{label}: {value} {unit}" for label, value in items)
        label = f"{title}. {listing}"
    else:
        label = f"{title}: {NOTHING.lower()}"
    height = max(len(items) * ROW_HEIGHT + 8, 48)
    parts = [_svg_open(BARS_WIDTH, height, label, "chart chart-bars", font_size=BAR_FONT_SIZE)]
    if not items:
        parts.append(_message(NOTHING, BARS_WIDTH / 2, height / 2))
        parts.append("</svg>")
        return Markup("".join(parts))  # noqa: S704 (escaped in _svg_open and _message)

    largest = max(value for _, value in items)
    value_room = _text_width(str(largest), BAR_FONT_SIZE) + 12
    bar_left = BAR_LABEL_WIDTH + 8
    bar_room = BARS_WIDTH - bar_left - value_room
    max_chars = int((BAR_LABEL_WIDTH - 4) / (BAR_FONT_SIZE * CHAR_WIDTH))
    for index, (name, value) in enumerate(items):
        top = 4 + index * ROW_HEIGHT
        middle = top + ROW_HEIGHT / 2
        length = bar_room * value / largest if largest else 0.0
        parts.append(
            f'<g class="bar-row"><title>{_text(name)}: {value} {_text(unit)}</title>'
            f'<text class="bar-label" x="{BAR_LABEL_WIDTH}" y="{_n(middle)}" dy="0.32em"'
            f' text-anchor="end" fill="currentColor">{_text(truncate(name, max_chars))}</text>'
        )
        if length > 0:
            parts.append(
                f'<rect class="bar" x="{bar_left}" y="{_n(middle - BAR_HEIGHT / 2)}"'
                f' width="{_n(length)}" height="{BAR_HEIGHT}" fill="{BAR_COLOUR}"/>'
            )
        parts.append(
            f'<text class="bar-value" x="{_n(bar_left + length + 6)}" y="{_n(middle)}"'
            f' dy="0.32em" fill="currentColor">{value}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every value in it went through _text or _n)


def format_duration(seconds: float | None) -> str:
    """A response time as people read it: "—" (none measured), "45 s", "12 min", "3 h 20 min",
    "2 d 4 h". Rounded half up to the last unit shown, then carried over: 59.6 s is "1 min",
    not "60 s"."""
    if seconds is None:
        return "—"
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    whole_seconds = _half_up(seconds)
    if whole_seconds < 60:
        return f"{whole_seconds} s"
    minutes = _half_up(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(_half_up(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def nice_ticks(largest: int) -> list[int]:
    """3 to 5 ticks from 0, a step of 1, 2 or 5 × 10ⁿ, the last one at or above `largest`."""
    if largest <= 0:
        raise ValueError("ticks need a positive maximum")
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            step = multiple * magnitude
            count = math.ceil(largest / step)
            if count <= 4:
                # The step before this one needed 5+ intervals, so here there are at least 2,
                # except for a maximum of 1, which gets 0, 1, 2.
                return [i * step for i in range(max(count, 2) + 1)]
        magnitude *= 10


def truncate(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` characters, the last of them an ellipsis, when it is longer."""
    if len(text) <= max_chars:
        return text
    return text[: max(max_chars - 1, 0)].rstrip() + "…"


def _column(day: DayCounts, x: float, width: float, scale: float) -> list[str]:
    """One day's segments, bottom up; a severity with no incidents draws nothing."""
    parts = []
    bottom = float(PLOT_BOTTOM)
    for severity in SEVERITIES:
        count: int = getattr(day, severity)
        if count <= 0:
            continue
        height = count * scale
        bottom -= height
        parts.append(
            f'<rect class="sev-{severity}" x="{_n(x)}" y="{_n(bottom)}" width="{_n(width)}"'
            f' height="{_n(height)}" fill="{SEVERITY_COLOURS[severity]}">'
            f"<title>{day.date.isoformat()}: {count} {severity}</title></rect>"
        )
    return parts


def _day_total(day: DayCounts) -> int:
    # Summed from the severities rather than read from `total`, so that the column's height
    # and the axis always agree with the segments drawn.
    return sum(max(getattr(day, severity), 0) for severity in SEVERITIES)


def _legend() -> str:
    parts = ['<g class="legend">']
    x = float(PLOT_LEFT)
    for severity in SEVERITIES:
        name = severity.capitalize()
        parts.append(
            f'<rect class="sev-{severity}" x="{_n(x)}" y="8" width="10" height="10"'
            f' fill="{SEVERITY_COLOURS[severity]}"/>'
            f'<text x="{_n(x + 14)}" y="13" dy="0.32em" fill="currentColor">{name}</text>'
        )
        x += 14 + _text_width(name, FONT_SIZE) + 14
    parts.append("</g>")
    return "".join(parts)


def _x_labels(dates: Sequence[date], slot: float) -> list[tuple[float, str]]:
    """The x labels as (centre, text): the densest of every day, every other day, Mondays,
    every other Monday, the 1st of each month, of each quarter, of each year, whose labels fit
    without overlapping; the first day alone when none does."""
    if not dates:
        return []

    def centre(index: int) -> float:
        return PLOT_LEFT + (index + 0.5) * slot

    def day_text(day: date, first: bool) -> str:
        return f"{MONTHS[day.month - 1]} {day.day}"

    def month_text(day: date, first: bool) -> str:
        month = MONTHS[day.month - 1]
        return f"{month} {day.year}" if first or day.month == 1 else month

    mondays = [i for i, day in enumerate(dates) if day.weekday() == 0]
    strategies: list[tuple[list[int], Callable[[date, bool], str]]] = [
        (list(range(len(dates))), day_text),
        (list(range(0, len(dates), 2)), day_text),
        (mondays, day_text),
        (mondays[::2], day_text),
        ([i for i, day in enumerate(dates) if day.day == 1], month_text),
        ([i for i, day in enumerate(dates) if day.day == 1 and day.month % 3 == 1], month_text),
        ([i for i, day in enumerate(dates) if day.day == 1 and day.month == 1], month_text),
    ]
    for indices, text in strategies:
        labels = [(centre(i), text(dates[i], n == 0)) for n, i in enumerate(indices)]
        labels = [(x, t) for x, t in labels if _inside(x, t)]
        if labels and _apart(labels):
            return labels
    return [(centre(0), day_text(dates[0], True))]


def _inside(x: float, text: str) -> bool:
    half = _text_width(text, FONT_SIZE) / 2
    return x - half >= 0 and x + half <= COLUMNS_WIDTH


def _apart(labels: Sequence[tuple[float, str]]) -> bool:
    return all(
        right - left >= (_text_width(a, FONT_SIZE) + _text_width(b, FONT_SIZE)) / 2 + LABEL_GAP
        for (left, a), (right, b) in pairwise(labels)
    )


def _svg_open(
    width: int, height: int, label: str, css_class: str, *, font_size: int = FONT_SIZE
) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}"'
        f' viewBox="0 0 {width} {_n(height)}" width="100%" role="img"'
        f' aria-label="{_text(label)}" font-family="{FONT_FAMILY}" font-size="{font_size}">'
        f"<title>{_text(label)}</title>"
    )


def _message(text: str, x: float, y: float) -> str:
    return (
        f'<text class="empty" x="{_n(x)}" y="{_n(y)}" dy="0.32em" text-anchor="middle"'
        f' fill="currentColor">{_text(text)}</text>'
    )


def _text(value: str) -> str:
    """Escaped for XML text and attribute values alike; characters XML 1.0 forbids (control
    characters, lone surrogates) become U+FFFD, as escaping cannot make them valid."""
    return str(escape(_NOT_XML.sub("\ufffd", value)))


def _text_width(text: str, font_size: float) -> float:
    return len(text) * font_size * CHAR_WIDTH


def _n(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros: short, and the same text
    for the same input on every platform."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _half_up(value: float) -> int:
    # round() rounds halves to even (150 s would be "2 min", 90 s also "2 min").
    return math.floor(value + 0.5)
