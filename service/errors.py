"""The service's one error shape: ``{"error": {"code", "message", "field"}}`` with an HTTP status."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """An error the client can act on; rendered by ``error_response``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


class Overloaded(ApiError):
    """The batch queue has no room for this request: retry shortly."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "overloaded", message, headers={"Retry-After": "1"})


class TooCostly(ApiError):
    """The request alone would take longer than its deadline allows, even on an idle server: a retry
    cannot help, a smaller request or a longer deadline can."""

    def __init__(self, message: str) -> None:
        super().__init__(413, "request_too_costly", message, field="items")


class DeadlineExceeded(ApiError):
    def __init__(self, deadline_ms: float) -> None:
        super().__init__(504, "deadline_exceeded", f"the request was not scored within {deadline_ms:g} ms")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(err: ApiError) -> Response:
    return Response(
        orjson.dumps(error_body(err.code, err.message, err.field)),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )
