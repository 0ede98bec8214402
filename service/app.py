"""The app factory: ``create_app(settings)`` wires settings, metrics, the scorer, routes and middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.api import router
from service.auth import ApiKeyAuth, load_api_keys
from service.errors import ApiError, error_response
from service.explain.components import ExplainComponents, bundle_student
from service.explain.metrics import ExplainMetrics
from service.explain.router import router as explain_router
from service.explain.settings import ExplainSettings
from service.logs import configure_logging
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.scorer import Scorer
from service.settings import Settings

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scorer = Scorer(settings, metrics)  # raises BundleError with the file and the problem
        m = scorer.manifest
        metrics.model_info.info({"name": m.name, "version": m.version, "kind": m.kind,
                                 "provider": scorer.model.provider, "bundle": str(scorer.bundle_dir)})
        await scorer.start()
        # /explain: settings and teacher factory from app.state (set below; tests may replace them).
        explain = ExplainComponents(app.state.explain_settings, teacher_factory=app.state.explain_teacher,
                                    student=bundle_student(scorer), metrics=app.state.explain_metrics)
        await explain.start()
        app.state.explain = explain
        app.state.scorer = scorer
        try:
            yield
        finally:
            await explain.stop()
            await scorer.stop()

    app = FastAPI(title="relevance", version="0.1.0", lifespan=lifespan,
                  description="Online relevance scoring for e-commerce search (see docs/API.md).")
    app.state.settings = settings
    app.state.score_auth = ApiKeyAuth(load_api_keys(settings.score_api_keys, setting="RELEVANCE_SCORE_API_KEYS"),
                                      required=False, setting="RELEVANCE_SCORE_API_KEYS")
    app.state.metrics = metrics
    app.state.scorer = None
    app.state.explain_settings = ExplainSettings()
    app.state.explain_teacher = None  # a Teacher factory; None: load_teacher(RELEVANCE_EXPLAIN_TEACHER)
    app.state.explain_metrics = ExplainMetrics(metrics.registry)
    app.include_router(router)
    app.include_router(explain_router)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(ApiError(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                                       str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return error_response(ApiError(422, "validation_error", f"{field}: {first['msg']}", field=field))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(ApiError(500, "internal_error", "internal error; see the service log"))

    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
