"""Every timeline entry type is labelled, has its builder, and is written by something: the
console's labels and the API's descriptions come from the same list as what the code writes."""

from __future__ import annotations

import ast
import inspect
from datetime import UTC, datetime
from pathlib import Path

from app.core.actors import Actor
from app.incidents import timeline
from app.incidents.timeline import EntryType
from app.ui.incidents import ENTRY_LABELS

APP = Path(__file__).resolve().parents[2] / "app"


def written_types() -> set[str]:
    """The builders called as `timeline.<type>(…)` anywhere in app/ but the timeline itself."""
    called: set[str] = set()
    for path in APP.rglob("*.py"):
        if path.name == "timeline.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "timeline"
            ):
                called.add(node.func.attr)
    return called


def test_every_type_has_a_label_and_a_description():
    for kind in EntryType:
        assert kind.label.strip() and kind.description.strip(), kind
    assert len({kind.label for kind in EntryType}) == len(EntryType), "two types read the same"


def test_every_type_has_one_builder_that_makes_its_type():
    for kind in EntryType:
        builder = getattr(timeline, kind.value, None)
        assert callable(builder), f"no builder for {kind}"
        parameters = inspect.signature(builder).parameters
        assert "incident_id" in parameters and "now" in parameters


def test_every_type_has_a_writer_and_every_writer_a_type():
    written = written_types()
    builders = {kind.value for kind in EntryType}
    assert builders - written == set(), "entry types nothing writes (labelled, never written)"
    helpers = {"record", "type_of"}
    assert written - builders - helpers == set(), "written through something that is not a type"


def test_the_console_labels_every_type_from_the_same_list():
    assert {kind.value: kind.label for kind in EntryType} == ENTRY_LABELS


def test_the_way_a_person_acted_is_kept_in_the_entry():
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    person = Actor("user", 7, "Ann")
    by_text = timeline.resolved(
        1, actor=Actor("user", 7, "Ann", via="sms"), now=now, previous="triggered", note="db back"
    )
    assert by_text["data"] == {"from": "triggered", "note": "db back", "via": "sms"}
    assert (by_text["actor_type"], by_text["actor_id"], by_text["actor_name"]) == ("user", 7, "Ann")
    assert "via" not in timeline.acknowledged(1, actor=person, now=now, note=None)["data"]
