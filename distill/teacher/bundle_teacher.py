"""A model bundle as a teacher: ``relevance teacher annotate --teacher bundle:PATH``.

The strongest cheap teacher is often not an LLM but a large student, e.g. the 6-layer cross-encoder
fine-tuned on the labels. This judge scores each pair through the service's own Scorer (so the
distribution is exactly what that bundle serves) and writes the same CoT record as an LLM teacher in
score mode: the grade distribution from the bundle's grade head (``distribution_source`` "logits"),
no dimensions. Concurrent judgements are batched by the Scorer's batcher. Only bundles with a grade
head qualify: a cosine-only bi bundle has no distribution to distil.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.bundle import read_manifest
from core.cot import CoTRecord, DimensionJudgement
from core.grades import GRADE_LEVELS
from core.item import Item, pair_hash
from core.text_template import TextTemplate

SPEC_PREFIX = "bundle:"
PROMPT_VERSION = "bundle-score-v1"  # no prompt: the version of this record layout


class BundleTeacherError(ValueError):
    """A bundle that cannot teach; the message says why."""


def score_record(
    teacher,
    query: str,
    item: Mapping[str, Any],
    template: TextTemplate,
    distribution: dict[str, float],
    label: str | None,
    dimensions: Sequence[DimensionJudgement] = (),
) -> CoTRecord:
    """The record a score-mode model teacher (a bundle, the ensemble) writes for one pair: its grade
    distribution read from logits, the texts as ``template`` renders them, any rule ``dimensions``."""
    return CoTRecord(
        teacher_id=teacher.teacher_id,
        prompt_version=teacher.prompt_version,
        mode="score",
        pair_id=pair_hash(query, dict(item)),
        query=template.query_text(query),
        item_id=str(item.get("id") or ""),
        item_text=template.item_text(item),
        dimensions=list(dimensions),
        grade=max(distribution, key=distribution.__getitem__),
        grade_levels=list(GRADE_LEVELS),
        grade_distribution=distribution,
        distribution_source="logits",
        label=label,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def scorer_max_items(bundle_dir: str | Path) -> int:
    """Items per request the offline Scorer accepts (its settings' max_items)."""
    from distill.baselines.bundle import offline_settings

    return offline_settings(bundle_dir).max_items


class BundleScorer:
    """One bundle scored pair by pair through the service's Scorer (started on first use); concurrent
    calls are batched by the Scorer's batcher. Also a member of the ensemble teacher."""

    def __init__(self, bundle_dir: str | Path) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = read_manifest(self.bundle_dir)
        self._scorer = None
        self._lock = asyncio.Lock()

    async def _started(self):
        async with self._lock:
            if self._scorer is None:
                from distill.baselines.bundle import offline_settings
                from service.metrics import Metrics
                from service.scorer import Scorer

                scorer = Scorer(offline_settings(self.bundle_dir), Metrics())
                await scorer.start()
                self._scorer = scorer
        return self._scorer

    async def score(self, query: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """The service's result for one item: ``score``, and ``grades`` where the bundle has a grade head."""
        (result,) = await self.score_many(query, [item])
        return result

    async def score_many(self, query: str, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The service's results for several items of one query, in order: one request per
        ``max_items`` items, so a bi bundle encodes the query once and a cross batch is full."""
        from service.schemas import ScoreRequest

        scorer = await self._started()
        step = scorer_max_items(self.bundle_dir)
        results: list[dict[str, Any]] = []
        with scorer.in_use():
            for start in range(0, len(items), step):
                chunk = [Item.model_validate(dict(item)) for item in items[start : start + step]]
                results += await scorer.score(ScoreRequest(query=query, items=chunk))
        return results

    async def aclose(self) -> None:
        if self._scorer is not None:
            await self._scorer.stop()
            self._scorer = None


class BundleTeacher:
    """Duck-types ``teacher.Teacher`` for ``distill.teacher.annotate``: ``teacher_id``, ``prompt_version``,
    ``judge`` (score mode only) and ``aclose``."""

    def __init__(self, bundle_dir: str | Path) -> None:
        self.scorer = BundleScorer(bundle_dir)
        self.bundle_dir, self.manifest = self.scorer.bundle_dir, self.scorer.manifest
        if not self.manifest.has_grades or list(self.manifest.grade_levels) != list(GRADE_LEVELS):
            raise BundleTeacherError(
                f"{self.bundle_dir}: a teacher bundle needs a grade head over {list(GRADE_LEVELS)} "
                f"(this one: score method {self.manifest.score.method}, levels {self.manifest.grade_levels})"
            )
        self.teacher_id = f"bundle:{self.manifest.name}@{self.manifest.version}"
        self.prompt_version = PROMPT_VERSION

    async def judge(
        self, query: str, item: Mapping[str, Any], *, label: str | None = None, mode: str = "score"
    ) -> CoTRecord:
        if mode != "score":
            raise BundleTeacherError(f"a bundle teacher has no reasoning: use --mode score, not {mode!r}")
        result = await self.scorer.score(query, item)
        return score_record(self, query, item, self.manifest.template, result["grades"], label)

    async def aclose(self) -> None:
        await self.scorer.aclose()
