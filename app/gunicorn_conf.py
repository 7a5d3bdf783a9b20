"""gunicorn's settings for production: `gunicorn -c python:app.gunicorn_conf app.main:app`.

Each setting comes from the environment, with a production default; gunicorn's command-line
options still win over this file. The application's own settings (DATABASE_URL, SECRET_KEY, …)
are read by each worker as usual.

| variable | default | |
|---|---|---|
| `GUNICORN_BIND` | `0.0.0.0:$PORT` (`PORT`: 8000) | address(es) to listen on, comma-separated |
| `WEB_CONCURRENCY` | usable CPUs, at least 2, at most 4 | worker processes |
| `GUNICORN_GRACEFUL_TIMEOUT` | 30 | seconds a worker has to stop after SIGTERM, then SIGKILL |
| `GUNICORN_TIMEOUT` | `GUNICORN_GRACEFUL_TIMEOUT` | a worker silent this long is replaced |
| `GUNICORN_KEEPALIVE` | 75 | seconds an idle client connection is kept open |
| `GUNICORN_MAX_REQUESTS` | 0 (off) | restart a worker after this many requests (± jitter) |
| `GUNICORN_MAX_REQUESTS_JITTER` | a tenth of the above | |
| `FORWARDED_ALLOW_IPS` | `127.0.0.1,::1` | proxies whose `X-Forwarded-For`/`-Proto` are believed |
| `LOG_LEVEL` | `INFO` | gunicorn's own log level too |
| `PROMETHEUS_MULTIPROC_DIR` | a new temporary dir | the workers' metrics, summed by /metrics |

Graceful shutdown (SIGTERM to the master): listening stops at once; each worker lets its
requests in flight finish for up to half of GUNICORN_GRACEFUL_TIMEOUT, then runs the
application's shutdown, which stops its in-process escalation worker after the batch in hand
(and closes its database connections) in the other half. The half kept for the application
is why the worker class below exists: uvicorn's own worker waits for in-flight requests without
limit, so one stalled client made gunicorn SIGKILL the worker with its shutdown never run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.glogging import Logger as _Logger  # type: ignore[import-untyped]
from uvicorn.workers import UvicornWorker as _UvicornWorker

# Metrics from every worker, added up by whichever answers /metrics (prometheus-client's
# multiprocess mode): each process keeps its values in files here. Set before any worker (or
# prometheus-client) starts; a directory of one's own unless PROMETHEUS_MULTIPROC_DIR names one.
_MADE_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MADE_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ims-metrics-")


def _number(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise SystemExit(f"{name} must not be negative, not {value!r}")
    return number


def default_workers() -> int:
    """One worker per usable CPU, at least 2 and at most 4.

    Not gunicorn's (2 × CPUs) + 1, which is for synchronous workers that block on I/O: a uvicorn
    worker is an event loop that keeps a CPU busy by itself, so more workers than CPUs only add
    memory, database connections and in-process workers polling the database. At least 2, so that
    a crashed or restarting worker leaves another serving and firing escalations; at most 4,
    because each worker keeps its own connection pools (up to 2 × DATABASE_POOL_SIZE + 8
    connections: 28 by default), so that 4 may already hold 112 at a peak, past PostgreSQL's
    default max_connections (100): more workers, or hosts, need a smaller DATABASE_POOL_SIZE or a
    larger max_connections. In a container limited by a CPU quota rather than by CPUs, set
    WEB_CONCURRENCY (the affinity mask below does not see quotas).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(max(2, cpus or 1), 4)


bind = [
    address.strip()
    for address in os.environ.get(
        "GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000').strip() or '8000'}"
    ).split(",")
    if address.strip()
]
workers = _number("WEB_CONCURRENCY", default_workers()) or 1

# A worker gets SIGKILLed this long after SIGTERM. Half of it goes to requests in flight, half to
# the application's shutdown: the in-process worker finishes its batch (a delivery waits for at
# most NOTIFY_CONNECT_TIMEOUT_SECONDS + NOTIFY_READ_TIMEOUT_SECONDS, 15 s by default). Whatever
# runs the container must wait longer before killing gunicorn itself (Kubernetes:
# terminationGracePeriodSeconds, 30 by default, so set 35 or more; `docker stop -t`, 10 by default).
graceful_timeout = _number("GUNICORN_GRACEFUL_TIMEOUT", 30)
# A worker whose event loop has not checked in for this long is killed and replaced. It is no
# shorter than graceful_timeout: a worker stopping during a restart (max_requests, HUP) no longer
# checks in, and the master would otherwise kill it before its shutdown is done.
timeout = _number("GUNICORN_TIMEOUT", graceful_timeout)
# Longer than a load balancer's idle timeout (AWS ALB: 60 s), so that the balancer, not we, closes
# an idle connection: else it may send a request on one we are closing, and answer 502. Idle
# connections cost an async worker next to nothing; shutdown closes them at once.
keepalive = _number("GUNICORN_KEEPALIVE", 75)
# Off by default: nothing here is known to leak, and a restart throws away the worker's warm
# state (connection pools, the frozen garbage-collector generation). When turned on, a restarting
# worker stops its in-process escalation worker cleanly like any shutdown, the others go on
# firing, and its replacement starts a new one; the jitter keeps workers from restarting together.
max_requests = _number("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _number("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 10)

# Behind a reverse proxy: its address, so that rate limits see the client's address from
# X-Forwarded-For. Never `*` on a port clients can reach: they would choose their own address.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No gunicorn access log: the application writes one line per request itself (`app.access`,
# with the route, status, duration, user and request id; see app/core/logging.py).
accesslog = None
errorlog = "-"  # stderr
loglevel = os.environ.get("LOG_LEVEL", "INFO").strip().lower() or "info"
proc_name = "incident-management"
# The workers' heartbeat files: in memory, where a container's /tmp may be on a slow overlay.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# No control socket (gunicorn 25.1+): signals do all we need (TERM, HUP, TTIN/TTOU), and its
# default path is one per user, so that two instances on one host would take each other's.
control_socket_disable = True


class Logger(_Logger):
    """gunicorn's logger, its lines written through the application's handler, in its format,
    from the first ("Starting gunicorn"), and again after SIGHUP, which re-runs this set-up.

    The application's settings are checked here, once, in the master, before any worker starts.
    A refused configuration (production with the default SECRET_KEY, say) then stops gunicorn
    with the message and exit status 2. Left to the workers, each would print it and exit, and
    the master would start new ones for ever.
    """

    def setup(self, cfg: Any) -> None:
        from app.core.config import settings_or_exit
        from app.core.logging import configure_logging

        super().setup(cfg)
        configure_logging(settings_or_exit())


logger_class = f"{__name__}.Logger"


def on_starting(server: Any) -> None:
    """Values left by an earlier run in a metrics directory that was given would be added to
    this one's."""
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def on_exit(server: Any) -> None:
    """The metrics directory made for this run goes with it (one that was given stays)."""
    if _MADE_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges (connections in use) no longer count; its counters do."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class UvicornWorker(_UvicornWorker):
    """uvicorn's gunicorn worker, with requests in flight given at most half of
    graceful_timeout at shutdown (see the module's docstring)."""

    CONFIG_KWARGS: dict[str, Any] = {
        **_UvicornWorker.CONFIG_KWARGS,
        "timeout_graceful_shutdown": max(1, graceful_timeout // 2),
    }

    async def _serve(self) -> None:
        """uvicorn's, with app.core.serving's server (the console's streams end at a stop
        signal)."""
        from app.core.serving import Server

        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


worker_class = f"{__name__}.UvicornWorker"
