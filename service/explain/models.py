"""Request and response bodies of /explain."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from core.cot import CoTRecord
from core.item import Item


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=1000)
    item: Item


class StudentScore(BaseModel):
    """What the served student bundle says about the pair."""

    bundle: str  # name@version
    score: float
    grade_distribution: dict[str, float] | None = None  # None for bundles without a grade head


class Timings(BaseModel):
    store_ms: float | None = None  # item-store lookup (GET only)
    student_ms: float | None = None
    teacher_ms: float  # cache lookup + LLM call (or waiting for an identical call in flight)
    total_ms: float


class ExplainResponse(BaseModel):
    query: str
    item_id: str
    student: StudentScore | None
    student_error: str | None = None  # why the student score is missing, when it is
    explanation: CoTRecord  # the teacher's grade, distribution, per-dimension verdicts and evidence
    cached: bool  # served from the Redis explanation cache
    shared: bool = False  # joined an identical LLM call already in flight
    timings_ms: Timings


class StoredItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        min_length=1, description="Item ids, as POST /score saw them."
    )
    writer: str | None = Field(
        default=None, max_length=64, description="Whose copies (a /score key id); as in GET /explain."
    )


class StoredItems(BaseModel):
    items: list[Item] = Field(default_factory=list, description="The items found, in the order asked.")
    missing: list[str] = Field(default_factory=list, description="Ids not in the item store.")
    ambiguous: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Ids stored with different content by several writers: their writers.",
    )
