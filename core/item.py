"""The one item model: what /score and /explain receive, what every dataset loader produces and what
the text template renders. And the pair id that keys teacher records to (query, item) pairs.

An item has an ``id``, a ``title`` that is not blank (a title of zero-width spaces must not score like
a real title), structured ``attributes`` and any extra top-level fields (brand, color, description…);
the bundle's text template decides which of them become model input.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Characters that show nothing: whitespace, control and format characters (zero-width spaces and
# joiners, the BOM, soft hyphens, bidi marks…) and a few letters and symbols that render as blanks.
# Only the Basic Multilingual Plane, so the published pattern (JSON Schema's ECMAScript regexes without
# the u flag cannot name astral code points) and the server's check agree on every character.
_BLANK_EXTRA = "\u034f\u115f\u1160\u2800\u3164\uffa0"
BLANK_CHARS = frozenset(
    c
    for c in map(chr, range(0x10000))
    if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") or c in _BLANK_EXTRA
)


def is_blank(text: str) -> bool:
    return all(c in BLANK_CHARS for c in text)


def _char_class(chars: frozenset[str]) -> str:
    codes = sorted(map(ord, chars))
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


# "Not blank" as a JSON Schema pattern: at least one character outside BLANK_CHARS.
NOT_BLANK = f"[^{_char_class(BLANK_CHARS)}]"


class Item(BaseModel):
    """One catalogue item. Fields beyond ``id``, ``title`` and ``attributes`` are kept; the bundle's
    text template decides which are rendered (by default brand, color, material, category)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, description="Caller's item id; echoed back. Duplicates are allowed.")
    title: str = Field(description="Item title; must not be blank.")
    # None is accepted (as no attributes) and becomes {}: the value is always a dict.
    attributes: dict[str, Any] | None = Field(
        default_factory=dict,
        description="Structured attributes {name: value}; values are strings, numbers or booleans.",
    )

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError("title must not be blank (it has no visible character)")
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def as_mapping(self) -> dict[str, Any]:
        """The item as the text template and the pair id see it: every field, extras included."""
        return self.model_dump()


def pair_hash(query: str, item: dict[str, Any]) -> str:
    """Stable id of a (query, item content) pair: teacher records are keyed by it."""
    blob = orjson.dumps({"q": query, "i": item}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:24]
