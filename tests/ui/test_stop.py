"""A real `incident-management serve` with a console page's event stream open: a stop signal
ends the stream at once, instead of the server waiting out its graceful timeout for it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.console import sign_in_over_http
from tests.support.processes import CLI, serve, stop

PASSWORD = "a long passphrase"


def test_a_stop_signal_ends_open_event_streams(tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(CLI).parent) + ":/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
    }
    log_path = tmp_path / "server.log"
    process, base = serve(env, tmp_path, log_path)
    try:
        made = httpx.post(
            f"{base}/v1/auth/signup",
            json={"email": "ada@example.com", "password": PASSWORD, "full_name": "Ada"},
        )
        assert made.status_code == 201
        with httpx.Client(base_url=base, timeout=30) as browser:
            sign_in_over_http(browser, "ada@example.com", PASSWORD)
            with browser.stream("GET", "/ui/events") as stream:
                lines = stream.iter_lines()
                assert [next(lines) for _ in range(3)] == [
                    "retry: 1000",
                    "event: ready",
                    "data: {}",
                ]
                process.terminate()  # SIGTERM, as a deploy or Ctrl-C would
                rest = list(lines)  # the stream ends (or the 30 s read timeout fails the test)
            assert all(line == "" or line.startswith(":") for line in rest)
        assert process.wait(timeout=30) in (0, -15)  # uvicorn re-raises the signal it handled
    finally:
        stop(process)
    log = log_path.read_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert "Application shutdown complete" in log
