"""`incident-management` as a newcomer meets it, run as real processes: its help and version, and
what it says when the database or the configuration is wrong (one or two lines on stderr, exit
status 2, never a traceback)."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
from importlib.metadata import version
from urllib.parse import urlsplit, urlunsplit

import pytest

from app.core.migrations import head_revision
from tests.support.ports import free_port
from tests.support.processes import CLI, stop, wait_for_health

ANSI = "\x1b["
COMMANDS = ("serve", "migrate", "worker", "create-admin")
# Each command as a newcomer types it; create-admin has its password from ADMIN_PASSWORD.
ARGS = {"create-admin": ["create-admin", "--email", "admin@example.com"]}


@pytest.fixture
def env(tmp_path):
    """The environment without this machine's settings, and a SQLite database of the test's."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "ENVIRONMENT", "LOG_FORMAT", "LOG_LEVEL"}
    }
    environment["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    environment["ADMIN_PASSWORD"] = "a long admin passphrase"
    return environment


def run(args, env, cwd, timeout=60):
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a command that must have refused plainly: status 2, one or two lines."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert ANSI not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    return done.stderr


def unused_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/x"


SETTINGS_PROBLEMS = {
    "mysql": ({"DATABASE_URL": "mysql://u:secret@127.0.0.1/db"}, ["DATABASE_URL", "'mysql'"]),
    "not a URL": ({"DATABASE_URL": "notaurl"}, ["DATABASE_URL is not a URL", "postgresql://"]),
    "environment": ({"ENVIRONMENT": "prod"}, ["ENVIRONMENT='prod'", "'production'"]),
    "integer": ({"DATABASE_POOL_SIZE": "ten"}, ["DATABASE_POOL_SIZE='ten'", "integer"]),
    "range": ({"DATABASE_POOL_SIZE": "0"}, ["DATABASE_POOL_SIZE='0'", "greater than"]),
}


class TestConfigurationProblems:
    @pytest.mark.parametrize("command", COMMANDS)
    @pytest.mark.parametrize("case", SETTINGS_PROBLEMS)
    def test_a_refused_setting_is_named(self, env, tmp_path, command, case):
        values, expected = SETTINGS_PROBLEMS[case]
        said = refused(run(ARGS.get(command, [command]), env | values, tmp_path))
        assert said.startswith("Refusing to start: ")
        assert "in the environment or in .env" in said
        for part in expected:
            assert part in said
        assert "secret" not in said  # a URL's password is never printed back

    def test_every_refused_setting_is_on_one_line(self, env, tmp_path):
        values = {"ENVIRONMENT": "prod", "DATABASE_POOL_SIZE": "ten", "ALGORITHM": "none"}
        said = refused(run(["migrate"], env | values, tmp_path))
        first = said.splitlines()[0]
        assert "ENVIRONMENT" in first and "DATABASE_POOL_SIZE" in first and "ALGORITHM" in first


class TestDatabaseProblems:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_no_server_listening(self, env, tmp_path, command):
        url = unused_port_url()
        said = refused(run(ARGS.get(command, [command]), env | {"DATABASE_URL": url}, tmp_path))
        port = urlsplit(url).port
        assert f"Cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused" in said
        assert "Start the server" in said

    @pytest.mark.parametrize("command", COMMANDS)
    def test_a_database_that_does_not_exist(self, env, tmp_path, command):
        server = os.environ.get("TEST_DATABASE_URL")
        if not server:
            pytest.skip("a PostgreSQL server: TEST_DATABASE_URL is not set")
        parts = urlsplit(server)
        url = urlunsplit(("postgresql", parts.netloc, "/does_not_exist_xyz", parts.query, ""))
        said = refused(run(ARGS.get(command, [command]), env | {"DATABASE_URL": url}, tmp_path))
        assert "'does_not_exist_xyz' does not exist on the PostgreSQL server" in said
        assert "createdb" in said

    @pytest.mark.parametrize("command", COMMANDS)
    def test_an_sqlite_file_that_cannot_be_made(self, env, tmp_path, command):
        (tmp_path / "a-file").write_text("")
        url = f"sqlite:///{tmp_path / 'a-file' / 'cli.db'}"
        said = refused(run(ARGS.get(command, [command]), env | {"DATABASE_URL": url}, tmp_path))
        assert "Cannot open the SQLite database" in said and "a-file" in said

    def test_an_unknown_revision(self, env, tmp_path):
        said = refused(run(["migrate", "nosuch"], env, tmp_path))
        assert "There is no revision 'nosuch'" in said

    def test_a_database_migrated_by_a_newer_version(self, env, tmp_path):
        assert run(["migrate"], env, tmp_path).returncode == 0
        with sqlite3.connect(tmp_path / "cli.db") as connection:
            connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed0001'")
        said = refused(run(["migrate"], env, tmp_path))
        assert "at revision 'f00dfeed0001', which this version does not know" in said

    def test_the_worker_refuses_a_database_without_schema(self, env, tmp_path):
        said = refused(run(["worker"], env, tmp_path))
        assert "no schema" in said and "incident-management migrate" in said


class TestPorts:
    @pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
    def test_a_port_out_of_range_is_refused(self, env, tmp_path, port):
        for args in (["serve", "--port", port], ["worker", "--metrics-port", port]):
            done = run(args, env, tmp_path)
            said = refused(done)
            assert len(said.strip().splitlines()) == 1
            assert f"{port} is not a port: give one from 1 to 65535" in said

    def test_a_metrics_port_in_use_is_said(self, env, tmp_path):
        assert run(["migrate"], env, tmp_path).returncode == 0
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            said = refused(run(["worker", "--metrics-port", str(port)], env, tmp_path))
        assert f"Cannot serve the worker's metrics on 127.0.0.1:{port}" in said

    def test_a_port_in_range_is_taken(self, env, tmp_path):
        # Parsed, then the (broken) settings are what stops it, before anything listens.
        done = run(["serve", "--port", "65535"], env | {"DATABASE_URL": "notaurl"}, tmp_path)
        assert "DATABASE_URL" in refused(done) and "port" not in done.stderr


class TestHelp:
    @pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
    @pytest.mark.parametrize("flag", ["-h", "--help"])
    def test_help_is_plain(self, env, tmp_path, command, flag):
        done = run([*command, flag], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Usage: incident-management {' '.join(command)}".rstrip())
        assert "-h, --help" in done.stdout
        assert "<bool>" not in done.stdout
        assert ANSI not in done.stdout + done.stderr
        assert not done.stderr

    def test_version(self, env, tmp_path):
        done = run(["--version"], env, tmp_path)
        assert done.returncode == 0
        assert done.stdout == f"incident-management {version('incident-management')}\n"

    def test_an_unknown_command_is_one_line(self, env, tmp_path):
        said = refused(run(["serv"], env, tmp_path))
        assert "No such command 'serv'" in said and "incident-management -h" in said


def test_migrate_says_the_revision_it_reached(env, tmp_path, fresh_database_url):
    env = env | {"DATABASE_URL": fresh_database_url}
    head = head_revision()
    first = run(["migrate"], env, tmp_path, timeout=180)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"Database upgraded from an empty database to {head} (head).\n"
    again = run(["migrate"], env, tmp_path, timeout=180)
    assert again.stdout == f"Database already at revision {head} (head).\n"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_logs_in_the_application_s_format_without_colour_codes(env, tmp_path, log_format):
    """stderr is a pipe, not a terminal: uvicorn's lines are the application's, plainly."""
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port)], env=env | {"LOG_FORMAT": log_format}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, seconds=90)
    finally:
        out, err = stop(process)
    # uvicorn shuts down cleanly, then ends itself by the signal it was sent.
    assert process.returncode in (0, -15), err
    assert ANSI not in out + err
    assert "color_message" not in err
    running = f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)"
    expected = [
        ("app.migrations", f"database at revision {head_revision()} (head)"),
        ("uvicorn", "Application startup complete."),
        ("uvicorn", running),
        ("uvicorn", "Application shutdown complete."),
    ]
    lines = err.strip().splitlines()
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        said = {(r["logger"], r["message"]) for r in records if r["level"] == "INFO"}
        assert all(line in said for line in expected), said
    else:
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] INFO"
        for logger, message in expected:
            pattern = re.compile(rf"{stamp} {re.escape(logger)}: {re.escape(message)}")
            assert any(pattern.fullmatch(line) for line in lines), (message, err)
