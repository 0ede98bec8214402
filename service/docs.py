"""The published HTTP contract beyond what FastAPI derives from the routes: API-key security schemes,
the headers every route reads or sets, the /readyz bodies, and a /docs page that works offline
(Swagger UI's assets are served by the service from the ``swagger-ui-bundle`` package, not a CDN)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from core.bundle import ONNX_SIGNATURES
from service.middleware import DOCS_PATH, REQUEST_ID_HEADER
from service.settings import MIN_DEADLINE_MS, Settings

DOCS_ASSETS = DOCS_PATH + "/assets"

# Where each keyed route reads its key (service/auth.py): either header, the same keys.
SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
}
_KEYED = [{"ApiKeyHeader": []}, {"BearerKey": []}]
# /score is open unless RELEVANCE_SCORE_API_KEYS is set ({} = no key); /explain and admin always need one.
SECURITY = {
    ("/score", "post"): [*_KEYED, {}],
    ("/explain", "get"): _KEYED,
    ("/explain", "post"): _KEYED,
    ("/explain/items", "post"): _KEYED,
    ("/admin/reload", "post"): _KEYED,
}

_READY_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["draining", "not_ready"]}},
}
_READY = {
    "type": "object",
    "required": ["status", "bundle", "provider", "providers"],
    "properties": {
        "status": {"type": "string", "enum": ["ready"]},
        "bundle": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "kind": {"type": "string", "enum": list(ONNX_SIGNATURES)},
                "dir": {"type": "string", "description": "the bundle folder's name"},
                "score_method": {"type": "string"},
                "precision": {"type": ["string", "null"]},
            },
        },
        "provider": {"type": "string"},
        "providers": {"type": "array", "items": {"type": "string"}},
    },
}


def document_http_contract(schema: dict[str, Any], settings: Settings) -> None:
    """Add the security schemes, headers and /readyz bodies to a generated OpenAPI document (in place)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    request_id = {
        "name": REQUEST_ID_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The caller's request id, echoed back and logged when it is 1-128 characters of "
        "A-Z a-z 0-9 . _ : - (else the server makes one).",
    }
    deadline = {
        "name": "X-Deadline-Ms",
        "in": "header",
        "required": False,
        "schema": {"type": "number", "minimum": MIN_DEADLINE_MS, "maximum": settings.max_request_deadline_ms},
        "description": "Milliseconds from arrival within which the scores must be ready, else 504; "
        f"default {settings.request_deadline_ms:g} (RELEVANCE_REQUEST_DEADLINE_MS). A "
        "request that could not meet it at the measured model speed is refused at once "
        "(413 if it alone is too large, 503 if the queue is too full).",
    }
    echoed = {
        REQUEST_ID_HEADER: {
            "description": "The request id (the caller's, or one made by the server).",
            "schema": {"type": "string"},
        }
    }
    retry_after = {
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    }
    server_timing = {
        "Server-Timing": {
            "description": "Where the request's time went, in ms (W3C Server-Timing): tokenize, queue "
            "(waiting for a batch), infer (the model batches that held its inputs) and total, e.g. "
            "'tokenize;dur=0.412, queue;dur=1.050, infer;dur=6.731, total;dur=8.902'.",
            "schema": {"type": "string"},
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            parameters = operation.setdefault("parameters", [])
            parameters.append(request_id)
            if (path, method) == ("/score", "post"):
                parameters.append(deadline)
            if (path, method) in SECURITY:
                operation["security"] = SECURITY[(path, method)]
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                headers.update(echoed)
                if status in ("429", "503"):
                    headers.update(retry_after)
            if (path, method) == ("/score", "post"):
                operation["responses"]["200"]["headers"].update(server_timing)
            if path == "/readyz":
                operation["responses"]["200"]["content"] = {"application/json": {"schema": _READY}}
                operation["responses"]["503"]["content"] = {"application/json": {"schema": _READY_STATUS}}


def mount_docs(app: FastAPI) -> None:
    """GET /docs: Swagger UI over /openapi.json, its assets served from the installed package."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )
