"""Prometheus Alertmanager's webhook (version 4); Grafana unified alerting sends the same envelope
(app/alerts/sources/grafana.py).

One incident per alert `fingerprint`; a `resolved` alert resolves its incident. The title is the
`summary` annotation, else the `alertname` label; the description the `description` annotation.

| `severity` label | incident severity |
|---|---|
| critical, page, p1 | critical |
| error, high, major, p2 | high |
| warning, warn, medium, minor, p3 (and no label) | medium |
| low, p4 | low |
| info, informational, none, p5 | info |
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from app.alerts.alert import Alert
from app.alerts.source import Source
from app.incidents.models import Severity

SEVERITY = {
    **dict.fromkeys(("critical", "page", "p1"), Severity.critical),
    **dict.fromkeys(("error", "high", "major", "p2"), Severity.high),
    **dict.fromkeys(("warning", "warn", "medium", "minor", "p3"), Severity.medium),
    **dict.fromkeys(("low", "p4"), Severity.low),
    **dict.fromkeys(("info", "informational", "none", "p5"), Severity.info),
}
MAX_ALERTS = 1000


class InvalidPayload(ValueError):
    pass


def severity_of(labels: dict[str, Any]) -> Severity:
    return SEVERITY.get(str(labels.get("severity", "")).strip().lower(), Severity.medium)


def parse(body: Any) -> list[Alert]:
    """The alerts of a webhook call, each noting how many the sender left out (truncated)."""
    alerts, truncated = parse_envelope(body)
    if truncated:
        for alert in alerts:
            alert.raw = {**alert.raw, "truncated_alerts": truncated}
    return alerts


def parse_envelope(body: Any) -> tuple[list[Alert], int]:
    """The alerts of a webhook call and how many Alertmanager says it left out (truncated)."""
    if not isinstance(body, dict):
        raise InvalidPayload("the body must be a JSON object")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidPayload("'alerts' must be a non-empty array")
    if len(alerts) > MAX_ALERTS:
        raise InvalidPayload(f"at most {MAX_ALERTS} alerts per call")
    truncated = body.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise InvalidPayload("'truncatedAlerts' must be a non-negative integer")
    return [_alert(item, index) for index, item in enumerate(alerts)], truncated


def _alert(item: Any, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(item, dict):
        raise InvalidPayload(f"{where} must be an object")
    status = item.get("status")
    if status not in ("firing", "resolved"):
        raise InvalidPayload(f"{where}.status must be firing or resolved")
    labels = item.get("labels") or {}
    annotations = item.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        raise InvalidPayload(f"{where}.labels and .annotations must be objects")
    fingerprint = item.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise InvalidPayload(f"{where}.fingerprint must be a string")
    if not fingerprint:
        # Older senders: the same alert always has the same labels.
        canonical = json.dumps(labels, sort_keys=True, default=str)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    title = str(annotations.get("summary") or labels.get("alertname") or fingerprint)
    links = {
        name: value
        for name, value in (
            ("generator_url", item.get("generatorURL")),
            ("runbook_url", annotations.get("runbook_url")),
            ("dashboard_url", item.get("dashboardURL")),
            ("panel_url", item.get("panelURL")),
            ("silence_url", item.get("silenceURL")),
        )
        if isinstance(value, str) and value
    }
    return Alert(
        action="trigger" if status == "firing" else "resolve",
        dedup_key=fingerprint[:255],
        title=title,
        description=str(annotations.get("description", ""))[:10_000],
        severity=severity_of(labels),
        labels=labels,
        details={"annotations": annotations, "links": links,
                 "starts_at": item.get("startsAt"), "ends_at": item.get("endsAt")},
        raw=item,
    )  # fmt: skip


SOURCE = Source(
    kind="alertmanager",
    name="Prometheus Alertmanager",
    summary="Prometheus Alertmanager's webhook (version 4): one incident per alert fingerprint.",
    parse=parse,
    severities=SEVERITY,
    schema={"type": "object", "required": ["alerts"],
            "properties": {"alerts": {"type": "array", "items": {"type": "object"}},
                           "truncatedAlerts": {"type": "integer"}}},
    example={"version": "4", "status": "firing", "truncatedAlerts": 0,
             "alerts": [{"status": "firing", "fingerprint": "ceb2e74bf3eee4ae",
                         "labels": {"alertname": "DiskSpaceLow", "severity": "critical"},
                         "annotations": {"summary": "Disk almost full on db-1"}}]},
)  # fmt: skip
