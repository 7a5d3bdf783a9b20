"""Grafana unified alerting's webhook contact point: Alertmanager's envelope (see
app/alerts/sources/alertmanager.py for the fields read and the severity table)."""

from __future__ import annotations

from app.alerts.source import Source
from app.alerts.sources.alertmanager import SEVERITY, parse

SOURCE = Source(
    kind="grafana",
    name="Grafana",
    summary="Grafana unified alerting's webhook contact point: one incident per alert fingerprint.",
    parse=parse,
    severities=SEVERITY,
    schema={"type": "object", "required": ["alerts"],
            "properties": {"alerts": {"type": "array", "items": {"type": "object"}}}},
    example={"version": "1", "status": "firing",
             "alerts": [{"status": "firing", "fingerprint": "a1b2c3",
                         "labels": {"alertname": "CPU"},
                         "annotations": {"summary": "CPU high"}}]},
)  # fmt: skip
