"""HTTP routes: POST /score, GET /healthz, /readyz, /metrics (contract in docs/API.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from service.errors import ApiError, DeadlineExceeded
from service.middleware import REQUEST_ID_HEADER, clean_request_id
from service.schemas import ScoreResponse, error_responses, parse_score_request
from service.scorer import RequestTimings, Scorer
from service.settings import MIN_DEADLINE_MS, Settings
from service.state import app_state

router = APIRouter()
T = TypeVar("T")

DEADLINE_HEADER = "X-Deadline-Ms"
SERVER_TIMING_HEADER = "Server-Timing"
# Status used (and logged) when the client went away before its answer was ready, as nginx does.
CLIENT_CLOSED = 499


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


class ClientGone(Exception):
    pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (its queued inputs are then dropped)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # server shutting down
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    raise ClientGone


_ERRORS = error_responses(
    {
        400: "Body is not UTF-8 or not JSON",
        401: "Missing or wrong API key (when keys are configured)",
        413: "Body or item count over the limit",
        422: "A field or header is missing, of the wrong type, blank or too long",
        503: "Queue full, model not ready or shutting down (Retry-After)",
        504: "Not scored within the request deadline (X-Deadline-Ms or the default)",
    }
)


def request_deadline_ms(request: Request, settings: Settings) -> float:
    """The caller's budget from ``X-Deadline-Ms`` (milliseconds from arrival), else the default."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return settings.request_deadline_ms
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not MIN_DEADLINE_MS <= value <= settings.max_request_deadline_ms:  # also false for nan
        raise ApiError(
            422,
            "validation_error",
            f"header {DEADLINE_HEADER} must be a number of milliseconds from {MIN_DEADLINE_MS:g} to "
            f"{settings.max_request_deadline_ms:g} (RELEVANCE_MAX_REQUEST_DEADLINE_MS)",
            field=f"header.{DEADLINE_HEADER}",
        )
    return value


def _current_scorer(request: Request) -> Scorer:
    state = app_state(request)
    if state.lifecycle.draining:
        state.metrics.rejected.labels("shutting_down").inc()
        # Connection: close, so clients reconnect (to another replica, or to this port once it is back)
        # instead of sending on a kept-alive connection the server is about to close.
        raise ApiError(
            503,
            "shutting_down",
            "this replica is shutting down; retry on another one",
            headers={"Retry-After": "1", "Connection": "close"},
        )
    scorer = state.scorer
    if scorer is None or not scorer.ready:
        raise ApiError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    return scorer


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=_ERRORS,
    summary="Score items for a query",
    # The body is parsed by hand (service/schemas.py); its schema, with this server's limits, is
    # added to the components by the app (create_app).
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}},
        }
    },
)
async def score(request: Request) -> Response:
    start = time.perf_counter()
    state = app_state(request)
    settings = state.settings
    caller = await state.score_auth(request)  # open ("anonymous") unless RELEVANCE_SCORE_API_KEYS is set
    deadline_ms = request_deadline_ms(request, settings)
    # Refuse at once, before reading and parsing the body, when not ready, draining or already
    # too far behind for this deadline (under overload, refusals must stay cheap).
    _current_scorer(request).batcher.refuse_if_overloaded(1, deadline_ms)
    try:
        body = await request.body()  # size capped and read within a timeout by RequestBodyMiddleware
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)
    parsed = parse_score_request(body, settings.limits)
    if parsed.request_id and REQUEST_ID_HEADER.lower() not in request.headers:
        request.state.request_id = clean_request_id(parsed.request_id) or request.state.request_id
    request.state.log_fields = {"items": len(parsed.items)}
    # Picked again after the body was read (a reload may have swapped bundles meanwhile) and entered
    # with no await in between, so the scorer cannot be retired under this request.
    scorer = _current_scorer(request)
    remaining_ms = deadline_ms - (time.perf_counter() - start) * 1000
    if remaining_ms <= 0:
        raise DeadlineExceeded(deadline_ms)
    timings = RequestTimings()
    try:
        with scorer.in_use():
            results = await _unless_disconnected(request, scorer.score(parsed, remaining_ms, timings))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    except DeadlineExceeded:  # the batcher knows the remaining time; the caller set the whole budget
        raise DeadlineExceeded(deadline_ms) from None
    state.explain.remember_items(parsed.items, caller)  # for GET /explain?item_id=; never blocks
    took_ms = (time.perf_counter() - start) * 1000
    response = _json(
        {
            "model": scorer.manifest.summary("name", "version"),
            "scores": results,
            "took_ms": round(took_ms, 3),
        }
    )
    response.headers[SERVER_TIMING_HEADER] = server_timing(timings, took_ms)
    return response


def server_timing(timings: RequestTimings, total_ms: float) -> str:
    """The W3C Server-Timing value of a /score answer, in milliseconds: ``tokenize``, ``queue`` (waiting
    for a batch), ``infer`` (the batches that held its inputs) and ``total`` (arrival to answer)."""
    parts = {
        "tokenize": timings.tokenize_s * 1000,
        "queue": timings.queue_s * 1000,
        "infer": timings.infer_s * 1000,
        "total": total_ms,
    }
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in parts.items())


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: bundle loaded and warmed up",
    responses={503: {"description": "Not ready yet, or draining before shutdown"}},
)
async def readyz(request: Request) -> Response:
    state = app_state(request)
    scorer = state.scorer
    if state.lifecycle.draining:
        return _json({"status": "draining"}, status=503)
    if scorer is None or not scorer.ready:
        return _json({"status": "not_ready"}, status=503)
    return _json(
        {
            "status": "ready",
            # The folder's name only: /readyz is unauthenticated (POST /admin/reload shows the full path).
            "bundle": {**scorer.manifest.summary(), "dir": scorer.bundle_dir.name},
            "provider": scorer.model.provider,
            "providers": scorer.model.providers_in_use,
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(app_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
