from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from app.alerts.sources import KINDS
from app.core.schemas import PartialUpdate, RequestModel, ResponseModel


def _registered(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return kind


# The alert sources registered in app/alerts/sources/.
Kind = Annotated[
    str,
    AfterValidator(_registered),
    Field(description="The alert source", json_schema_extra={"enum": list(KINDS)}),
]


class IntegrationCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Kind

    model_config = {"json_schema_extra": {"examples": [{"name": "prod alertmanager",
                                                         "kind": "alertmanager"}]}}  # fmt: skip


class IntegrationUpdate(PartialUpdate):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class IntegrationRead(ResponseModel):
    id: int
    service_id: int
    name: str
    kind: Kind
    key: str | None = Field(
        default=None, description="The key: shown in full on create and rotate only, else null."
    )
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
