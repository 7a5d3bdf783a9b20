"""The analytics report: incident volume, response times, escalation load and noise, for a range."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel


class SeverityCounts(BaseModel):
    critical: int
    high: int
    medium: int
    low: int
    info: int


class IncidentTotals(BaseModel):
    total: int
    by_severity: SeverityCounts


class DayCounts(SeverityCounts):
    date: date
    total: int


class ResponseTime(BaseModel):
    count: int
    mean_seconds: float | None
    p90_seconds: float | None


class EscalationSteps(BaseModel):
    fired: int
    executed: int
    failed: int
    skipped: int


class UserPages(BaseModel):
    user_id: int
    full_name: str
    pages: int
    incidents: int


class ServiceNoise(BaseModel):
    service_id: int
    name: str
    incidents: int
    alerts: int


class DedupKeyNoise(BaseModel):
    service_id: int | None
    dedup_key: str
    incidents: int
    alerts: int


class IncidentAnalytics(BaseModel):
    start: datetime
    end: datetime
    service_id: int | None
    incidents: IncidentTotals
    opened_by_day: list[DayCounts]
    time_to_acknowledge: ResponseTime
    time_to_resolve: ResponseTime
    escalation_steps: EscalationSteps
    pages_by_user: list[UserPages]
    noisiest_services: list[ServiceNoise]
    noisiest_dedup_keys: list[DedupKeyNoise]
