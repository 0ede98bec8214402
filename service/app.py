"""The app factory: ``create_app(settings)`` wires settings, metrics, the scorer, routes and middleware;
all of it is held by one ``AppState`` (service/state.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.admin import router as admin_router
from service.api import router
from service.auth import ApiKeyAuth, load_api_keys
from service.console import router as console_router
from service.docs import document_http_contract, mount_docs
from service.errors import ApiError, error_response
from service.explain.components import ExplainComponents, bundle_student
from service.explain.metrics import ExplainMetrics
from service.explain.router import router as explain_router
from service.lifecycle import BundleReloader, Lifecycle, publish_model_info
from service.logs import configure_logging
from service.metrics import Metrics
from service.middleware import (
    JsonContentTypeMiddleware,
    RequestBodyMiddleware,
    RequestContextMiddleware,
)
from service.schemas import field_path, score_request_openapi
from service.scorer import Scorer
from service.settings import Settings
from service.state import AppState, app_state

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app_state(app)
        # `relevance serve` loads and checks the bundle before uvicorn starts (one-line errors); else
        # here, where a failure raises BundleError with the file and the problem.
        scorer = state.preloaded_scorer or Scorer(settings, metrics)
        state.preloaded_scorer = None
        await scorer.start()
        state.scorer = scorer
        publish_model_info(metrics, scorer)
        # Read at scrape time from whichever bundle serves now (a reload swaps the scorer).
        metrics.queue_work_seconds.set_function(lambda: state.scorer.batcher.backlog_s())
        state.reloader = BundleReloader(
            settings,
            metrics,
            get_scorer=lambda: state.scorer,
            set_scorer=lambda new: setattr(state, "scorer", new),
        )
        # /explain: settings and teacher factory read from the state now (tests may replace them).
        explain = ExplainComponents(
            state.settings.explain,
            teacher_factory=state.explain_teacher,
            student=bundle_student(lambda: state.scorer),
            metrics=state.explain_metrics,
        )
        await explain.start()
        state.explain = explain
        sighup = _reload_on_sighup(state) if state.reload_on_sighup else None
        try:
            yield
        finally:
            if sighup is not None:
                asyncio.get_running_loop().remove_signal_handler(sighup)
            await explain.stop()
            await state.reloader.wait_retired()
            await state.scorer.stop(settings.shutdown_grace_s)

    # /docs is served from local assets (service/docs.py): the default page loads Swagger UI from a CDN
    # and is blank offline. ReDoc has no local assets here, so it is off.
    app = FastAPI(
        title="relevance",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Online relevance scoring for e-commerce search (see docs/API.md).",
    )
    lifecycle = Lifecycle(settings.shutdown_grace_s)
    app.state.relevance = AppState(
        settings=settings,
        metrics=metrics,
        explain_metrics=ExplainMetrics(metrics.registry),
        lifecycle=lifecycle,
        score_auth=ApiKeyAuth(
            load_api_keys(settings.score_api_keys, setting="RELEVANCE_SCORE_API_KEYS"),
            required=False,
            setting="RELEVANCE_SCORE_API_KEYS",
        ),
    )
    app.include_router(router)
    app.include_router(explain_router)
    app.include_router(admin_router)
    app.include_router(console_router)
    mount_docs(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(
            ApiError(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(ApiError(500, "internal_error", "internal error; see the service log"))

    # Innermost first; RequestContextMiddleware is outermost, so 408s, 413s and 415s are logged too.
    app.add_middleware(
        RequestBodyMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        drain=lifecycle.drain_started,
    )
    app.add_middleware(JsonContentTypeMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.openapi = _openapi_with_limits(app, settings)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # off by default: browsers get no CORS headers unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID", "X-Deadline-Ms"],
        )
    return app


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """FastAPI's validation errors (bodies, query and header parameters of the routes that let FastAPI
    parse them) in the service's error shape, named as /score names its own: 400 ``invalid_json``
    for a body that is not JSON; ``item.title``, the query parameter ``item_id``, ``header.X-Name``."""
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", first["msg"])
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {reason}")
    loc = tuple(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if loc and loc[0] in ("query", "header", "path", "cookie"):
        name = ".".join(str(p) for p in loc[1:])
        field = name if loc[0] == "query" else f"{loc[0]}.{name}"
        return ApiError(422, "validation_error", f"{loc[0]} parameter {name!r}: {message}", field=field)
    field = field_path(loc[1:] if loc and loc[0] == "body" else loc) or None
    return ApiError(422, "validation_error", f"{field or 'body'}: {message}", field=field)


def _openapi_with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                score_request_openapi(settings.limits)
            )
            document_http_contract(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _reload_on_sighup(state: AppState) -> signal.Signals:
    """SIGHUP reloads the serving bundle folder (e.g. after a new bundle was written in place)."""
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        try:
            await state.reloader.reload()
        except ApiError as exc:  # already logged by the reloader; the old bundle keeps serving
            log.warning("SIGHUP reload: %s", exc.message)

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    return signal.SIGHUP
