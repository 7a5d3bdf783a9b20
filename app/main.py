"""The application factory. `app.main:app` is built on first access from the environment."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app import __version__, openapi
from app.alerts import router as alerts
from app.api import api_router
from app.core import batching, metrics, ratelimit
from app.core.batching import Batcher
from app.core.body_guard import InputGuard
from app.core.clock import Clock, SystemClock
from app.core.config import Settings, settings_or_exit
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import install_error_handlers
from app.core.health import router as health_router
from app.core.logging import configure_logging, redact_access_log
from app.core.observe import RequestObserver, RouteRecorder
from app.core.routing import SlashAliasMiddleware
from app.core.security_headers import SecurityHeaders
from app.core.timing import ServerTimingMiddleware
from app.flows.incidents import Opener
from app.flows.ingest import AlertBatcher
from app.notifications.router import document_webhooks
from app.ui import router as console
from app.ui.live import ChangeFeed
from app.worker.queues import queue_gauges
from app.worker.runner import Worker

DESCRIPTION = """
Alerts in from monitoring, deduplicated into incidents; escalation and notifications out.

Authenticate with **Authorize** (OAuth2 password flow: your email and password), or send
`Authorization: Bearer <token>` from `POST /v1/auth/login/access-token`.
"""


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_access_log()
        tune_garbage_collector()
        engine = create_engine(settings)
        metrics.instrument_pool(engine, "api")
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine, clock)
        app.state.change_feed = ChangeFeed(app.state.sessionmaker)
        app.state.worker = Worker(
            app.state.sessionmaker,
            clock,
            poll_interval=settings.worker_poll_interval_seconds,
            batch=settings.worker_batch_size,
            settings=settings,
        )
        # The batchers' own connections, not pinged before use (see app.core.batching): for
        # ingestion two per batch in flight, its transaction's and its rate-limit statement's,
        # and one for each batch of incidents opened through the API, all kept open (a pool that
        # had to open the second for each batch spent more on connecting than on the alerts:
        # 1,000 alerts a second instead of 2,000).
        ingest_engine = create_engine(
            settings, pool_size=3 * batching.IN_FLIGHT, plan_each_time=True
        )
        metrics.instrument_pool(ingest_engine, "ingest")
        # Incidents opened through the API, batched the same way, on the same connections.
        app.state.incident_batcher = Batcher(
            create_sessionmaker(ingest_engine, clock), clock, Opener(), wake=app.state.worker.wake
        )
        app.state.alert_batcher = AlertBatcher(
            create_sessionmaker(ingest_engine, clock),
            clock,
            reopen_window=timedelta(minutes=settings.reopen_window_minutes),
            limit=ratelimit.Limit.per(
                settings.rate_limit_ingest_per_second, 1, burst=settings.rate_limit_ingest_burst
            ),
            storm=settings.ingest_new_incidents_per_minute or None,
            wake=app.state.worker.wake,
        )
        task = asyncio.create_task(app.state.worker.run()) if settings.worker_in_process else None
        app.state.worker_task = task
        try:
            yield
        finally:
            await app.state.change_feed.close()
            await app.state.alert_batcher.close()
            await app.state.incident_batcher.close()
            await ingest_engine.dispose()
            if task is not None:
                app.state.worker.stop()
                await task
            await app.state.worker.close()
            await engine.dispose()

    app = FastAPI(
        title=settings.project_name,
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        # /docs and /redoc are installed by openapi.install, with their files served from here.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.gauge_readers = [queue_gauges]  # read at each scrape of /metrics
    install_error_handlers(app)
    alerts.install(app)  # every alert source's endpoint (matched first: the busiest)
    app.include_router(health_router)
    app.include_router(metrics.router)
    app.include_router(api_router)
    console.install(app)
    document_webhooks(app)
    openapi.install(app)
    # Added innermost first: security headers wrap everything, even a refused Host or preflight,
    # and every answer has a request id, an access line and its metrics.
    app.add_middleware(RouteRecorder)
    app.add_middleware(SlashAliasMiddleware, router=app.router)
    app.add_middleware(InputGuard)
    app.add_middleware(ServerTimingMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Integration-Key", "X-Request-ID"],
            expose_headers=["Server-Timing", "Retry-After"],
            max_age=600,
        )
    if settings.allowed_hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders, https=settings.public_base_url.startswith("https://"))
    app.add_middleware(RequestObserver, access_log=settings.access_log)
    return app


_gc_tuned = False


def tune_garbage_collector() -> None:
    """Once per process, at start-up: keep what is loaded by now (the app, its models, its
    libraries) out of the collector's scans, and collect less often.

    With the defaults a full collection, scanning every object the app ever loaded, paused each
    worker for about 100 ms every second or two under load, stalling every request in flight.
    Only reference cycles wait for the collector; everything else is freed at once regardless.
    """
    global _gc_tuned
    if not _gc_tuned:
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)
        _gc_tuned = True


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # `uvicorn app.main:app` and gunicorn look the attribute up; building it lazily keeps
    # importing this module free of environment reads (tests call create_app themselves).
    global _app
    if name == "app":
        if _app is None:
            settings = settings_or_exit()
            configure_logging(settings)
            _app = create_app(settings)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
