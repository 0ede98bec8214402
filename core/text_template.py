"""The one definition of how a query and an item become model input text.

Training (distill/) and serving (service/) both call this module, and every bundle records the
template it was trained with (``bundle.json`` → ``template``), so train/serve skew cannot creep in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_WS = re.compile(r"\s+")

# Item fields that are never rendered as text (identifiers and bookkeeping).
_NON_TEXT_FIELDS = frozenset({"id", "item_id", "product_id", "attributes", "title"})


def normalise_text(text: str) -> str:
    """Collapse whitespace; the only normalisation applied to any text (keeps evidence spans findable)."""
    return _WS.sub(" ", text).strip()


class TextTemplate(BaseModel):
    """Renders ``query`` and an item mapping into the strings the tokenizer sees.

    Item text: ``title | field: value | ... | attribute: value | ...``. ``item_fields`` picks the
    extra top-level item fields (in order) that are rendered; structured ``attributes`` follow, in
    the order given, up to ``max_attributes``. Each rendered value is cut at ``max_field_chars``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["query-item"] = "query-item"
    version: int = 1
    item_fields: tuple[str, ...] = ("brand", "color", "material", "category")
    include_attributes: bool = True
    max_attributes: int = Field(default=16, ge=0)
    max_field_chars: int = Field(default=200, ge=1)
    separator: str = " | "

    def query_text(self, query: str) -> str:
        return normalise_text(query)

    def item_text(self, item: Mapping[str, Any]) -> str:
        return self.render_item(item)[0]

    def render_item(self, item: Mapping[str, Any]) -> tuple[str, bool]:
        """(the item text, whether rendering left something out: a value longer than
        ``max_field_chars`` or attributes beyond ``max_attributes``)."""
        parts: list[str] = []
        cut = False

        def add(prefix: str, value: Any) -> None:
            nonlocal cut
            text = normalise_text(str(value))
            cut = cut or len(text) > self.max_field_chars
            parts.append(prefix + text[: self.max_field_chars])

        title = item.get("title")
        if title:
            add("", title)
        for field in self.item_fields:
            value = item.get(field)
            if value not in (None, ""):
                add(f"{field}: ", value)
        if self.include_attributes:
            attributes = item.get("attributes") or {}
            for n, (key, value) in enumerate(attributes.items()):
                if n >= self.max_attributes:
                    rest = list(attributes.items())[n:]
                    cut = cut or any(k not in _NON_TEXT_FIELDS and v not in (None, "") for k, v in rest)
                    break
                if key in _NON_TEXT_FIELDS or value in (None, ""):
                    continue
                add(f"{normalise_text(str(key))}: ", value)
        return self.separator.join(parts), cut


DEFAULT_TEMPLATE = TextTemplate()
