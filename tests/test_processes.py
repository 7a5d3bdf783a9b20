"""The commands people type, run as real processes: serve, migrate, create-admin, worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import BIN, CLI, stop, wait_for_health


@pytest.fixture
def env(tmp_path):
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "ENVIRONMENT"}
    }
    environment["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    return environment


def run(args, env, cwd, **kwargs):
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_serve_migrates_an_empty_database_then_serves(env, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_health(base, process).json()["database"] == "ok"
        signup = httpx.post(
            f"{base}/v1/auth/signup",
            json={"email": "first@example.com", "password": "long enough", "full_name": "F"},
        )
        assert signup.status_code == 201 and signup.json()["role"] == "admin"
        docs = httpx.get(f"{base}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        token = httpx.post(
            f"{base}/v1/auth/login/access-token",
            data={"username": "first@example.com", "password": "long enough"},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        service = httpx.post(f"{base}/v1/services/", json={"name": "svc"}, headers=auth).json()
        key = httpx.post(
            f"{base}/v1/services/{service['id']}/integrations/",
            json={"name": "g", "kind": "generic"},
            headers=auth,
        ).json()["key"]
        alert = httpx.post(f"{base}/v1/alerts/generic?key={key}", json={"summary": "s"})
        assert alert.status_code == 202
    finally:
        out, err = stop(process)
    assert f"{base}/docs" in out
    assert "/v1/auth/signup" in out
    # The app's access line (text in development) names the alert's request, never its key.
    assert "INFO app.access: POST /v1/alerts/generic 202" in err
    assert "route=/v1/alerts/generic" in err
    assert key not in out and key not in err


def test_production_refuses_the_default_secret_key(env, tmp_path):
    env = env | {"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://127.0.0.1/x"}
    # gunicorn checks once in its master: left to the workers, it would restart them for ever.
    gunicorn = [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.main:app"]
    for command in ([CLI, "serve"], [sys.executable, "-m", "uvicorn", "app.main:app"], gunicorn):
        result = run(command, env | {"GUNICORN_BIND": f"127.0.0.1:{free_port()}"}, tmp_path)
        assert result.returncode != 0, command
        assert "Refusing to start" in result.stderr
        assert "SECRET_KEY is the development default" in result.stderr


def test_migrate_and_create_admin(env, tmp_path):
    assert run([CLI, "migrate"], env, tmp_path).returncode == 0
    created = run(
        [CLI, "create-admin", "--email", "Root@Example.com", "--full-name", "Root"],
        env | {"ADMIN_PASSWORD": "a long admin passphrase"},
        tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert "Admin root@example.com created" in created.stdout

    again = run(
        [CLI, "create-admin", "--email", "root@example.com"],
        env | {"ADMIN_PASSWORD": "a long admin passphrase"},
        tmp_path,
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr

    forced = run(
        [CLI, "create-admin", "--email", "root@example.com", "--force"],
        env | {"ADMIN_PASSWORD": "another long passphrase"},
        tmp_path,
    )
    assert forced.returncode == 0, forced.stderr

    weak = run(
        [CLI, "create-admin", "--email", "weak@example.com"],
        env | {"ADMIN_PASSWORD": "short"},
        tmp_path,
    )
    assert weak.returncode == 1
    assert "at least 8 characters" in weak.stderr

    # The admin can log in with the password set by --force, through a real server.
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--no-migrate"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process)
        login = httpx.post(
            f"http://127.0.0.1:{port}/v1/auth/login/access-token",
            data={"username": "root@example.com", "password": "another long passphrase"},
        )
        assert login.status_code == 200
    finally:
        stop(process)


def test_create_admin_prompts_for_the_password(env, tmp_path):
    result = run(
        [CLI, "create-admin", "--email", "prompted@example.com"],
        env,
        tmp_path,
        input="typed passphrase\ntyped passphrase\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Admin prompted@example.com created" in result.stdout


async def test_worker_wakes_snoozed_incidents_and_stops_cleanly_on_sigterm(env, tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from app.core.db import create_engine, create_sessionmaker, session_scope
    from app.incidents.models import Incident, TimelineEntry
    from tests.support.settings import make_settings

    assert run([CLI, "migrate"], env, tmp_path).returncode == 0
    engine = create_engine(make_settings(env["DATABASE_URL"]))
    sessions = create_sessionmaker(engine)
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with session_scope(sessions) as session:
        incident = Incident(
            title="Disk full", status="snoozed", severity="high", snoozed_until=past,
            labels={}, custom_fields={}, created_at=past, updated_at=past,
        )  # fmt: skip
        session.add(incident)
    metrics_port = free_port()
    process = subprocess.Popen(
        [CLI, "worker", "--metrics-port", str(metrics_port)],
        env=env | {"WORKER_POLL_INTERVAL_SECONDS": "0.2"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = "snoozed"
        while status == "snoozed" and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            async with session_scope(sessions) as session:
                status = await session.scalar(
                    select(Incident.status).where(Incident.id == incident.id)
                )
            await asyncio.sleep(0.1)
        assert status == "triggered"
        async with session_scope(sessions) as session:
            types = list(await session.scalars(select(TimelineEntry.type)))
        assert types == ["unsnoozed", "policy_applied"]
        # Its own metrics, on the port asked for, with its own pool's gauge.
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'ims_db_pool_connections_in_use{pool="worker"} ' in scraped
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
        await engine.dispose()
    assert process.returncode == 0, err
    assert "worker stopped" in err


def test_alembic_command_line_upgrades_the_configured_database(env, tmp_path):
    root = Path(__file__).resolve().parent.parent
    result = run(
        [str(BIN / "alembic"), "-c", str(root / "alembic.ini"), "upgrade", "head"], env, root
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()
    check = run([str(BIN / "alembic"), "-c", str(root / "alembic.ini"), "check"], env, root)
    assert check.returncode == 0, check.stdout + check.stderr


async def test_live_server_twenty_concurrent_acknowledgements(fresh_database_url, tmp_path, env):
    """Real HTTP requests at once against a real server, on each database."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port)],
        env=env | {"DATABASE_URL": fresh_database_url},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_health(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for i in range(20):
                await client.post(
                    "/v1/auth/signup",
                    json={
                        "email": f"u{i}@example.com",
                        "password": "long enough",
                        "full_name": "U",
                    },
                )
            tokens = []
            for i in range(20):
                login = await client.post(
                    "/v1/auth/login/access-token",
                    data={"username": f"u{i}@example.com", "password": "long enough"},
                )
                tokens.append(login.json()["access_token"])
            incident = (
                await client.post(
                    "/v1/incidents/",
                    json={"title": "race"},
                    headers={"Authorization": f"Bearer {tokens[0]}"},
                )
            ).json()
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"/v1/incidents/{incident['id']}/acknowledge",
                        headers={"Authorization": f"Bearer {t}"},
                    )
                    for t in tokens
                )
            )
            entries = (
                await client.get(
                    f"/v1/incidents/{incident['id']}/timeline",
                    headers={"Authorization": f"Bearer {tokens[0]}"},
                )
            ).json()["items"]
    finally:
        stop(process)
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["acknowledged_by"] for r in responses}) == 1
    assert [e["type"] for e in entries] == ["created", "policy_applied", "acknowledged"]
