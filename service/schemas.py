"""POST /score request and response: the models and the parsing of a raw body into a request.

Parsing is explicit (bytes → UTF-8 → JSON → model → limits) so that every bad input gets its own
status and a message naming the field, e.g. ``items[3].title`` (see docs/API.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.item import NOT_BLANK, Item, is_blank
from service.errors import ApiError

_SCALARS = (str, int, float, bool)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="The search query; must not be blank.")
    items: list[Item] = Field(description="Items to score, at least one; results keep this order.")
    request_id: str | None = Field(default=None, max_length=128, description="Echoed as X-Request-ID.")
    top_n: int | None = Field(
        default=None,
        ge=1,
        strict=True,  # "3" is a client bug, not a number
        description="Return only the n best items, best first (each with its request position, "
        "`index`); all items in request order when absent.",
    )
    return_logits: bool = Field(
        default=False,
        strict=True,  # "yes" or 1 is a client bug, not true
        description="Also return each item's raw grade logits (`logits`): cross bundles only; a bi "
        "bundle has none and answers 422.",
    )

    @field_validator("top_n", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        # JSON has one number type: 3.0 is the integer 3 (as JSON Schema's "integer" says), 3.5 is not.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("query must not be blank (it has no visible character)")
        return value

    @field_validator("items")
    @classmethod
    def _items_not_empty(cls, value: list[Item]) -> list[Item]:
        if not value:
            raise ValueError("items must contain at least one item")
        return value


class ModelInfo(BaseModel):
    name: str
    version: str


class ItemScore(BaseModel):
    index: int = Field(description="The item's position in the request's items.")
    id: str
    score: float = Field(description="Relevance in [0, 1].")
    truncated: bool = Field(
        description="Whether the item's text was cut at the bundle's token limit before scoring."
    )
    grades: dict[str, float] | None = Field(
        default=None, description="Probability per grade level (bundles with a grade head only)."
    )
    logits: dict[str, float] | None = Field(
        default=None, description="Raw grade logits per level (with return_logits, cross bundles only)."
    )


class ScoreResponse(BaseModel):
    model: ModelInfo
    scores: list[ItemScore]
    took_ms: float


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's error statuses, all in the one error shape (ErrorBody);
    422 replaces FastAPI's default validation body, which this service never sends."""
    return {code: {"model": ErrorBody, "description": text} for code, text in descriptions.items()}


@dataclass(frozen=True, slots=True)
class Limits:
    max_items: int
    max_field_chars: int
    max_body_bytes: int


_SCALAR_TYPES = ({"type": "number"}, {"type": "boolean"}, {"type": "null"})


def score_request_openapi(limits: Limits) -> dict[str, dict[str, Any]]:
    """The OpenAPI component schemas of a POST /score body, with this server's limits and the rules the
    models check in code (non-blank text, scalar extra fields), so that a request valid by the published
    schema is a request this server accepts."""
    schemas = ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = {"Item": schemas.pop("$defs")["Item"], "ScoreRequest": schemas}
    text = {"maxLength": limits.max_field_chars}
    scalar = {"anyOf": [{"type": "string", **text}, *_SCALAR_TYPES]}
    request, item = components["ScoreRequest"]["properties"], components["Item"]
    request["query"] |= {"pattern": NOT_BLANK, **text}
    request["items"] |= {"minItems": 1, "maxItems": limits.max_items}
    item["properties"]["id"] |= text
    item["properties"]["title"] |= {"pattern": NOT_BLANK, **text}
    item["properties"]["attributes"]["anyOf"][0] = {
        "type": "object",
        "propertyNames": text,
        "additionalProperties": scalar,
    }
    item["additionalProperties"] = scalar
    return components


def field_path(loc: tuple[int | str, ...]) -> str:
    """('items', 3, 'title') → 'items[3].title'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_score_request(body: bytes, limits: Limits) -> ScoreRequest:
    """Turn a raw body into a request, or raise ApiError (400 encoding/JSON, 413 too many items, 422 fields)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_encoding", f"request body is not valid UTF-8 (byte {exc.start})"
        ) from exc
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object")
    items = data.get("items")
    if isinstance(items, list) and len(items) > limits.max_items:
        raise ApiError(
            413,
            "too_many_items",
            f"items has {len(items)} entries; the limit is {limits.max_items} (RELEVANCE_MAX_ITEMS)",
            field="items",
        )
    try:
        request = ScoreRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = field_path(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        extra = exc.error_count() - 1
        suffix = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
        raise ApiError(
            422, "validation_error", f"{path or 'body'}: {message}{suffix}", field=path or None
        ) from exc
    _check_values(request, limits.max_field_chars)
    return request


def _check_values(request: ScoreRequest, max_chars: int) -> None:
    """Field types the model cannot express (scalar extras) and the per-field character limit."""
    _check_length("query", request.query, max_chars)
    for i, item in enumerate(request.items):
        check_item_fields(f"items[{i}]", item, max_chars)


def check_item_fields(path: str, item: BaseModel, max_chars: int) -> None:
    """An item's id, title, extra fields and attributes: scalars of at most ``max_chars`` characters
    (an item model with ``id``, ``title``, ``attributes`` and extra fields allowed; /score and /explain)."""
    _check_length(f"{path}.id", item.id, max_chars)
    _check_length(f"{path}.title", item.title, max_chars)
    for key, value in (item.model_extra or {}).items():
        _check_scalar(f"{path}.{key}", value, max_chars)
    for key, value in (item.attributes or {}).items():
        _check_length(f"{path}.attributes (name {key[:40]!r})", key, max_chars)
        _check_scalar(f"{path}.attributes.{key}", value, max_chars)


def _check_scalar(path: str, value: Any, max_chars: int) -> None:
    if value is not None and not isinstance(value, _SCALARS):
        raise ApiError(
            422, "validation_error", f"{path}: must be a string, number, boolean or null", field=path
        )
    if isinstance(value, str):
        _check_length(path, value, max_chars)


def _check_length(path: str, value: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise ApiError(
            422,
            "field_too_long",
            f"{path} has {len(value)} characters; the limit is {max_chars} (RELEVANCE_MAX_FIELD_CHARS)",
            field=path,
        )
