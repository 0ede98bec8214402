"""Plain ASGI middleware: per-request bookkeeping (request id, metrics, one JSON log line) and the
body size limit of every route."""

from __future__ import annotations

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
        # metric cardinality (the router records the matched route in the scope).
        return getattr(scope.get("route"), "path", None) or "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = clean_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
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
            log.info("request", extra={
                "request_id": state["request_id"], "method": scope["method"], "path": scope["path"],
                "status": status, "duration_ms": round(seconds * 1000, 3), **state.get("log_fields", {}),
            })


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Every request body is capped at ``max_bytes`` (RELEVANCE_MAX_BODY_BYTES) → 413, whichever route
    reads it: by Content-Length before reading, else by counting while the route reads (the route's
    own answer to the cut-off body is replaced by the 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> ApiError:
        return ApiError(413, "payload_too_large",
                        f"request body is larger than {self.max_bytes} bytes (RELEVANCE_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._error())(scope, receive, send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def send_unless_too_large(message: Message) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counting_receive, send_unless_too_large)
        except _BodyTooLarge:
            pass
        if too_large:
            await error_response(self._error())(scope, receive, send)
