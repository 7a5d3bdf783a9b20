"""The registry of alert sources: every module that declares a SOURCE gets its endpoint, its
integration kind, its place on the console's services page and in the OpenAPI document, with no
other file changed. Shown with a source that exists only in this test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.alerts.source import Source
from app.alerts.sources import KINDS, SOURCES
from app.integrations.schemas import IntegrationCreate
from tests.support.settings import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]

# A whole new source, as one would write it: a module with its parse and its SOURCE.
EXAMPLE_SOURCE = """
from typing import Any

from app.alerts.alert import Alert
from app.alerts.source import Source
from app.incidents.models import Severity

SEVERITY = {"sev1": Severity.critical, "sev2": Severity.high}


def parse(body: Any) -> list[Alert]:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ValueError("'id' must be a string")
    return [Alert(action="resolve" if body.get("ok") else "trigger", dedup_key=body["id"],
                  title=str(body.get("what", body["id"])),
                  severity=SEVERITY.get(body.get("sev"), Severity.medium), raw=body)]


SOURCE = Source(kind="example", name="Example Monitor", summary="An example monitor's alerts.",
                parse=parse, severities=SEVERITY, schema={"type": "object"},
                example={"id": "disk-1", "what": "Disk full", "sev": "sev1"})
"""

# Run in a process of its own: the registry is read when the app's modules are imported.
SCRIPT = """
import asyncio, json, re, sys
import httpx
import app.alerts.sources as registry

registry.__path__.append(sys.argv[1])
registry.SOURCES = registry._discover()
registry.KINDS = tuple(registry.SOURCES)

from app.core.config import Settings
from app.core.db import create_engine
from app.core.migrations import upgrade_connection
from app.main import create_app


async def main() -> None:
    settings = Settings(_env_file=None, database_url=sys.argv[2], environment="test",
                        secret_key=sys.argv[3], worker_in_process=False, smtp_host=None)
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await upgrade_connection(connection)
    await engine.dispose()
    app = create_app(settings)
    seen = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            await client.post("/v1/auth/signup", json={
                "email": "a@example.com", "password": "a long passphrase", "full_name": "A"})
            token = (await client.post("/v1/auth/login/access-token", data={
                "username": "a@example.com", "password": "a long passphrase"})).json()
            admin = {"Authorization": "Bearer " + token["access_token"]}
            service = (await client.post("/v1/services/", json={"name": "web"},
                                         headers=admin)).json()
            made = await client.post(f"/v1/services/{service['id']}/integrations",
                                     json={"name": "ex", "kind": "example"}, headers=admin)
            seen["integration"] = [made.status_code, made.json().get("kind")]
            key = {"X-Integration-Key": made.json()["key"]}
            fired = await client.post("/v1/alerts/example", headers=key,
                                      json={"id": "disk-1", "what": "Disk full", "sev": "sev1"})
            seen["alert"] = [fired.status_code, fired.json()]
            bad = await client.post("/v1/alerts/example", headers=key, json={"id": 1})
            seen["bad"] = [bad.status_code, bad.json()]
            incident = (await client.get("/v1/incidents/", headers=admin)).json()["items"][0]
            seen["incident"] = [incident["title"], incident["severity"], incident["source"]]
            spec = (await client.get("/v1/openapi.json")).json()
            seen["openapi"] = "/v1/alerts/example" in spec["paths"]
            form = await client.get("/ui/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            await client.post("/ui/login", data={"email": "a@example.com", "csrf_token": csrf,
                                                 "password": "a long passphrase"})
            page = await client.get("/ui/services")
            seen["console"] = [page.status_code, "/v1/alerts/example" in page.text]
    print(json.dumps(seen))


asyncio.run(main())
"""


def test_every_source_has_an_endpoint_a_kind_and_a_table():
    assert set(KINDS) >= {"alertmanager", "elastic", "generic", "grafana", "pagerduty"}
    for kind, source in SOURCES.items():
        assert isinstance(source, Source) and source.kind == kind
        assert source.endpoint.startswith(("/v1/alerts/", "/v2/"))
        assert source.severities and source.example and source.summary
        IntegrationCreate(name="x", kind=kind)  # every registered kind is accepted


def test_a_kind_nobody_registered_is_refused():
    with pytest.raises(ValidationError, match="kind must be one of"):
        IntegrationCreate(name="x", kind="nagios")


def test_a_new_source_is_one_module(tmp_path):
    (tmp_path / "example.py").write_text(textwrap.dedent(EXAMPLE_SOURCE))
    database = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), database, TEST_SECRET],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["integration"] == [201, "example"]
    assert seen["alert"] == [202, {"incidents": [{"id": 1, "status": "incident_created"}]}]
    assert seen["bad"][0] == 422 and "'id' must be a string" in seen["bad"][1]["detail"]
    assert seen["incident"] == ["Disk full", "critical", "example"]
    assert seen["openapi"] is True
    assert seen["console"] == [200, True]
