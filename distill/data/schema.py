"""Records every loader produces: one labelled (query, item) pair on the project's grade scale."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.item import Item, pair_hash

__all__ = ["LabelledPair"]


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
