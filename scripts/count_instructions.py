"""Instructions one request costs the server, counted by callgrind: repeatable on a busy machine.

    python scripts/count_instructions.py generic-new pagerduty-dedup api-new \\
        [--tree ../old] [--small 50] [--large 350] [--server postgresql://postgres@127.0.0.1:5432]

For each request kind, on a fresh PostgreSQL database each time, runs the app in-process (ASGI,
lifespan on: the batchers run as in production) under `valgrind --tool=callgrind` twice, driving
`--small` then `--large` requests one after another, and prints (total at large - total at small)
/ (large - small): the instructions of one request without start-up and set-up. Only the server
process is counted, not PostgreSQL's own work. `--tree` counts another checkout (one with its own
`.venv`, e.g. a `git worktree` of an older commit), so two commits can be compared whenever: the
count does not depend on what else the machine does. The driver talks to the app only through
its HTTP API, so it runs on older commits too. Needs valgrind (Debian's package); about five
minutes a kind.

Kinds: generic-new, generic-dedup, pagerduty-new, pagerduty-dedup, api-new, api-dedup ("new": a
fresh dedup key each request, so each opens an incident; "dedup": ten keys opened first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("generic-new", "generic-dedup", "pagerduty-new", "pagerduty-dedup", "api-new", "api-dedup")
PASSWORD = "a long passphrase"  # noqa: S105  (an account on a throw-away database)


async def drive(kind: str, count: int) -> None:
    """Sign up, make a service (and an integration), then send `count` + 10 requests of `kind`."""
    import httpx

    from app.main import create_app

    app = create_app()
    source, mode = kind.split("-")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            account = {"email": "bench@example.com", "password": PASSWORD, "full_name": "Bench"}
            answer = await client.post("/v1/auth/signup", json=account)
            assert answer.status_code == 201, answer.text
            form = {"username": account["email"], "password": PASSWORD}
            answer = await client.post("/v1/auth/login/access-token", data=form)
            assert answer.status_code == 200, answer.text
            user = {"Authorization": f"Bearer {answer.json()['access_token']}"}
            answer = await client.post("/v1/services/", json={"name": "bench"}, headers=user)
            assert answer.status_code == 201, answer.text
            service_id = answer.json()["id"]
            key = ""
            if source != "api":
                path = f"/v1/services/{service_id}/integrations/"
                answer = await client.post(
                    path, json={"name": source, "kind": source}, headers=user
                )
                assert answer.status_code == 201, answer.text
                key = answer.json()["key"]

            def request(index: int) -> tuple[str, dict[str, Any], dict[str, str]]:
                dedup = f"k{index}" if mode == "new" else f"k{index % 10}"
                if source == "api":
                    body = {"title": f"bench {dedup}", "dedup_key": dedup, "service_id": service_id}
                    return "/v1/incidents/", body, user
                if source == "generic":
                    body = {"summary": f"bench {dedup}", "dedup_key": dedup}
                    return "/v1/alerts/generic", body, {"Authorization": f"Bearer {key}"}
                payload = {"summary": f"bench {dedup}", "source": "bench", "severity": "error"}
                body = {"routing_key": key, "event_action": "trigger", "dedup_key": dedup}
                return "/v2/enqueue", body | {"payload": payload}, {}

            for index in range(count + 10):  # ten more: warm-up, and the dedup keys opened
                path, body, headers = request(index)
                answer = await client.post(path, json=body, headers=headers)
                assert answer.status_code in (200, 201, 202), (answer.status_code, answer.text)


def count_once(tree: Path, server: str, kind: str, requests: int) -> int:
    """The instructions callgrind counts for the driver with `requests` requests of `kind`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.databases import PostgresDatabase

    python = tree / ".venv" / "bin" / "python"
    with PostgresDatabase(server, prefix="ims_count") as url, tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {
            "DATABASE_URL": url,
            "ENVIRONMENT": "development",
            "SECRET_KEY": "count-instructions-0123456789abcdef",
            "WORKER_IN_PROCESS": "false",
            "RATE_LIMIT_INGEST_PER_SECOND": "0",
            "INGEST_NEW_INCIDENTS_PER_MINUTE": "0",
            "SIGNUP_ENABLED": "true",
            "SMTP_HOST": "",
            "LOG_LEVEL": "WARNING",
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": str(tree),
        }
        migrate = [str(tree / ".venv" / "bin" / "incident-management"), "migrate"]
        subprocess.run(migrate, cwd=tree, env=env, check=True, capture_output=True)  # noqa: S603
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            str(python), str(Path(__file__).resolve()), "--drive", kind, str(requests),
        ]  # fmt: skip
        run = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)  # noqa: S603
        if run.returncode != 0:
            raise SystemExit(f"{kind} x {requests} failed:\n{run.stderr[-3000:]}")
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no total in callgrind's output for {kind} x {requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=", ".join(KINDS))
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=350)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--drive", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        asyncio.run(drive(args.drive[0], int(args.drive[1])))
        return
    if not args.kinds or not set(args.kinds) <= set(KINDS) or args.large <= args.small:
        parser.error(f"name one or more of {', '.join(KINDS)}, and --large above --small")
    tree = args.tree.resolve()
    print(f"{'kind':<16} {'instructions a request':>24}   ({tree})")
    for kind in args.kinds:
        small = count_once(tree, args.server, kind, args.small)
        large = count_once(tree, args.server, kind, args.large)
        print(f"{kind:<16} {(large - small) / (args.large - args.small):>24,.0f}", flush=True)


if __name__ == "__main__":
    main()
