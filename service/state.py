"""The app's state, typed: one ``AppState`` on ``app.state.relevance``, reached with ``app_state()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from service.auth import ApiKeyAuth
from service.explain.components import ExplainComponents
from service.explain.metrics import ExplainMetrics
from service.lifecycle import BundleReloader, Lifecycle
from service.metrics import Metrics
from service.scorer import Scorer
from service.settings import Settings
from teacher import Teacher


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    explain_metrics: ExplainMetrics
    lifecycle: Lifecycle
    score_auth: ApiKeyAuth  # open unless RELEVANCE_SCORE_API_KEYS is set
    # The /explain teacher; None: load_teacher(RELEVANCE_EXPLAIN_TEACHER). Tests replace it before startup.
    explain_teacher: Callable[[], Teacher] | None = None
    preloaded_scorer: Scorer | None = None  # built and checked before the server starts (service/cli.py)
    reload_on_sighup: bool = False  # set by service/server.py (a process-wide signal handler)
    # The serving bundle; replaced by a reload (service/lifecycle.py). None until the lifespan starts it.
    scorer: Scorer | None = None
    # Built by the lifespan, before any request is served.
    reloader: BundleReloader = field(init=False, repr=False)
    explain: ExplainComponents = field(init=False, repr=False)


def app_state(where: HTTPConnection | FastAPI) -> AppState:
    """The state of the app serving a request, or of the app itself."""
    app = where.app if isinstance(where, HTTPConnection) else where
    return app.state.relevance
