"""Request and response bodies of /explain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.teacher.cot import CoTRecord
from service.schemas import is_blank


class ExplainItem(BaseModel):
    """An item as /score receives it: ``id``, ``title``, ``attributes`` and any extra fields."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    title: str
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        if is_blank(value):  # the rule of /score (service/schemas.py)
            raise ValueError("title must not be blank (it has no visible character)")
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value  # /score accepts attributes: null


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=1000)
    item: ExplainItem


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
