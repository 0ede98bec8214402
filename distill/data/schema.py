"""Records every loader produces: one labelled (query, item) pair on the project's grade scale."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.bundle import DEFAULT_GRADE_LEVELS

GRADE_LEVELS: tuple[str, ...] = DEFAULT_GRADE_LEVELS  # ("Irrelevant", "Partial", "Exact")
# Graded gains for NDCG (linear in the grade index).
GRADE_GAINS: dict[str, float] = {"Irrelevant": 0.0, "Partial": 1.0, "Exact": 2.0}


class Item(BaseModel):
    """A catalogue item. Extra top-level fields (brand, color, description, ...) are kept."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    title: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)

    def as_mapping(self) -> dict[str, Any]:
        return self.model_dump()


class LabelledPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query_id: str
    query: str = Field(min_length=1)
    item: Item
    label: str | None = None  # one of GRADE_LEVELS, or None when unlabelled
    raw_label: str | float | None = None  # the dataset's own label, kept for reports
    source: str = ""  # dataset name, file and line, for error messages and provenance

    @property
    def pair_id(self) -> str:
        """Stable id of the (query, item content) pair."""
        return pair_hash(self.query, self.item.as_mapping())


def pair_hash(query: str, item: dict[str, Any]) -> str:
    import orjson

    blob = orjson.dumps({"q": query, "i": item}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:24]
