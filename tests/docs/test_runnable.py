"""The shell blocks the documentation says to paste, pasted: the README's walk-through, and every
block of docs/ marked `<!-- runnable -->`, each run with bash (`set -euo pipefail`) against an
`incident-management serve` of its own on a fresh SQLite database, as a reader runs them after
`make run`. A block is self-contained: it defines what it uses, with `BASE` pointing at the server.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.alerts.sources import SOURCES
from app.core.config import DEFAULT_SECRET_KEY
from tests.support.console import sign_in_over_http
from tests.support.ports import free_port
from tests.support.processes import CLI, serve, stop
from tests.support.settings import ROOT, clean_environment

WALKTHROUGH = re.compile(
    r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", re.DOTALL
)
RUNNABLE = re.compile(r"<!-- runnable -->\n```sh\n(.*?)```", re.DOTALL)
PROMISE = re.compile(r"^# → (.*)$", re.MULTILINE)  # what the line above it prints


@dataclass(frozen=True)
class Block:
    where: str  # path:line of the fence, for the failure message and the test id
    code: str


def doc_files() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


def runnable_blocks() -> list[Block]:
    found = []
    for path in doc_files():
        text = path.read_text()
        for match in RUNNABLE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append(Block(f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def walkthrough() -> str:
    blocks = WALKTHROUGH.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1, "README.md must have one walkthrough:start … walkthrough:end block"
    code: str = blocks[0]
    return code


@pytest.fixture
def server(tmp_path):
    """`incident-management serve` on a free port with a fresh SQLite database; its base URL."""
    port = free_port()
    env = clean_environment(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'docs.db'}",
        LOG_LEVEL="WARNING",
        WORKER_POLL_INTERVAL_SECONDS="0.2",
        PATH=f"{Path(CLI).parent}:/usr/local/bin:/usr/bin:/bin",
        # Where a reader's server is (BASE): what Twilio's signatures cover.
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        # As `make run` has it: the development key (the walk-through's text reply is signed
        # with the development Twilio token, which only such a server takes).
        SECRET_KEY=DEFAULT_SECRET_KEY,
    )
    process, base = serve(env, tmp_path, tmp_path / "server.log", port=port)
    try:
        yield base
    finally:
        stop(process)


def run(code: str, base: str, tmp_path: Path, where: str, after: str = "") -> str:
    """The block in bash with `set -euo pipefail` and BASE set, then `after`; its output."""
    script = f"set -euo pipefail\n{code}\n{after}\n"
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "BASE": base,
             "LANG": "C.UTF-8"},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{where} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    assert_promised_output(code, done.stdout, where)
    return done.stdout


def assert_promised_output(code: str, out: str, where: str) -> None:
    """Each `# → text` comment of the block is a line of its output, in the block's order."""
    lines = iter(out.splitlines())
    for promised in PROMISE.findall(code):
        assert any(line.strip() == promised.strip() for line in lines), (
            f"{where} promises the output {promised!r}, not printed in that order:\n{out}"
        )


def test_the_readme_walkthrough_runs_as_pasted(server, tmp_path):
    code = walkthrough()
    assert re.search(r"^BASE=\$\{BASE:-http://127\.0\.0\.1:8000\}$", code, re.MULTILINE)
    out = run(
        code, server, tmp_path, "README.md's walk-through",
        after='printf "\\n%s\\n%s\\n%s\\n%s\\n" "$INCIDENT" "$PAGED" "$EMAIL" "$PASSWORD"',
    )  # fmt: skip
    incident_id, paged_id, email, password = out.rstrip("\n").split("\n")[-4:]

    with httpx.Client(base_url=server, timeout=10, trust_env=False) as api:
        token = api.post(
            "/v1/auth/login/access-token", data={"username": email, "password": password}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert api.get("/v1/users/me", headers=auth).json()["role"] == "admin"
        incident = api.get(f"/v1/incidents/{incident_id}", headers=auth).json()
        assert incident["status"] == "resolved"
        assert incident["acknowledged_at"] and incident["resolved_at"]
        assert incident["alert_count"] == 2
        timeline = api.get(f"/v1/incidents/{incident_id}/timeline", headers=auth).json()["items"]
        kinds = [entry["type"] for entry in timeline]
        assert kinds.index("acknowledged") < kinds.index("resolved"), kinds
        paged = api.get(f"/v1/incidents/{paged_id}", headers=auth).json()
        assert paged["status"] == "acknowledged"  # by the text reply
        listed = api.get("/v1/incidents/", headers=auth).json()["items"]
        assert [item["id"] for item in listed] == [int(paged_id), int(incident_id)]
        [acknowledged] = [
            entry
            for entry in api.get(f"/v1/incidents/{paged_id}/timeline", headers=auth).json()["items"]
            if entry["type"] == "acknowledged"
        ]
        assert acknowledged["data"] == {"via": "sms"}
        assert acknowledged["actor"]["type"] == "user"

    # The console page the walk-through prints, with a signed-in session.
    assert f"{server}/ui/incidents/{incident_id}" in out
    with httpx.Client(base_url=server, timeout=10, trust_env=False) as browser:
        sign_in_over_http(browser, email, password)
        page = browser.get(f"/ui/incidents/{incident_id}")
        assert page.status_code == 200
        assert incident["title"] in page.text and "resolved" in page.text.lower()


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.where)
def test_a_runnable_docs_block_runs_as_pasted(block, server, tmp_path):
    run(block.code, server, tmp_path, block.where)


def test_every_alert_source_has_a_runnable_block():
    """docs/alert-sources.md shows each source of the registry with a curl that is tested."""
    guide = "\n".join(
        block.code for block in runnable_blocks() if block.where.startswith("docs/alert-sources.md")
    )
    missing = [kind for kind, source in SOURCES.items() if source.endpoint not in guide]
    assert not missing, f"docs/alert-sources.md has no runnable block for {missing}"
