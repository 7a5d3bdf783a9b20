"""The service's processes, started as people start them and ended by the PID they were started
with: `incident-management serve`, `migrate` and `worker`, and `uvicorn app.main:app`.

Every process listens on 127.0.0.1 only; every wait for one has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.waiting import poll, wait_until

BIN = Path(sys.executable).parent  # the virtual environment's scripts
CLI = str(BIN / "incident-management")  # the console script the project installs


def cli_command() -> list[str]:
    """`incident-management`, or the module behind it where the script is not installed."""
    return [CLI] if Path(CLI).exists() else [sys.executable, "-m", "app.cli"]


def wait_for_health(
    base: str,
    process: subprocess.Popen[Any],
    seconds: float = 30,
    *,
    log: Callable[[], str] | None = None,
) -> httpx.Response:
    """The first 200 of `base`/health; fails when `process` exits first, with `log()` (or what it
    wrote to a pipe), or when `seconds` pass."""

    def probe() -> httpx.Response | None:
        if process.poll() is not None:
            said = log() if log is not None else process.communicate()[1]
            raise AssertionError(f"the server exited with {process.returncode}: {said}")
        try:
            answer = httpx.get(f"{base}/health", timeout=2, trust_env=False)
        except httpx.TransportError:
            return None
        return answer if answer.status_code == 200 else None

    return poll(f"{base}/health to answer 200", probe, timeout=seconds, interval=0.2)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def serve(
    env: dict[str, str], cwd: Path, log_path: Path, *options: str, port: int | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`incident-management serve` on a loopback port (a free one unless given), its stderr (the
    log) to `log_path`; returns the process and its base URL once it answers /health."""
    port = port or free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [CLI, "serve", "--port", str(port), *options], env=env, cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, process, seconds=90, log=lambda: log_tail(log_path))
    except BaseException:
        stop(process)
        raise
    return process, base


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> tuple[str, str]:
    """End a process we started: SIGTERM to its PID, SIGKILL after `timeout` seconds; return
    what it printed on stdout and stderr (when those are pipes)."""
    if process.poll() is None:
        process.terminate()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out or "", err or ""


def stop_all(processes: list[subprocess.Popen[Any]], timeout: float = 15) -> None:
    """`stop` for several processes at once: each is signalled before any is waited for."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        stop(process, timeout)


def run_migrations(env: dict[str, str], cwd: Path | None = None, timeout: float = 180) -> str:
    """`incident-management migrate` with `env`; what it printed. Fails if it fails."""
    command = [*cli_command(), "migrate"]
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout.strip()


class WorkerProcess(subprocess.Popen[str]):
    log: Path  # its stderr: the worker's log


def start_worker(url: str, tmp_path: Path, batch: int = 500) -> WorkerProcess:
    """`incident-management worker` on the database of `url` (SECRET_KEY and ENVIRONMENT not
    passed on: the defaults), its log in `tmp_path`; returned once it runs its loop (and so
    handles SIGTERM)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ENVIRONMENT")}
    env |= {"DATABASE_URL": url, "WORKER_POLL_INTERVAL_SECONDS": "0.1", "LOG_LEVEL": "INFO",
            "WORKER_BATCH_SIZE": str(batch)}  # fmt: skip
    log = tmp_path / f"worker-{len(list(tmp_path.glob('worker-*.log')))}.log"
    with log.open("w") as stderr:
        process = WorkerProcess(
            [CLI, "worker"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=stderr, text=True,
        )  # fmt: skip
    process.log = log
    deadline = time.monotonic() + 30
    while "worker started" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "worker did not start"
        time.sleep(0.05)
    return process


def terminate_on_signal(signum: int, frame: object) -> None:
    """A SIGTERM handler for runners: unwind through every cleanup, as Ctrl-C does."""
    raise SystemExit(128 + signum)


class Process:
    """One of the service's processes, its output in a log file, in a session of its own; ended
    by its PID. It may be started again once it stopped (the log is appended to)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        logs: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.args, self.env, self.cwd = name, args, env, cwd
        self.log_path = logs / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} runs already"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n---- start {self.starts} ----\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no rollback by the process itself."""
        if self.running:
            assert self.popen is not None
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there 15 s later."""
        if self.popen is not None:
            stop(self.popen)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


class Server(Process):
    """`python -m uvicorn app.main:app` on a loopback port (a free one unless given)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        logs: Path,
        *,
        cwd: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(
            name, [sys.executable, "-m", "uvicorn", "app.main:app", *address], env, logs, cwd=cwd
        )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, seconds: float = 30) -> dict[str, Any]:
        """/health's answer once it is 200 (for callers without an event loop)."""
        assert self.popen is not None, f"{self.name} was not started"
        found: dict[str, Any] = wait_for_health(
            self.base_url, self.popen, seconds, log=lambda: self.tail(40)
        ).json()
        return found

    async def healthy(self, seconds: float = 30) -> None:
        """Until /health answers 200; fails if the process exits first."""

        async def probe() -> bool | None:
            if not self.running:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            try:
                async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                    answer = await client.get(f"{self.base_url}/health")
            except httpx.TransportError:
                return None
            return True if answer.status_code == 200 else None

        await wait_until(f"{self.name}'s /health", probe, seconds=seconds)


class Processes:
    """The processes a test started; `end_all` ends every one of them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Process] = []

    def api(self, name: str, env: dict[str, str], *, in_process_worker: bool = True) -> Server:
        env = env | {"WORKER_IN_PROCESS": "true" if in_process_worker else "false"}
        process = Server(name, env, self.logs)
        self.started.append(process)
        return process

    def worker(self, name: str, env: dict[str, str]) -> Process:
        process = Process(name, [CLI, "worker"], env, self.logs)
        self.started.append(process)
        return process

    def migrate(self, env: dict[str, str]) -> None:
        run_migrations(env, timeout=120)

    def end_all(self) -> None:
        for process in self.started:
            process.stop()
