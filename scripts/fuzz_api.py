#!/usr/bin/env python3
"""Fuzz the live API with Schemathesis: every operation of /v1/openapi.json, every check.

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python scripts/fuzz_api.py                         # SQLite, a temporary database
    .venv/bin/python scripts/fuzz_api.py --max-examples 300      # longer (make fuzz)
    .venv/bin/python scripts/fuzz_api.py --max-time 120          # a time budget (make fuzz-ci)
    .venv/bin/python scripts/fuzz_api.py --database-url postgresql://postgres@127.0.0.1:5432

It starts the API the way the end-to-end run does (with tests/support's code): the migrations,
then `uvicorn app.main:app` on a free 127.0.0.1 port, on a fresh SQLite file in a temporary
directory, or on a database of its own made on the PostgreSQL server given by `--database-url` and
dropped at the end. The worker does not run in the server, so nothing the fuzzer writes (webhook
URLs, Slack addresses, phone numbers) is ever contacted.

It signs up the first user (the admin) and seeds real objects of every kind (users, services,
integrations and their keys, escalation policies, schedules with overrides, incidents with
comments, webhook subscriptions, notifications, preferences, calendar tokens), so that path
parameters hit existing ids often (Schemathesis dictionaries) besides every odd value it makes up.
Then `schemathesis run` tests every operation with the admin's token (integration keys for the
alert endpoints), with all checks: no 5xx, status codes, content types, headers and bodies as
documented, invalid input refused, valid input accepted, authentication enforced, and so on.

Exit status: 0 when Schemathesis found nothing and the run was sound (the admin's token still
worked at the end); 1 otherwise; 2 for bad arguments. A short summary is printed; the full
Schemathesis report (JSON, JUnit, and a pytest file reproducing each failure) goes to
`--report-dir`, with the server's log (the traceback behind any 500).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
# `python scripts/fuzz_api.py` puts scripts/ first on sys.path, not the repository: the root is
# added so that tests.support and tests.e2e (the server, the database, the API client) import.
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.checks import CheckFailed
from tests.e2e.client import Api
from tests.support import processes
from tests.support.databases import PostgresDatabase
from tests.support.ports import free_port
from tests.support.settings import clean_environment

ADMIN_EMAIL = "fuzz-admin@example.com"
CHANNELS = ("email", "sms", "slack", "webhook")

# ---- the server ----------------------------------------------------------------------------------


class Target:
    """The API on a loopback port, on a database of its own; `close` stops and drops it all."""

    def __init__(self, database_url: str | None, *, keep_temp: bool) -> None:
        self.stack = contextlib.ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix="ims-fuzz-"))
        if not keep_temp:
            self.stack.callback(shutil.rmtree, self.tmp, ignore_errors=True)
        self.database = "SQLite, a temporary file"
        url = database_url
        if url and url.split(":", 1)[0].startswith("postgres"):
            named = urlsplit(url).path.strip("/") or None
            database = PostgresDatabase(url, name=named, prefix="ims_fuzz")
            url = self.stack.enter_context(database)
            self.database = f"PostgreSQL, {database.name}"
        elif url:
            self.database = url
        else:
            url = f"sqlite+aiosqlite:///{self.tmp / 'fuzz.db'}"
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        # A clean environment: nothing from the caller's shell or a .env changes the settings.
        self.env = clean_environment(
            self.tmp,
            DATABASE_URL=url,
            ENVIRONMENT="development",  # signup open: the first account becomes admin
            LOG_LEVEL="WARNING",
            # No worker: the fuzzer's made-up webhook URLs and addresses are never contacted.
            WORKER_IN_PROCESS="false",
            PUBLIC_BASE_URL=self.base_url,
            # Abuse limits off: from one address they would soon answer 429 to every login,
            # recovery and alert case, leaving those operations' input unexplored (the limits
            # have tests of their own, tests/test_ratelimit.py).
            RATE_LIMIT_LOGIN_PER_IP_PER_MINUTE="0",
            LOGIN_LOCKOUT_FAILURES="0",
            RATE_LIMIT_RECOVERY_PER_ACCOUNT_PER_HOUR="0",
            RATE_LIMIT_RECOVERY_PER_IP_PER_HOUR="0",
            RATE_LIMIT_INGEST_PER_SECOND="0",
        )
        self.process = processes.Server("server", self.env, self.tmp, cwd=self.tmp, port=port)

    def start(self) -> None:
        processes.run_migrations(self.env, self.tmp)
        self.process.start()
        self.stack.callback(self.process.stop)
        self.process.wait_healthy()

    def alive(self) -> bool:
        return self.process.running

    def close(self) -> None:
        self.stack.close()


# ---- the seed ------------------------------------------------------------------------------------


class Seed:
    """Real objects of every kind, made through the API; their ids become Schemathesis
    dictionaries so that path parameters name existing objects as well as made-up ones."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.token = ""
        self.admin_id = 0
        self.ids: dict[str, list[int]] = {}
        self.keys: dict[str, str] = {}  # integration kind -> key
        self.calendar_tokens: list[str] = []
        self.emails: list[str] = [ADMIN_EMAIL]

    def add(self, name: str, value: int) -> int:
        self.ids.setdefault(name, []).append(value)
        return value

    def post(self, path: str, body: Any = None, *, expect: int = 201) -> Any:
        return self.api.post(path, token=self.token, json=body, expect=expect)

    def run(self) -> None:
        password = secrets.token_urlsafe(24)
        signup = {"email": ADMIN_EMAIL, "password": password, "full_name": "Fuzz Admin"}
        self.admin_id = self.api.post("/v1/auth/signup", json=signup, expect=201)["id"]
        form = {"username": ADMIN_EMAIL, "password": password}
        self.token = self.api.post("/v1/auth/login/access-token", data=form)["access_token"]

        users = []
        for n in range(3):
            email = f"fuzz-user-{n}@example.com"
            new = {
                "email": email,
                "password": secrets.token_urlsafe(16),
                "full_name": f"Fuzz User {n}",
                "role": "admin" if n == 0 else "user",
            }
            users.append(self.add("user_id", self.post("/v1/users/", new)["id"]))
            self.emails.append(email)
        everyone = [self.admin_id, *users]

        now = datetime.now(UTC)
        for n in range(2):
            rotation = {
                "name": f"fuzz rotation {n}",
                "user_ids": everyone,
                "rotation_length": 1,
                "rotation_unit": "days",
                "start": (now - timedelta(days=3)).strftime("%Y-%m-%dT09:00:00"),
                "restrictions": [],
            }
            body: dict[str, Any] = {"name": f"fuzz schedule {n}", "time_zone": "Europe/Berlin"}
            body["layers"] = [rotation]
            schedule_id = self.add("schedule_id", self.post("/v1/schedules/", body)["id"])
            override = {
                "user_id": users[1],
                "start": (now + timedelta(hours=1)).isoformat(),
                "end": (now + timedelta(hours=5)).isoformat(),
            }
            self.add(
                "override_id", self.post(f"/v1/schedules/{schedule_id}/overrides", override)["id"]
            )
            link = self.post(f"/v1/schedules/{schedule_id}/calendar-url", expect=200)["url"]
            self.calendar_tokens.append(link.rsplit("token=", 1)[-1])
        link = self.post("/v1/users/me/calendar-url", expect=200)["url"]
        self.calendar_tokens.append(link.rsplit("token=", 1)[-1])

        for n in range(2):
            policy = {
                "name": f"fuzz policy {n}",
                "priority": 10 + n,
                "repeat_count": 1,
                "conditions": {"severities": ["critical", "high"]} if n else {},
                "steps": [
                    {"delay_minutes": 0, "targets": [{"type": "user", "id": self.admin_id}]},
                    {
                        "delay_minutes": 15,
                        "targets": [{"type": "schedule", "id": self.ids["schedule_id"][n]}],
                        "actions": [{"type": "notify"}, {"type": "assign"}],
                    },
                ],
            }
            self.add("policy_id", self.post("/v1/escalation/policies/", policy)["id"])

        for n in range(3):
            body = {"name": f"fuzz-service-{n}", "description": "seeded by the fuzzer"}
            service_id = self.add("service_id", self.post("/v1/services/", body)["id"])
            for kind in ("generic", "alertmanager", "grafana", "elastic", "pagerduty"):
                integration = {"name": f"{kind} {n}", "kind": kind}
                made = self.post(f"/v1/services/{service_id}/integrations/", integration)
                self.add("integration_id", made["id"])
                self.keys.setdefault(kind, made["key"])

        for n in range(4):
            body = {
                "title": f"Fuzz incident {n}",
                "severity": ("critical", "high", "medium", "low")[n],
                "service_id": self.ids["service_id"][n % 3],
                "labels": {"team": "fuzz"},
            }
            incident_id = self.add("incident_id", self.post("/v1/incidents/", body)["id"])
            self.post(f"/v1/incidents/{incident_id}/comments", {"content": "a first comment"})
        self.post(f"/v1/incidents/{self.ids['incident_id'][1]}/acknowledge", {}, expect=200)
        self.post(f"/v1/incidents/{self.ids['incident_id'][2]}/resolve", {}, expect=200)

        for n in range(2):
            body = {
                "name": f"fuzz hook {n}",
                "url": f"https://hooks.example.com/fuzz/{n}",
                "events": ["triggered", "acknowledged", "resolved"],
            }
            webhook_id = self.add("webhook_id", self.post("/v1/webhooks/", body)["id"])
            # Queued only (no worker runs): a notification row to read back.
            self.post(f"/v1/webhooks/{webhook_id}/test", expect=202)
        for item in self.api.get("/v1/notifications/", token=self.token)["items"]:
            self.add("notification_id", item["id"])

        preference = {"enabled": True, "address": ADMIN_EMAIL, "min_severity": "high"}
        self.api.put("/v1/notification-preferences/me/email", token=self.token, json=preference)

    def token_works(self) -> bool:
        response = self.api.request("POST", "/v1/auth/login/test-token", token=self.token)
        return response.status_code == 200


# ---- the Schemathesis configuration --------------------------------------------------------------


def toml_value(value: Any) -> str:
    """TOML for the few shapes the configuration uses (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def config(seed: Seed, *, hit_rate: float) -> str:
    """schemathesis.toml: the admin's token, integration keys for the alert endpoints, and the
    seeded ids as dictionaries for the path parameters. (The few answers that cannot pass a
    check by design are let through in fuzz_hooks.py, each with its reason.)"""
    dictionaries: dict[str, list[Any]] = {name: values for name, values in seed.ids.items()}
    dictionaries["channel"] = list(CHANNELS)
    dictionaries["calendar_token"] = seed.calendar_tokens
    dictionaries["email"] = seed.emails
    bindings = {f"path.{name}": name for name in seed.ids}
    bindings |= {"path.channel": "channel", "path.email": "email", "query.token": "calendar_token"}
    # PagerDuty-style events carry their integration key in the body.
    dictionaries["routing_key"] = [seed.keys["pagerduty"]]
    bindings["body.routing_key"] = "routing_key"
    lines = [
        "# Written by scripts/fuzz_api.py for one run.",
        "[auth.openapi.OAuth2PasswordBearer]",
        f"bearer = {toml_value(seed.token)}",
        "",
    ]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {toml_value(values)}", ""]
    lines.append("[parameters]")
    for key, name in bindings.items():
        binding = {"dictionary": name, "probability": hit_rate}
        lines.append(f"{toml_value(key)} = {toml_value(binding)}")
    lines.append("")
    # The alert endpoints take an integration key instead of a user's token (any of three ways;
    # the header is the one that does not collide with the body or the query being fuzzed).
    for kind in ("alertmanager", "grafana", "generic", "elastic"):
        lines += [
            "[[operations]]",
            f"include-path = {toml_value(f'/v1/alerts/{kind}')}",
            f"headers = {toml_value({'X-Integration-Key': seed.keys[kind]})}",
            "",
        ]
    return "\n".join(lines) + "\n"


# ---- the run -------------------------------------------------------------------------------------


def schemathesis_command(args: argparse.Namespace, base_url: str, reports: Path) -> list[str]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base_url}/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--request-timeout",
        "20",
        "--report",
        "json,junit,pytest",
        "--report-dir",
        str(reports),
        "--generation-database",
        "none",
        "--no-color",
    ]
    if args.max_time:
        command += ["--max-time", str(args.max_time)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if args.phases:
        command += ["--phases", args.phases]
    for operation in args.include or ():
        command += ["--include-path-regex", operation]
    return command


def summarise(report: dict[str, Any], duration: float) -> list[str]:
    operations = report.get("operations", {})
    cases = report.get("test_cases", {})
    lines = [
        f"operations: {operations.get('tested', 0)} tested of {operations.get('total', 0)} "
        f"({operations.get('errored', 0)} errored, {operations.get('skipped', 0)} skipped)",
        f"test cases: {cases.get('generated', 0)} generated, "
        f"{cases.get('with_failures', 0)} with failures, "
        f"{cases.get('unique_failures', 0)} unique failures",
        f"duration: {duration:.0f} s",
    ]
    for failure in report.get("failures", []):
        where = ", ".join(failure.get("operations", [])[:6])
        lines.append(f"  FAIL {failure.get('title')} ×{failure.get('count')}: {where}")
    for error in report.get("errors", []):
        lines.append(f"  ERROR {error.get('title')} ×{error.get('count')}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fuzz every operation of the API with Schemathesis against a live server "
        "started here on 127.0.0.1 with a fresh database.",
        epilog="Exit status: 0 when nothing was found; 1 otherwise; 2 for bad arguments.",
    )
    parser.add_argument(
        "--database-url",
        help="default: a fresh SQLite file in a temporary directory. A PostgreSQL server URL "
        "(postgresql://postgres@127.0.0.1:5432) gets a new database, dropped at the end",
    )
    parser.add_argument(
        "--max-examples", type=int, default=50, help="test cases per operation (default 50)"
    )
    parser.add_argument(
        "--max-time", type=int, help="time budget in seconds for the Schemathesis run"
    )
    parser.add_argument("--workers", default="1", help="concurrent Schemathesis workers")
    parser.add_argument("--seed", type=int, help="Schemathesis random seed, to repeat a run")
    parser.add_argument("--phases", help="examples,coverage,fuzzing,stateful (default: all)")
    parser.add_argument(
        "--include",
        action="append",
        metavar="REGEX",
        help="only the paths matching this regular expression (repeatable)",
    )
    parser.add_argument(
        "--hit-rate",
        type=float,
        default=0.5,
        help="how often a path parameter takes a seeded id rather than a made-up value",
    )
    parser.add_argument(
        "--report-dir",
        default="fuzz-report",
        help="where Schemathesis writes its reports (default: fuzz-report/)",
    )
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep the temporary directory (server.log)"
    )
    args = parser.parse_args(argv)
    if args.max_examples < 1:
        parser.error("--max-examples must be at least 1")
    if not 0 < args.hit_rate <= 1:
        parser.error("--hit-rate must be in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, processes.terminate_on_signal)
    started = time.monotonic()
    reports = Path(args.report_dir).resolve()
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    server = Target(args.database_url, keep_temp=args.keep_temp)
    try:
        server.start()
        print(f"fuzzing {server.base_url} ({server.database})", flush=True)
        api = Api(server.base_url)
        seed = Seed(api)
        seed.run()
        seeded = ", ".join(f"{len(v)} {k.removesuffix('_id')}" for k, v in seed.ids.items())
        print(f"seeded: {seeded}", flush=True)
        config_path = server.tmp / "schemathesis.toml"
        config_path.write_text(config(seed, hit_rate=args.hit_rate))
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config_path),
            *schemathesis_command(args, server.base_url, reports)[1:],
        ]
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "fuzz_hooks",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(REPO_ROOT)]),
            "FUZZ_PROTECTED_USER_ID": str(seed.admin_id),
        }
        fuzz_started = time.monotonic()
        done = subprocess.run(command, env=env, cwd=server.tmp, check=False)  # noqa: S603
        fuzz_duration = time.monotonic() - fuzz_started
        sound = seed.token_works() and server.alive()
        api.close()
        # The server's log holds the traceback behind any 500.
        shutil.copyfile(server.process.log_path, reports / "server.log")
        report_files = sorted(reports.glob("*.json"))
        report: dict[str, Any] = json.loads(report_files[0].read_text()) if report_files else {}
        print("\n== fuzz summary")
        for line in summarise(report, fuzz_duration):
            print(line)
        if not sound:
            print("the run is not sound: the admin's token stopped working or the server died")
            print(server.process.tail(40), file=sys.stderr)
        print(f"reports: {reports} (whole run {time.monotonic() - started:.0f} s)")
        return 0 if done.returncode == 0 and sound and report else 1
    except (CheckFailed, AssertionError) as exc:  # the server did not start, a seed was refused
        print(f"FAIL: {exc}", file=sys.stderr)
        print(server.process.tail(40), file=sys.stderr)
        return 1
    finally:
        server.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
