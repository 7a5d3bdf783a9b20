"""The run from start to end: its arguments, the session, the walk, the summary and the report.
`run_e2e_tests.py` at the repository root (what `make e2e` runs) and `python -m tests.e2e`
call `run`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.checks import FAILED, Runner
from tests.e2e.client import Api
from tests.e2e.coverage import Coverage, fetch_coverage
from tests.e2e.report import summarise
from tests.e2e.session import Session
from tests.e2e.walk import Walk
from tests.support.processes import terminate_on_signal


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="End-to-end tests of the Incident Management System over real HTTP. By "
        "default it starts an SMTP server, a webhook receiver and the API (after its "
        "migrations) on 127.0.0.1 with a fresh database, and stops them all at the end.",
        epilog="Exit status: 0 only when every check passed and every operation of "
        "/v1/openapi.json was called; 1 otherwise; 2 for bad arguments.",
    )
    parser.add_argument(
        "--base-url",
        help="test a server that is already running: nothing is started, and checks that need "
        "the local SMTP server or webhook receiver are reported as skipped (external server)",
    )
    parser.add_argument(
        "--database-url",
        help="default: a fresh SQLite file in a temporary directory. A PostgreSQL server URL "
        "such as postgresql://postgres@127.0.0.1:5432 gets a new database "
        "ims_e2e_<pid>_<random>, dropped at the end; a URL naming a database creates that one "
        "(it must not exist) and drops it at the end. Any other URL is used as it is.",
    )
    parser.add_argument(
        "--report",
        default="e2e-report.json",
        help="where to write the JSON report (default: e2e-report.json in the current directory)",
    )
    parser.add_argument(
        "--admin-email",
        default=os.environ.get("E2E_ADMIN_EMAIL"),
        help="with --base-url on a database that is not empty: an admin account to act as "
        "(default: $E2E_ADMIN_EMAIL)",
    )
    parser.add_argument(
        "--admin-password",
        default=os.environ.get("E2E_ADMIN_PASSWORD"),
        help="that admin's password (default: $E2E_ADMIN_PASSWORD)",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (SQLite file, server.log) for inspection",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every check")
    args = parser.parse_args(argv)
    if args.base_url and args.database_url:
        parser.error("--database-url applies only when the script starts the server")
    if args.base_url and urlsplit(args.base_url).scheme not in ("http", "https"):
        parser.error("--base-url must be an http(s) URL")
    if bool(args.admin_email) != bool(args.admin_password):
        parser.error("--admin-email and --admin-password go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate_on_signal)
    runner = Runner(verbose=args.verbose)
    started = time.monotonic()
    coverage: Coverage | None = None
    print("Incident Management System: end-to-end tests", flush=True)
    with contextlib.ExitStack() as stack:
        session = Session(args, runner, stack)
        base_url = session.start()
        if session.tmp is not None and (args.verbose or args.keep_temp):
            print(f"  temporary directory: {session.tmp}", flush=True)
        if base_url is not None:
            print(f"  target: {base_url} ({session.database})", flush=True)
            api = Api(base_url)
            stack.callback(api.close)
            coverage = fetch_coverage(runner, api)
            admin = (args.admin_email, args.admin_password) if args.admin_email else None
            Walk(runner, api, local=session.local, admin_login=admin).run_all()
        if runner.count(FAILED) and session.server is not None:
            print("\n--- the end of the server's log ---", file=sys.stderr)
            print(session.server.tail(40), file=sys.stderr, flush=True)
    duration = time.monotonic() - started
    report = summarise(runner, coverage, duration, base_url=base_url, database=session.database)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Report: {path.resolve()}")
    return 0 if report["ok"] else 1


def run(argv: Sequence[str] | None = None) -> int:
    """`main`, with Ctrl-C reported as such (exit status 130)."""
    try:
        return main(argv)
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        return 130
