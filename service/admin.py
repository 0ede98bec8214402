"""Admin routes (API key from RELEVANCE_API_KEYS, as /explain): POST /admin/reload."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.schemas import error_responses
from service.state import app_state

router = APIRouter(prefix="/admin")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # str, not Path: pydantic's message for a wrong type would name the Python class.
    bundle: str | None = Field(
        default=None,
        min_length=1,
        description="bundle folder on the server; default: the serving folder, read again",
    )


class BundleInfo(BaseModel):
    name: str
    version: str
    kind: str
    path: str


class ReloadResponse(BaseModel):
    previous: BundleInfo | None
    current: BundleInfo
    took_ms: float


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Load, validate and warm a bundle, then swap it in atomically (also on SIGHUP)",
    responses=error_responses(
        {
            400: "Body is not JSON",
            401: "Missing or wrong API key",
            409: "Another reload is in progress",
            422: "Bad body, or the bundle does not load (the previous one keeps serving)",
        }
    ),
)
async def reload(request: Request, body: ReloadRequest | None = None) -> Response:
    state = app_state(request)
    await state.explain.auth(request)
    result = await state.reloader.reload(body.bundle if body else None)
    return Response(orjson.dumps(result), media_type="application/json")
