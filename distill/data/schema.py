"""Records every loader produces: one labelled (query, item) pair on the project's grade scale."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from core.item import Item, pair_hash

__all__ = ["LabelledPair", "distinct_items"]


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


def distinct_items(pairs: Iterable[LabelledPair]) -> dict[str, Item]:
    """A set's catalogue: item id → the first item seen with that id, in first-seen order. The one rule
    for a source that repeats an id with another text (Home Depot train has 14 such product ids with
    two titles): BM25's index, the transfer set, the ensemble's BM25 statistics and the eval slices
    all keep the first."""
    items: dict[str, Item] = {}
    for pair in pairs:
        items.setdefault(pair.item.id, pair.item)
    return items
