"""The one interface every teacher backend implements.

A backend runs one judgement request and returns the assistant's text up to (and including) the
grade, plus the grade distribution read AT the verdict position when the backend can see logits
(local models) or logprobs (HTTP servers that return them). Backends that cannot give a
distribution return ``distribution=None``; the Teacher then falls back to self-consistency votes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from distill.teacher.prompt import Mode


@dataclass(frozen=True)
class VerdictRequest:
    messages: list[dict[str, str]]
    prefill: str  # start of the assistant turn, for backends that can prefill
    mode: Mode
    levels: Sequence[str]
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class VerdictResult:
    text: str  # the assistant's output from the start of its turn
    reached_verdict: bool  # False when generation stopped (max_tokens) before the grade
    distribution: dict[str, float] | None = None  # over request.levels, sums to 1
    source: Literal["logits", "logprobs"] | None = None


class Backend(ABC):
    """Runs judgement requests against one model."""

    #: Identifies the model behind the backend (part of the teacher id and of cache keys).
    backend_id: str

    @abstractmethod
    async def verdict(self, request: VerdictRequest) -> VerdictResult: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or models."""


def softmax(scores: Mapping[str, float]) -> dict[str, float]:
    """Normalised probabilities over the given (log-)scores; always sums to 1."""
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}
