"""HTTP routes of the slow path: ``GET /explain?query=&item_id=`` and ``POST /explain``.

Both need an API key and pass the per-key rate limit. GET looks the item up in the Redis item store
(filled by ``POST /score``); POST carries the item. The student's score and the teacher's
explanation are computed concurrently; the response says what came from the cache and how long each
part took.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request

from core.item import Item
from service.errors import ApiError
from service.explain.components import ExplainComponents
from service.explain.engine import ExplainError
from service.explain.models import (
    ExplainRequest,
    ExplainResponse,
    StoredItems,
    StoredItemsRequest,
    StudentScore,
    Timings,
)
from service.redis_store import ANONYMOUS_WRITER, RedisUnavailable
from service.schemas import check_item_fields, error_responses
from service.state import app_state

router = APIRouter(tags=["explain"])


def components(request: Request) -> ExplainComponents:
    return app_state(request).explain


def _fail(
    parts: ExplainComponents,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> ApiError:
    parts.metrics.explain_requests.labels(str(status)).inc()
    return ApiError(status, code, message, field=field, headers=headers)


async def require_api_key(request: Request) -> str:
    """Dependency for /explain and admin routes: the caller's key id, or 401."""
    parts = components(request)
    try:
        return await parts.auth(request)
    except ApiError as exc:
        parts.metrics.explain_requests.labels(str(exc.status)).inc()
        raise


async def rate_limited_key(request: Request, key_id: str = Depends(require_api_key)) -> str:
    parts = components(request)
    decision = await parts.limiter.acquire(key_id)
    if not decision.allowed:
        parts.metrics.rate_limited.inc()
        raise _fail(
            parts,
            429,
            "rate_limited",
            f"rate limit exceeded for this API key; retry in {decision.retry_after_s}s",
            {"Retry-After": str(decision.retry_after_s)},
        )
    return key_id


_ERRORS = error_responses(
    {
        400: "Body is not JSON (POST)",
        401: "Missing or wrong API key (RELEVANCE_API_KEYS)",
        404: "item_id not in the item store, or the item store is disabled",
        413: "Body over RELEVANCE_MAX_BODY_BYTES",
        422: "A field is missing, of the wrong type or too long",
        429: "Rate limit of this key (Retry-After)",
        502: "The teacher backend failed",
        503: "Breaker open, teacher not loaded or item store down",
        504: "The teacher did not answer within RELEVANCE_EXPLAIN_TIMEOUT_S",
    }
)


@router.get(
    "/explain",
    response_model=ExplainResponse,
    responses=_ERRORS
    | error_responses(
        {409: "item_id was stored by several /score callers with different content: pass writer"}
    ),
)
async def explain_by_id(
    request: Request,
    query: str = Query(min_length=1, max_length=1000),
    item_id: str = Query(min_length=1, max_length=1000),
    writer: str | None = Query(
        default=None,
        max_length=64,
        description="Whose copy of the item: the key id of the /score caller that sent it (items are stored "
        "per /score API key; 'anonymous' when /score is open). Needed only when several callers "
        "sent different items under the same id.",
    ),
    _key: str = Depends(rate_limited_key),
) -> ExplainResponse:
    started = time.perf_counter()
    parts = components(request)
    _require_item_store(parts, "POST /explain with the item")
    writers = _writers(request, writer)
    versions = await _stored_versions(parts, item_id, writers)
    if not versions:
        raise _fail(
            parts,
            404,
            "item_not_found",
            f"item_id {item_id!r} is not in the item store{f' for writer {writer!r}' if writer else ''}: items "
            f"are kept for {parts.settings.item_store_ttl_s}s after POST /score sees them, unless over "
            f"RELEVANCE_ITEM_STORE_MAX_FIELDS/_MAX_BYTES; POST /explain with the full item instead",
        )
    if len(versions) > 1:
        raise _fail(
            parts,
            409,
            "item_ambiguous",
            f"item_id {item_id!r} was sent by {len(versions)} /score callers with different content "
            f"(writers {', '.join(sorted(versions))}); pass writer=ID to choose one",
        )
    store_ms = (time.perf_counter() - started) * 1000
    item = Item.model_validate(next(iter(versions.values())))
    return await _explain(parts, query, item, started, store_ms)


@router.post(
    "/explain/items",
    response_model=StoredItems,
    responses=_ERRORS,
    summary="Look items up in the item store by id (the ops console's 'by id' input)",
)
async def stored_items(
    request: Request, body: StoredItemsRequest, _key: str = Depends(rate_limited_key)
) -> StoredItems:
    parts = components(request)
    _require_item_store(parts, "paste the items instead")
    limit = app_state(request).settings.max_items
    if len(body.ids) > limit:
        raise _fail(
            parts,
            413,
            "too_many_items",
            f"ids has {len(body.ids)} entries; the limit is {limit} (RELEVANCE_MAX_ITEMS)",
            field="ids",
        )
    writers = _writers(request, body.writer)
    found = StoredItems()
    for item_id in dict.fromkeys(body.ids):  # each id once, in the order given
        versions = await _stored_versions(parts, item_id, writers)
        if not versions:
            found.missing.append(item_id)
        elif len(versions) > 1:
            found.ambiguous[item_id] = sorted(versions)
        else:
            found.items.append(Item.model_validate(next(iter(versions.values()))))
    return found


def _require_item_store(parts: ExplainComponents, instead: str) -> None:
    if parts.item_store is None:
        raise _fail(
            parts,
            404,
            "item_store_disabled",
            f"the item store is disabled (RELEVANCE_ITEM_STORE_ENABLED=false); {instead}",
        )


def _writers(request: Request, writer: str | None) -> list[str]:
    """Whose stored copies to look at: the one writer asked for, else every /score key (or anonymous)."""
    return [writer] if writer else (app_state(request).score_auth.key_ids() or [ANONYMOUS_WRITER])


async def _stored_versions(parts: ExplainComponents, item_id: str, writers: list[str]) -> dict[str, dict]:
    """The distinct stored versions of an item: {a writer that stored it: the item}; several when
    /score callers sent different items under one id. 503 when Redis is down."""
    assert parts.item_store is not None
    try:
        found = await parts.item_store.find(item_id, writers)
    except RedisUnavailable as exc:
        raise _fail(
            parts,
            503,
            "item_store_unavailable",
            "the item store (Redis) is unavailable; POST /explain with the full item instead",
        ) from exc
    versions: dict[bytes, tuple[str, dict]] = {}
    for who, item in found.items():
        versions.setdefault(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), (who, item))
    return dict(versions.values())


@router.post("/explain", response_model=ExplainResponse, responses=_ERRORS)
async def explain_item(
    request: Request, body: ExplainRequest, _key: str = Depends(rate_limited_key)
) -> ExplainResponse:
    # The item goes into the teacher's prompt: the same per-field limits as /score.
    check_item_fields("item", body.item, app_state(request).settings.max_field_chars)
    return await _explain(components(request), body.query, body.item, time.perf_counter(), None)


async def _explain(
    parts: ExplainComponents, query: str, item: Item, started: float, store_ms: float | None
) -> ExplainResponse:
    item_map = item.model_dump()
    teacher_started = time.perf_counter()
    try:
        outcome = await parts.engine.explain(query, item_map)
    except ExplainError as exc:
        parts.metrics.explain_requests.labels(str(exc.status)).inc()
        raise
    teacher_ms = (time.perf_counter() - teacher_started) * 1000
    # The student runs only once the teacher has answered: it shares /score's batcher, and /explain
    # requests that fail (hung or failing teacher, open breaker) must cost /score no inference.
    student, student_error, student_ms = await _student(parts, query, item_map)
    total_ms = (time.perf_counter() - started) * 1000
    parts.metrics.explain_requests.labels("200").inc()
    parts.metrics.explain_seconds.observe(total_ms / 1000)
    return ExplainResponse(
        query=query,
        item_id=item.id,
        student=student,
        student_error=student_error,
        explanation=outcome.record,
        cached=outcome.cached,
        shared=outcome.shared,
        timings_ms=Timings(
            store_ms=store_ms, student_ms=student_ms, teacher_ms=teacher_ms, total_ms=total_ms
        ),
    )


async def _student(
    parts: ExplainComponents, query: str, item: Mapping[str, Any]
) -> tuple[StudentScore | None, str | None, float | None]:
    if parts.student is None:
        return None, "no student bundle is loaded", None
    started = time.perf_counter()
    try:
        score = await parts.student(query, item)
    except Exception as exc:  # noqa: BLE001 - the explanation is still worth returning
        return (
            None,
            f"student scoring failed: {type(exc).__name__}: {exc}",
            (time.perf_counter() - started) * 1000,
        )
    return score, None, (time.perf_counter() - started) * 1000
