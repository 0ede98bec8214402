"""ELLM-rele: judge one (query, item) pair → CoTRecord, over any backend.

The Teacher renders the texts with the project's one template, builds the versioned prompt, runs
the backend, parses the answer and assembles the record. The grade distribution comes from the
verdict position (logits/logprobs); where the backend gives none it is a vote over ``votes``
self-consistency samples. The record's grade is the distribution's most probable level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.cot import CoTRecord
from core.grades import GRADE_LEVELS
from core.item import pair_hash
from core.text_template import DEFAULT_TEMPLATE, TextTemplate
from teacher.backends.base import Backend, VerdictRequest, VerdictResult
from teacher.parser import parse_output
from teacher.prompt import PROMPT_VERSION, Mode, build_messages, prefill

DEFAULT_MAX_TOKENS = {"cot": 320, "score": 8}


@dataclass(frozen=True)
class PreparedJudgement:
    """One pair ready for a backend: the rendered texts (evidence offsets refer to them) and the request."""

    query: str
    item: dict[str, Any]
    mode: Mode
    query_text: str
    item_text: str
    request: VerdictRequest


class Teacher:
    def __init__(
        self,
        backend: Backend,
        *,
        levels: Sequence[str] = GRADE_LEVELS,
        template: TextTemplate = DEFAULT_TEMPLATE,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        votes: int = 5,
        vote_temperature: float = 0.8,
    ) -> None:
        self.backend = backend
        self.levels = list(levels)
        self.template = template
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.votes = votes
        self.vote_temperature = vote_temperature
        self.prompt_version = PROMPT_VERSION
        suffix = f"@t{temperature:g}s{seed}" if temperature > 0 else ""
        self.teacher_id = backend.backend_id + suffix

    async def aclose(self) -> None:
        await self.backend.aclose()

    def _request(
        self, query_text: str, item_text: str, mode: Mode, temperature: float, seed: int
    ) -> VerdictRequest:
        return VerdictRequest(
            messages=build_messages(query_text, item_text, mode, self.levels),
            prefill=prefill(mode),
            mode=mode,
            levels=self.levels,
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS[mode],
            temperature=temperature,
            seed=seed,
        )

    def prepare(self, query: str, item: Mapping[str, Any], mode: Mode) -> PreparedJudgement:
        """The rendered texts and the backend request of one judgement (also what Batch request files
        carry, distill/teacher/batch.py)."""
        query_text = self.template.query_text(query)
        item_text = self.template.item_text(item)
        return PreparedJudgement(
            query=query,
            item=dict(item),
            mode=mode,
            query_text=query_text,
            item_text=item_text,
            request=self._request(query_text, item_text, mode, self.temperature, self.seed),
        )

    def record(
        self, prepared: PreparedJudgement, result: VerdictResult, *, label: str | None = None
    ) -> CoTRecord:
        """The record of one answer as the backend gave it, with no second request: ``judge`` adds the
        fallbacks; an answer obtained outside a backend (a Batch result line) is recorded as it stands."""
        parsed = parse_output(result.text, prepared.query_text, prepared.item_text, self.levels)
        errors = list(parsed.errors)
        if not result.reached_verdict:
            errors.append("output ended before the grade (max_tokens reached)")
        distribution = result.distribution or {}
        return CoTRecord(
            teacher_id=self.teacher_id,
            prompt_version=self.prompt_version,
            mode=prepared.mode,
            pair_id=pair_hash(prepared.query, prepared.item),
            query_id=None,
            query=prepared.query_text,
            item_id=str(prepared.item.get("id") or prepared.item.get("item_id") or ""),
            item_text=prepared.item_text,
            dimensions=parsed.dimensions,
            grade=_most_probable(distribution) or parsed.grade,
            grade_levels=self.levels,
            grade_distribution=distribution,
            distribution_source=result.source or "none",
            rationale=parsed.rationale,
            label=label,
            parse_ok=not errors,
            parse_errors=errors,
            raw_output=result.text,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    async def judge(
        self, query: str, item: Mapping[str, Any], *, label: str | None = None, mode: Mode = "cot"
    ) -> CoTRecord:
        prepared = self.prepare(query, item, mode)
        result = await self.backend.verdict(prepared.request)
        record = self.record(prepared, result, label=label)
        if result.distribution is not None:
            return record
        query_text, item_text = prepared.query_text, prepared.item_text
        errors = list(record.parse_errors)
        distribution, source, votes = None, None, None
        if not result.reached_verdict and mode == "cot":
            # Keep the partial reasoning; still read a verdict, without CoT, so the pair has a score.
            fallback = await self.backend.verdict(
                self._request(query_text, item_text, "score", self.temperature, self.seed)
            )
            if fallback.distribution is not None:
                distribution, source = fallback.distribution, fallback.source
                errors.append("grade distribution read in score mode (no CoT)")
        if distribution is None:
            distribution, votes = await self._vote(query_text, item_text, mode, result)
            source = "votes" if distribution else "none"
        return record.model_copy(
            update={
                "grade": _most_probable(distribution) or record.grade,
                "grade_distribution": distribution or {},
                "distribution_source": source or "none",
                "votes": votes,
                "parse_ok": not errors,
                "parse_errors": errors,
            }
        )

    async def _vote(
        self, query_text: str, item_text: str, mode: Mode, first: VerdictResult
    ) -> tuple[dict[str, float], int | None]:
        """Self-consistency: the grade distribution is the share of each level over ``votes`` samples."""
        if self.votes < 1:
            return {}, None
        grades: list[str] = []
        for k in range(self.votes):
            if k == 0 and self.temperature > 0:
                sample = first  # the first answer was already sampled: it counts as a vote
            else:
                sample = await self.backend.verdict(
                    self._request(query_text, item_text, mode, self.vote_temperature, self.seed + 1 + k)
                )
            grade = _grade_of(sample.text, self.levels)
            if grade is not None:
                grades.append(grade)
        if not grades:
            return {}, 0
        counts = Counter(grades)
        # ``votes`` counts the samples that named a grade (unparseable samples cannot vote).
        return {level: counts[level] / len(grades) for level in self.levels}, len(grades)


def _grade_of(text: str, levels: Sequence[str]) -> str | None:
    return parse_output(text, "", "", levels).grade


def _most_probable(distribution: Mapping[str, float] | None) -> str | None:
    """The record's grade: the distribution's most probable level (None without a distribution)."""
    return max(distribution, key=distribution.__getitem__) if distribution else None
