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

    def _score_request(self, prepared: PreparedJudgement) -> VerdictRequest:
        """The score-mode request of a prepared pair: the fallback verdict of a CoT cut off before its grade."""
        return self._request(prepared.query_text, prepared.item_text, "score", self.temperature, self.seed)

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
        if not result.reached_verdict and mode == "cot":
            # Keep the partial reasoning; still read a verdict, without CoT, so the pair has a score.
            fallback = await self.backend.verdict(self._score_request(prepared))
            if fallback.distribution is not None:
                return _read_in_score_mode(record, fallback)
        errors = list(record.parse_errors)
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


class BatchedTeacher(Teacher):
    """A Teacher over a backend that judges many requests at once, greedily (``verdict_batch``: the
    transformers backend on a GPU). ``relevance teacher annotate`` hands it chunks of pairs
    (``judge_many``), so a GPU labels a transfer set in padded batches through the same prompt,
    parser and record as ``judge``."""

    def __init__(self, backend: Backend, *, batch_tokens: int, **options: Any) -> None:
        if not hasattr(backend, "verdict_batch"):
            raise ValueError(
                f"{backend.backend_id}: this backend judges one request at a time (no verdict_batch)"
            )
        if options.get("temperature", 0.0) > 0:
            raise ValueError("batched judgements are greedy: temperature must be 0")
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be positive, not {batch_tokens}")
        super().__init__(backend, **options)
        self.batch_tokens = batch_tokens

    async def judge_many(self, pairs: Sequence[Any], *, mode: Mode = "score") -> list[CoTRecord]:
        """Records of ``pairs`` (each with ``query``, ``item.as_mapping()`` and ``label``), in order."""
        import asyncio

        prepared = [self.prepare(p.query, p.item.as_mapping(), mode) for p in pairs]
        results = await asyncio.to_thread(
            self.backend.verdict_batch,
            [p.request for p in prepared],
            batch_tokens=self.batch_tokens,  # type: ignore[attr-defined]
        )
        records = [
            self.record(pr, r, label=p.label) for pr, r, p in zip(prepared, results, pairs, strict=True)
        ]
        cut = [i for i, r in enumerate(results) if r.distribution is None]  # CoT cut off before the grade
        if cut:
            fallbacks = await asyncio.to_thread(
                self.backend.verdict_batch,  # type: ignore[attr-defined]
                [self._score_request(prepared[i]) for i in cut],
                batch_tokens=self.batch_tokens,
            )
            for i, fallback in zip(cut, fallbacks, strict=True):
                records[i] = _read_in_score_mode(records[i], fallback)
        return records


def _read_in_score_mode(record: CoTRecord, fallback: VerdictResult) -> CoTRecord:
    """A CoT record cut off before its grade, with the grade distribution of a score-mode verdict."""
    distribution = fallback.distribution or {}
    return record.model_copy(
        update={
            "grade": _most_probable(distribution) or record.grade,
            "grade_distribution": distribution,
            "distribution_source": fallback.source or "none",
            "parse_ok": False,
            "parse_errors": [*record.parse_errors, "grade distribution read in score mode (no CoT)"],
        }
    )


def _grade_of(text: str, levels: Sequence[str]) -> str | None:
    return parse_output(text, "", "", levels).grade


def _most_probable(distribution: Mapping[str, float] | None) -> str | None:
    """The record's grade: the distribution's most probable level (None without a distribution)."""
    return max(distribution, key=distribution.__getitem__) if distribution else None
