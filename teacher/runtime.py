"""ELLM-rele: judge one (query, item) pair → CoTRecord, over any backend.

The Teacher renders the texts with the project's one template, builds the versioned prompt, runs
the backend, parses the answer and assembles the record. The grade distribution comes from the
verdict position (logits/logprobs); where the backend gives none it is a vote over ``votes``
self-consistency samples. The record's grade is the distribution's most probable level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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

    async def judge(
        self, query: str, item: Mapping[str, Any], *, label: str | None = None, mode: Mode = "cot"
    ) -> CoTRecord:
        query_text = self.template.query_text(query)
        item_text = self.template.item_text(item)
        result = await self.backend.verdict(
            self._request(query_text, item_text, mode, self.temperature, self.seed)
        )
        parsed = parse_output(result.text, query_text, item_text, self.levels)
        errors = list(parsed.errors)
        distribution, source, votes = result.distribution, result.source, None

        if not result.reached_verdict:
            errors.append("output ended before the grade (max_tokens reached)")
            if mode == "cot":
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

        grade = max(distribution, key=distribution.__getitem__) if distribution else parsed.grade
        return CoTRecord(
            teacher_id=self.teacher_id,
            prompt_version=self.prompt_version,
            mode=mode,
            pair_id=pair_hash(query, dict(item)),
            query_id=None,
            query=query_text,
            item_id=str(item.get("id") or item.get("item_id") or ""),
            item_text=item_text,
            dimensions=parsed.dimensions,
            grade=grade,
            grade_levels=self.levels,
            grade_distribution=distribution or {},
            distribution_source=source or "none",
            votes=votes,
            rationale=parsed.rationale,
            label=label,
            parse_ok=not errors,
            parse_errors=errors,
            raw_output=result.text,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
