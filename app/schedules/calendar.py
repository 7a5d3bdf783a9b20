"""iCal (RFC 5545) feeds of on-call shifts, for calendar apps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from icalendar import Calendar
from icalendar import Event as VEvent

from app.core.text import flattened

PRODUCT = "-//Incident Management System//On-call schedules//EN"


@dataclass(frozen=True)
class Event:
    uid: str
    summary: str
    start: datetime
    end: datetime


def feed(*, name: str, events: Sequence[Event], now: datetime) -> bytes:
    calendar = Calendar()
    calendar.add("prodid", PRODUCT)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    # Names are one line on input; rows written before that rule may not be: a property value
    # with a bare CR or LF would end the property early (or fail to serialise at all).
    calendar.add("x-wr-calname", flattened(name))
    for event in events:
        entry = VEvent()
        entry.add("uid", f"{event.uid}@incident-management")
        entry.add("summary", flattened(event.summary))
        entry.add("dtstart", event.start)
        entry.add("dtend", event.end)
        entry.add("dtstamp", now)
        calendar.add_component(entry)
    data: bytes = calendar.to_ical()
    return data
