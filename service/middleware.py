"""Plain ASGI middleware: per-request bookkeeping (request id, metrics, one JSON log line), the JSON
content type of request bodies, and every route's request body: its size limit, its read timeout,
and cutting slow uploads short at drain."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_response
from service.metrics import Metrics

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
DOCS_PATH = "/docs"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def clean_request_id(value: str | None) -> str | None:
    """A caller's id if it is safe to echo and log (short, no spaces or control characters)."""
    return value if value and _VALID_ID.match(value) else None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _route(scope: Scope) -> str:
        # Label by the matched route's template, never by raw path, so unknown paths cannot blow up
        # metric cardinality (the router records the matched route in the scope). The /docs page and
        # its assets are one label.
        path = getattr(scope.get("route"), "path", None)
        if path:
            return path
        if scope["path"] == DOCS_PATH or scope["path"].startswith(DOCS_PATH + "/"):
            return DOCS_PATH
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = (
            clean_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
        )
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = state["request_id"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(seconds)
            log.info(
                "request",
                extra={
                    "request_id": state["request_id"],
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    **state.get("log_fields", {}),
                },
            )


JSON_MEDIA_TYPES = ("application/json",)


class JsonContentTypeMiddleware:
    """A request with a body must declare ``Content-Type: application/json`` (or ``…+json``) → else 415.

    Without this, a page on another site could make a browser POST /score as ``text/plain`` (a "simple"
    request, sent without a CORS preflight). Body-less requests (``POST /admin/reload`` with no body)
    need no content type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = Headers(scope=scope)
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if has_body and not (media_type in JSON_MEDIA_TYPES or media_type.endswith("+json")):
                shown = f"'{media_type}'" if media_type else "none"
                await error_response(
                    ApiError(
                        415,
                        "unsupported_media_type",
                        f"request bodies must be sent with Content-Type: application/json (got {shown})",
                        field="header.Content-Type",
                    )
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyCutShort(Exception):
    pass


class RequestBodyMiddleware:
    """Every request body, whichever route reads it:

    - is capped at ``max_bytes`` (RELEVANCE_MAX_BODY_BYTES) → 413: by Content-Length before reading,
      else by counting while the route reads;
    - must have arrived within ``timeout_s`` of the request's start → else 408 and the connection is
      closed (a slow or stalled upload cannot hold a worker or the shutdown);
    - is cut short at once when ``drain`` is set (SIGTERM) → 503 ``shutting_down``.

    The route's own answer to a cut-off body is held back and replaced by the real reason. The header
    timeout, for connections that never finish their headers, is in service/server.py."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, drain: asyncio.Event) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.drain = drain

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            "payload_too_large",
            f"request body is larger than {self.max_bytes} bytes (RELEVANCE_MAX_BODY_BYTES)",
        )

    async def _next_chunk(self, receive: Receive, give_up: float) -> Message | ApiError:
        """The next message, or why the body will not arrive (drain, timeout)."""
        message_task = asyncio.ensure_future(receive())
        drain_task = asyncio.ensure_future(self.drain.wait())
        try:
            done, _ = await asyncio.wait(
                {message_task, drain_task},
                timeout=give_up - time.monotonic(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            drain_task.cancel()
        if message_task in done:
            return message_task.result()
        message_task.cancel()
        if drain_task in done:
            return ApiError(
                503,
                "shutting_down",
                "this replica is shutting down; the request body had not arrived yet; retry on another one",
                headers={"Retry-After": "1", "Connection": "close"},
            )
        return ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {self.timeout_s:g} s (RELEVANCE_BODY_TIMEOUT_S)",
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large())(scope, receive, send)
            return
        timed = scope["method"] not in ("GET", "HEAD")  # no body to wait for
        give_up = time.monotonic() + self.timeout_s
        received = 0
        body_done = False
        cut: ApiError | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done, cut
            if body_done:  # afterwards the route only listens for a disconnect: no limit
                return await receive()
            message = await self._next_chunk(receive, give_up) if timed else await receive()
            if isinstance(message, ApiError):
                cut = message
                raise _BodyCutShort
            if message["type"] != "http.request":
                body_done = True
                return message
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                cut = self._too_large()
                raise _BodyCutShort
            body_done = not message.get("more_body", False)
            return message

        async def send_unless_cut(message: Message) -> None:
            nonlocal started
            if cut is None:
                started = True
                await send(message)

        try:
            await self.app(scope, guarded_receive, send_unless_cut)
        except _BodyCutShort:
            pass
        # FastAPI, for one, turns a failed body read into a 400 of its own: that answer was held back.
        if cut is not None and not started:
            await error_response(cut)(scope, receive, send)
