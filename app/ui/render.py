"""Templates: Jinja2 with autoescaping everywhere, and the filters the pages share."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, pass_context
from starlette.responses import HTMLResponse

from app import __version__
from app.ui.auth import CSRF_FIELD, CSRF_HEADER, Browser
from app.ui.charts import format_duration

HERE = Path(__file__).parent
STATIC = HERE / "static"
HTMX = "htmx-2.0.11.min.js"

templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def zone_of(browser: Browser | None) -> tzinfo:
    """The signed-in user's time zone (UTC before sign-in, or for a zone this system lacks)."""
    if browser is None or browser.timezone == "UTC":
        return UTC
    try:
        return ZoneInfo(browser.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America", a directory
        return UTC


def in_zone(value: datetime, zone: tzinfo) -> str:
    """A moment in a time zone, to the minute, with the zone's abbreviation."""
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


@pass_context
def when(context: Mapping[str, Any], value: datetime | None) -> str:
    """A moment in the reader's time zone (the `<time datetime>` around it carries the exact
    UTC one)."""
    return "—" if value is None else in_zone(value, context.get("zone", UTC))


def since(value: datetime | None, now: datetime) -> str:
    """How long ago, in the largest unit that fits: `4 min`, `3 h 10 min`, `2 d 5 h`."""
    if value is None:
        return "—"
    seconds = int((now - value).total_seconds())
    if seconds < 0:
        return "in " + format_duration(-seconds)
    return format_duration(seconds) + " ago"


templates.env.filters["when"] = when
templates.env.filters["duration"] = format_duration


def _assets_version() -> str:
    """A digest of the console's own files: their URLs change whenever one does, so browsers
    may cache them for a day (app.core.security_headers) and still get a new build at once."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


templates.env.globals.update(
    htmx=HTMX, version=_assets_version(), csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER
)


def page(
    request: Request,
    name: str,
    *,
    browser: Browser | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A whole page (htmx swaps what it asked for out of it: `hx-select`)."""
    now = request.app.state.clock.now()
    context.update(
        browser=browser,
        zone=zone_of(browser),
        now=now,
        since=lambda value: since(value, now),
        path=request.url.path,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)
