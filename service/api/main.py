"""The FastAPI application: routers, error handlers, the stale-run reaper and the
dispatch reconciler (service/dispatch.py).

`create_app(settings)` builds an app for one configuration (tests build one per
database); the module-level `app` is what `uvicorn service.api.main:app` serves. Building
an app connects to nothing: the engine and the broker connect on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from service import store
from service.api.deps import get_caller
from service.api.errors import BodySizeLimitMiddleware, install_error_handlers
from service.api.live_feed import LiveFeeds
from service.api.openapi import install_openapi
from service.api.summary_cache import SummaryCache
from service.api.routes import (
    analysis,
    callbacks,
    compare,
    events,
    experiments,
    export,
    health,
    histograms,
    plots,
    reproduction_runs,
    reproductions,
    series,
    session,
    sweeps,
)
from service.auth.guard import AUTH_RESPONSES, check_binding
from service.callbacks.delivery import deliver_once
from service.config import Settings
from service.config import settings as default_settings
from service.db.engine import make_engine, make_session_factory
from service.db.reachability import DatabaseReachability, probe_write
from service.dispatch import reconcile_once, send_requeued
from service.queue import Enqueuer
from service.store.idempotency import purge_expired_keys
from service.web import install_web

log = logging.getLogger("gradwatch.api")
# Expired idempotency keys are dead weight only (a reused one is replaced anyway).
KEY_PURGE_INTERVAL_S = 600.0


def reap_once(app: FastAPI) -> list[str]:
    """Requeue (to resume from their checkpoint) or, past GRADWATCH_MAX_ATTEMPTS, fail the
    running experiments whose worker stopped writing heartbeats; returns the ids of both."""
    settings: Settings = app.state.settings
    with app.state.session_factory() as session:
        outcome = store.reap_stale_experiments(
            session, settings.heartbeat_stale_s, settings.max_attempts, settings.keep_checkpoints
        )
        if outcome.requeued:
            send_requeued(session, app.state.enqueuer, outcome.requeued)
    for experiment_id in outcome.requeued:
        log.warning(
            "experiment %s: no heartbeat for %s s (worker lost): queued again to resume from its checkpoint",
            experiment_id,
            settings.heartbeat_stale_s,
        )
    for experiment_id in outcome.failed:
        log.warning("experiment %s ended: worker lost and not resumed again", experiment_id)
    return outcome.requeued + outcome.failed


def purge_keys_once(app: FastAPI) -> int:
    with app.state.session_factory() as session:
        return purge_expired_keys(session)


def reconcile_dispatch_once(app: FastAPI) -> object:
    return reconcile_once(app.state.session_factory, app.state.enqueuer, app.state.settings)


def _in_background(work: Callable[[FastAPI], object], app: FastAPI) -> object:
    """Run one pass of a background loop while holding `app.state.background_work`: a pass
    already running in the thread pool outlives its task's cancellation, and shutdown
    waits for it rather than dispose of the engine under it (a leaked connection)."""
    with app.state.background_work:
        return work(app)


async def _repeat(app: FastAPI, interval_s: float, work: Callable[[FastAPI], object], what: str) -> None:
    while True:
        try:
            await run_in_threadpool(_in_background, work, app)
        except Exception:  # noqa: BLE001 - a database outage must not end the loop
            log.exception("%s failed; retrying in %s s", what, interval_s)
        await asyncio.sleep(interval_s)


async def _reap_forever(app: FastAPI, interval_s: float) -> None:
    # The reaper's clock (service/db/reachability.py): after an outage, or this process's
    # start, nothing is reaped until the database has taken writes for heartbeat_stale_s.
    reachability = DatabaseReachability()
    stale_s = app.state.settings.heartbeat_stale_s
    while True:
        try:
            attempt_started = reachability.now()
            await run_in_threadpool(_in_background, lambda app: probe_write(app.state.session_factory), app)
            reachability.succeeded(attempt_started)
            if reachability.reachable_for() >= stale_s:
                await run_in_threadpool(_in_background, reap_once, app)
        except Exception:  # noqa: BLE001 - a database outage must not kill the reaper
            reachability.failed()
            log.exception("the stale-experiment reaper failed; retrying in %s s", interval_s)
        await asyncio.sleep(interval_s)


def _wait_for_background_work(app: FastAPI) -> None:
    with app.state.background_work:
        pass


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # The pool that sync routes and dependencies run in; the database pool holds one
    # connection per thread (db_pool_size).
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    loops = []
    if settings.reaper_interval_s > 0:
        loops.append(_reap_forever(app, settings.reaper_interval_s))
        loops.append(_repeat(app, KEY_PURGE_INTERVAL_S, purge_keys_once, "purging expired idempotency keys"))
    if settings.dispatch_interval_s > 0:
        loops.append(_repeat(app, settings.dispatch_interval_s, reconcile_dispatch_once, "the dispatch reconciler"))
    if settings.callback_poll_s > 0:
        loops.append(_repeat(app, settings.callback_poll_s, deliver_once, "the callback delivery loop"))
    running = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.live_feeds.close()
        await run_in_threadpool(_wait_for_background_work, app)
        app.state.enqueuer.close()
        app.state.engine.dispose()


def create_app(settings: Settings | None = None, enqueuer: Enqueuer | None = None) -> FastAPI:
    """Raises AuthConfigError for GRADWATCH_AUTH=off on a non-loopback api_host (the CLI's
    `api` command checks the address it actually binds, too)."""
    settings = settings or default_settings
    check_binding(settings, settings.api_host)
    app = FastAPI(
        title="gradwatch",
        summary="Train networks and watch their gradients vanish or explode.",
        version="0.1.0",
        lifespan=lifespan,
        # served by service/web/docs.py with bundles shipped in the package (no CDN)
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = make_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    app.state.session_factory = make_session_factory(app.state.engine)
    app.state.background_work = threading.Lock()  # held by each pass of a background loop
    app.state.live_feeds = LiveFeeds(app.state.session_factory, settings)  # the event streams' poller
    app.state.enqueuer = enqueuer or Enqueuer(settings)
    app.state.summary_cache = SummaryCache(settings.summary_cache_bytes)
    install_error_handlers(app, settings.db_unavailable_retry_after_s)
    install_openapi(app, settings.limits)
    app.add_middleware(BodySizeLimitMiddleware, limits=settings.limits)
    if settings.cors_origin_list:
        # Bearer tokens, not cookies: credentials stay off, so a browser never attaches
        # anything on its own, and a cross-site page without the token gets a 401.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Idempotent-Replayed", "Location", "X-Gradwatch-Metric", "X-Gradwatch-Layer"],
            allow_credentials=False,
        )
    app.include_router(health.router)  # the only route without a token: probes need it
    for router in (
        experiments.router,
        series.router,
        analysis.router,
        export.router,
        callbacks.experiments_router,
        callbacks.sweeps_router,
        callbacks.secret_router,
        plots.experiments_router,
        histograms.router,
        sweeps.router,
        plots.sweeps_router,
        compare.router,
        events.router,
        session.router,
        reproductions.router,
        reproduction_runs.router,
    ):
        app.include_router(router, dependencies=[Depends(get_caller)], responses=AUTH_RESPONSES)
    install_web(app)  # the dashboard's pages, /docs and /redoc; last, so `/` catches nothing of the API's
    return app


app = create_app()
