"""The incident list over HTTP, at `--concurrency` clients, against the app under gunicorn.

    export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench
    python scripts/seed_incidents.py 100000 && python scripts/bench_list.py

Seed first (scripts/seed_incidents.py). Makes an admin with the tree's CLI, starts the lean server
of bench/server.py, signs in over HTTP and asks `--query` (by default the first page of 50 with
the default filters) `--requests` times from `--concurrency` keep-alive connections (the load
generator of bench/loadgen.py), after `--warmup` unmeasured requests; bounded by `--seconds`.
Prints and writes pages per second, p50/p95/p99/max, and the CPU per page of the server's workers
and of the database's backends. Every answer must be 200.

Imports nothing of `app`: `--tree` runs another checkout's server (`python -m bench ab`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench and tests.support, from this checkout (see bench_ingest.py)

from bench.loadgen import Meter, Request, drive, latency_figures
from bench.profile import recorded
from bench.server import (
    ServerUnderTest,
    add_server_arguments,
    database_name,
    prepare_database,
    signed_in,
)
from tests.support.api import Admin

QUERY = "/v1/incidents/?limit=50"


async def bearer(base: str) -> tuple[str, int]:
    """The admin's token, and how many incidents the list says there are (a check of the seed)."""
    admin = await signed_in(base)
    try:
        page = await admin.call("GET", QUERY)
        return admin.token, len(page["items"])
    finally:
        await admin.close()


MEMBER_EMAIL = "member@bench.example.com"


async def member_bearer(base: str, teams: int, private: int) -> tuple[str, int] | None:
    """A user who is a responder in `teams` teams, and their token: the seeded services are
    dealt to those teams and to `private` more private teams the user is not in (whose incidents
    the user's list must leave out), over the API as an admin would. None: the server under
    test has no teams (an older tree in `python -m bench ab`)."""
    admin = await signed_in(base)
    try:
        if (await admin.client.get("/v1/teams/")).status_code == 404:
            return None
        email = MEMBER_EMAIL.replace("@", f"-{teams}-{private}@")  # a step of its own
        member = await admin.user(email)
        made = []
        for n in range(teams + private):
            hidden = n >= teams
            team = await admin.call(
                "POST", "/v1/teams/", 201,
                json={"name": f"bench-{teams}-{private}-team-{n:02d}", "is_private": hidden},
            )  # fmt: skip
            made.append(team["id"])
            if not hidden:
                await admin.call(
                    "POST", f"/v1/teams/{team['id']}/members", 201,
                    json={"user_id": member["id"], "role": "responder"},
                )  # fmt: skip
        services = (await admin.call("GET", "/v1/services/", params={"limit": 500}))["items"]
        for n, service in enumerate(sorted(services, key=lambda s: s["id"])):
            await admin.call(
                "PUT", f"/v1/services/{service['id']}", json={"team_id": made[n % len(made)]}
            )
    finally:
        await admin.close()
    user = Admin(base)
    try:
        await user.log_in(email)
        page = await user.call("GET", QUERY)
        return user.token, len(page["items"])
    finally:
        await user.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", default=QUERY)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=90.0, help="cap of the measured run")
    parser.add_argument(
        "--member", type=int, default=0, metavar="TEAMS",
        help="ask as a user (not an admin) in this many teams",
    )  # fmt: skip
    parser.add_argument(
        "--hidden", type=int, default=0, metavar="TEAMS",
        help="with --member: this many private teams besides, which own services too and whose "
        "incidents the user's list must leave out",
    )  # fmt: skip
    add_server_arguments(parser)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    prepare_database(args.tree, url)
    with ServerUnderTest(args.tree, url, args.gunicorn_workers, args.log) as server:
        if args.member:
            found_member = asyncio.run(member_bearer(server.base, args.member, args.hidden))
            if found_member is None:
                print("this tree has no teams: the member's list is not measured")
                if args.json:
                    args.json.write_text(json.dumps({"skipped": "the tree has no teams"}))
                return
            token, rows = found_member
        else:
            token, rows = asyncio.run(bearer(server.base))
        headers = {"Authorization": f"Bearer {token}"}

        def page(i: int) -> Request:
            return args.query, None, headers

        asyncio.run(drive(server.port, page, args.warmup, args.concurrency, args.seconds))
        meter = Meter(server.pid, database_name(url))
        meter.start()
        with recorded(server.pid, args.profile and args.profile / f"list-c{args.concurrency}.txt"):
            late, failed, elapsed = asyncio.run(
                drive(server.port, page, args.requests, args.concurrency, args.seconds)
            )
        found: dict[str, Any] = {
            "query": args.query, "rows": rows, "concurrency": args.concurrency,
            "member_of": args.member, "hidden_teams": args.hidden,
            "workers": args.gunicorn_workers, **latency_figures(late, failed, elapsed),
            **meter.figures(len(late) + failed),
        }  # fmt: skip
    who = (
        f"a member of {args.member} teams ({args.hidden} private teams hidden)"
        if args.member
        else "an admin"
    )
    print(f"GET {args.query} as {who}, {args.concurrency} clients, {rows} rows a page: "
          f"{found['ok']} pages, "
          f"{found['failed']} failed, {found['per_s']:.0f}/s, p50 {found['p50_ms']:.1f} / p95 "
          f"{found['p95_ms']:.1f} / p99 {found['p99_ms']:.1f} ms; CPU per page: app "
          f"{found['app_cpu_ms']:.2f} ms, db {found['db_cpu_ms']:.2f} ms; machine "
          f"{found['machine_busy']:.0%} busy")  # fmt: skip
    if failed:
        raise SystemExit(f"{failed} requests failed")
    if args.json:
        args.json.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
