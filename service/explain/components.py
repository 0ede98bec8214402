"""Builds, starts and stops everything /explain needs, from ExplainSettings (``Settings.explain``).

The app keeps one ``ExplainComponents`` in its state (``AppState.explain``, service/state.py); the
router and the /score hook read it from there. ``start()``/``stop()`` run in the app's lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from core.item import Item
from service.auth import ApiKeyAuth, load_api_keys
from service.explain.cache import ExplanationCache
from service.explain.engine import ExplainEngine
from service.explain.metrics import ExplainMetrics
from service.explain.models import StudentScore
from service.explain.settings import ExplainSettings
from service.explain.teacher_runner import TeacherRunner, load_teacher_factory
from service.ratelimit import TokenBucketLimiter
from service.redis_store import ANONYMOUS_WRITER, ItemStore, RedisGuard, connect
from service.schemas import ScoreRequest
from service.scorer import Scorer
from teacher import Teacher

log = logging.getLogger(__name__)

# Scores one (query, item) pair with the served student bundle.
StudentScorer = Callable[[str, Mapping[str, Any]], Awaitable[StudentScore]]


def bundle_student(get_scorer: Callable[[], Scorer]) -> StudentScorer:
    """The served bundle (whichever is current after a reload) as a StudentScorer: the pair goes
    through the same batcher as /score."""

    async def score(query: str, item: Mapping[str, Any]) -> StudentScore:
        request = ScoreRequest(query=query, items=[Item.model_validate(dict(item))])
        scorer = get_scorer()
        with scorer.in_use():
            [result] = await scorer.score(request)
        m = scorer.manifest
        return StudentScore(
            bundle=f"{m.name}@{m.version}", score=result["score"], grade_distribution=result.get("grades")
        )

    return score


class ExplainComponents:
    def __init__(
        self,
        settings: ExplainSettings,
        *,
        teacher_factory: Callable[[], Teacher] | None = None,
        student: StudentScorer | None = None,
        metrics: ExplainMetrics | None = None,
    ) -> None:
        self.settings = s = settings
        self.metrics = metrics or ExplainMetrics()
        keys = load_api_keys(s.api_keys, s.api_keys_file)
        self.auth = ApiKeyAuth(keys, required=True)
        # Without keys nobody can call /explain: then load no teacher and store no items.
        self.enabled = bool(keys)
        self.redis = connect(s.redis_url)
        self.guard = RedisGuard(
            self.redis, s.redis_prefix, metrics=self.metrics, retry_after_s=s.redis_retry_after_s
        )
        self.item_store = (
            ItemStore(
                self.guard,
                ttl_s=s.item_store_ttl_s,
                queue_size=s.item_store_queue_size,
                batch_size=s.item_store_batch_size,
                max_fields=s.item_store_max_fields,
                max_bytes=s.item_store_max_bytes,
            )
            if s.item_store_enabled and self.enabled
            else None
        )
        self.limiter = TokenBucketLimiter(
            self.guard, rate_per_s=s.explain_rate_per_s, burst=s.explain_rate_burst
        )
        self.runner = TeacherRunner(teacher_factory or load_teacher_factory(s.explain_teacher))
        self.engine = ExplainEngine(
            self.runner,
            ExplanationCache(self.guard, s.explain_cache_ttl_s),
            mode=s.explain_mode,
            timeout_s=s.explain_timeout_s,
            concurrency=s.explain_llm_concurrency,
            breaker_failures=s.explain_breaker_failures,
            breaker_reset_s=s.explain_breaker_reset_s,
            metrics=self.metrics,
        )
        self.student = student

    def remember_items(
        self, items: Sequence[Mapping[str, Any] | BaseModel], writer: str = ANONYMOUS_WRITER
    ) -> None:
        """The /score hook: queue items for the item store under the caller's key id (never blocks,
        never raises)."""
        if self.item_store is None:
            return
        if writer == ANONYMOUS_WRITER and not self.settings.item_store_unkeyed_writes:
            self.metrics.item_store_dropped.labels("unkeyed").inc(len(items))
            return
        self.item_store.offer(items, writer)

    async def start(self) -> None:
        if not self.enabled:
            log.warning(
                "no API keys configured (RELEVANCE_API_KEYS): /explain is off (refuses every request)"
            )
            return
        if self.item_store is not None:
            self.item_store.start()
        self.runner.start()  # loads the teacher in the background

    async def stop(self) -> None:
        if self.item_store is not None:
            await self.item_store.stop()
        self.runner.stop()
        await self.redis.aclose()
