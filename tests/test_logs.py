"""Logs: one JSON object a line in production format, and one request id from the API's access
line through the timeline to the worker's lines about the same incident, in a real server."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from app.core.logging import REQUEST, Json, RequestContext, RequestInfo, Text
from tests.support.processes import CLI, serve, stop

TRACE = "trace-7f3a9c.checkout"


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_the_request_and_the_extras():
    token = REQUEST.set(RequestInfo("abc-123", user_id=7))
    try:
        line = record("paged %s", incident_id=42)
        line.args = ("ada",)
        RequestContext().filter(line)
    finally:
        REQUEST.reset(token)
    out = json.loads(Json().format(line))
    assert out["message"] == "paged ada"
    assert (out["level"], out["logger"]) == ("WARNING", "app.test")
    assert (out["request_id"], out["user_id"], out["incident_id"]) == ("abc-123", 7, 42)
    assert out["time"].endswith("+00:00")  # ISO 8601, UTC
    assert "msg" not in out and "args" not in out  # no LogRecord internals


def test_a_given_request_id_wins_over_the_context_and_none_is_left_out():
    token = REQUEST.set(RequestInfo("current"))
    try:
        line = record("worker line", request_id="from-the-row", user_id=None)
        RequestContext().filter(line)
    finally:
        REQUEST.reset(token)
    out = json.loads(Json().format(line))
    assert out["request_id"] == "from-the-row" and "user_id" not in out


def test_text_lines_end_with_the_extras_and_keep_a_traceback_below():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        line = record("failed", incident_id=3, request_id="r1")
        line.exc_info = sys.exc_info()
    first, *rest = Text().format(line).splitlines()
    assert first.endswith("WARNING app.test: failed [incident_id=3 request_id=r1]")
    assert rest[0].startswith("Traceback") and rest[-1] == "RuntimeError: boom"


async def test_a_line_break_in_a_request_cannot_forge_a_text_line(client, caplog):
    """A percent-encoded CR/LF in the path reaches the access line decoded; written raw, the
    text after it would stand as a line of its own."""
    forged = "/v1/x%0d%0a2026-12-07 09:00:00,000 [1] INFO app.access: GET /admin 200%E2%80%A8"
    with caplog.at_level(logging.INFO, logger="app.access"):
        await client.get(forged)
    [access] = [r for r in caplog.records if r.name == "app.access"]
    assert "\r\n" in access.getMessage()  # the request's own words, decoded
    written = Text().format(access)
    assert len(written.splitlines()) == 1, written
    assert (
        "/v1/x\\r\\n2026-12-07 09:00:00,000 [1] INFO app.access: GET /admin 200\\u2028" in written
    )
    assert "path=/v1/x\\r\\n2026" in written  # the extras too


def test_control_characters_in_a_message_or_extra_are_escaped_and_a_traceback_stays_below():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        line = record("title %s", title="a\x1b[31mred\x00")
        line.args = ("one\ntwo",)
        line.exc_info = sys.exc_info()
    first, *rest = Text().format(line).splitlines()
    assert first.endswith("app.test: title one\\ntwo [title=a\\x1b[31mred\\x00]")
    assert rest[0].startswith("Traceback") and rest[-1] == "RuntimeError: boom"


def test_the_servers_lines_are_named_for_the_server_and_carry_no_colour_codes():
    line = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (7,), None
    )
    line.color_message = "Started server process [\x1b[36m%d\x1b[0m]"
    text = Text().format(line)
    assert text.endswith(" INFO uvicorn: Started server process [7]")
    out = json.loads(Json().format(line))
    assert (out["logger"], out["message"]) == ("uvicorn", "Started server process [7]")
    assert "color_message" not in out
    assert line.name == "uvicorn.error"  # other handlers (pytest's) see the record unchanged


@pytest.fixture
def server(tmp_path, smtp_server):
    """`incident-management serve` with JSON logs, mail to a real SMTP server, stderr to a file."""
    _, smtp_port = smtp_server
    env = {
        "PATH": str(Path(CLI).parent) + ":/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'logs.db'}",
        "LOG_FORMAT": "json",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "WORKER_POLL_INTERVAL_SECONDS": "0.2",
    }
    log_path = tmp_path / "server.log"
    process, base = serve(env, tmp_path, log_path)
    try:
        yield base, log_path
    finally:
        stop(process)


def test_one_request_id_from_the_api_through_the_timeline_to_the_worker(server, smtp_server):
    base, log_path = server
    inbox, _ = smtp_server
    signup = httpx.post(
        f"{base}/v1/auth/signup",
        json={"email": "ada@example.com", "password": "a long passphrase", "full_name": "Ada"},
    )
    assert signup.status_code == 201
    ada = signup.json()["id"]
    token = httpx.post(
        f"{base}/v1/auth/login/access-token",
        data={"username": "ada@example.com", "password": "a long passphrase"},
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    step = {"delay_minutes": 0, "targets": [{"type": "user", "id": ada}],
            "actions": [{"type": "notify"}]}  # fmt: skip
    policy = httpx.post(
        f"{base}/v1/escalation/policies/", json={"name": "page", "steps": [step]}, headers=auth
    )
    assert policy.status_code == 201, policy.text
    service = httpx.post(f"{base}/v1/services/", json={"name": "checkout"}, headers=auth).json()
    key = httpx.post(
        f"{base}/v1/services/{service['id']}/integrations/",
        json={"name": "g", "kind": "generic"}, headers=auth,
    ).json()["key"]  # fmt: skip

    sent = httpx.post(
        f"{base}/v1/alerts/generic",
        json={"summary": "Checkout down", "severity": "critical", "dedup_key": "co"},
        headers={"X-Integration-Key": key, "X-Request-ID": TRACE},
    )
    assert sent.status_code == 202 and sent.headers["x-request-id"] == TRACE
    incident_id = sent.json()["incidents"][0]["id"]

    # The worker pages Ada; wait (bounded) for the delivery to be on the timeline.
    deadline = time.monotonic() + 30
    while True:
        entries = httpx.get(f"{base}/v1/incidents/{incident_id}/timeline", headers=auth).json()[
            "items"
        ]
        if any(e["type"] == "notified" for e in entries) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(inbox.messages) == 1
    by_type = {e["type"]: e["request_id"] for e in entries}
    assert by_type == {
        "created": TRACE, "policy_applied": TRACE, "alert_received": TRACE,
        "escalated": TRACE, "notified": TRACE,
    }  # fmt: skip

    # An authenticated request without an id gets one made for it; a junk id is replaced.
    made = httpx.get(f"{base}/v1/incidents/{incident_id}", headers=auth)
    junk = httpx.get(f"{base}/health", headers={"X-Request-ID": "no spaces allowed" * 10})
    assert len(made.headers["x-request-id"]) == 32
    assert junk.headers["x-request-id"] != "no spaces allowed" * 10

    log = log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    traced = [line for line in lines if line.get("request_id") == TRACE]
    [access] = [line for line in traced if line["logger"] == "app.access"]
    assert (access["method"], access["route"], access["status"]) == (
        "POST", "/v1/alerts/generic", 202,
    )  # fmt: skip
    assert access["duration_ms"] > 0
    [step_line] = [line for line in traced if line["message"].startswith("escalation step")]
    assert step_line["incident_id"] == incident_id and step_line["step_status"] == "executed"
    assert step_line["notified_user_ids"] == [ada]
    [delivery] = [line for line in traced if line["message"].startswith("notification")]
    assert (delivery["incident_id"], delivery["channel"], delivery["outcome"]) == (
        incident_id, "email", "sent",
    )  # fmt: skip
    [read] = [line for line in lines if line.get("request_id") == made.headers["x-request-id"]]
    assert (read["route"], read["status"], read["user_id"]) == (
        "/v1/incidents/{incident_id}", 200, ada,
    )  # fmt: skip
    assert key not in log and token not in log


async def test_a_500_carries_the_request_id_and_so_does_its_traceback_line(harness, caplog):
    """Starlette's outermost handler would answer after the request's context is gone."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    harness.app.include_router(router)
    harness.app.middleware_stack = None  # rebuilt with the new route
    seen: list[tuple[str | None, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((getattr(record, "request_id", None), record.exc_text or ""))

    keep = Keep()
    keep.addFilter(RequestContext())  # as the app's handler does, when the line is written
    logging.getLogger("app.core.errors").addHandler(keep)
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    finally:
        logging.getLogger("app.core.errors").removeHandler(keep)
    assert answer.status_code == 500 and answer.json() == {"detail": "Internal server error"}
    assert answer.headers["x-request-id"] == "req-500"
    assert [rid for rid, _ in seen] == ["req-500"] and "kaboom" in caplog.text


async def test_a_batch_of_alerts_runs_in_no_request_s_context(harness, admin_client, client):
    import asyncio

    from app.core.logging import current_request_id
    from tests.support.data import make_integration

    key, _ = await make_integration(admin_client, "generic")
    batcher = harness.app.state.alert_batcher
    seen: list[tuple[str | None, list[str | None]]] = []
    real = batcher.work

    class Spy:
        async def __call__(self, session, jobs, now):
            seen.append((current_request_id(), [job.request_id for job in jobs]))
            return await real(session, jobs, now)

        def rolled_back(self, session, jobs):
            real.rolled_back(session, jobs)

    batcher.work = Spy()
    body = {"summary": "x", "severity": "low"}
    answers = await asyncio.gather(*[
        client.post("/v1/alerts/generic", json=body | {"dedup_key": f"d{n}"},
                    headers={"X-Integration-Key": key, "X-Request-ID": f"req-{n}"})
        for n in range(4)
    ])  # fmt: skip
    assert [a.status_code for a in answers] == [202] * 4
    assert all(context is None for context, _ in seen), seen
    assert sorted(rid for _, ids in seen for rid in ids) == [f"req-{n}" for n in range(4)]


def test_httpx_never_logs_the_urls_it_calls(database_url):
    from app.core.logging import configure_logging
    from tests.support.settings import make_settings

    configure_logging(make_settings(database_url, log_level="DEBUG"))
    try:
        # A Slack webhook's URL is its secret; httpx logs each request's URL at INFO.
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("app").isEnabledFor(logging.DEBUG)
    finally:
        configure_logging(make_settings(database_url))
