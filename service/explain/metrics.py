"""Prometheus metrics of the /explain slow path, the Redis item store and Redis availability.

One instance per app, registered in the app's registry (``service.metrics.Metrics.registry``) so
they appear on its ``/metrics`` next to the scoring metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_REQUEST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LLM = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_WAIT = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30)


class ExplainMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.explain_requests = Counter(
            "relevance_explain_requests_total",
            "/explain requests by HTTP status code.",
            ["status"],
            registry=r,
        )
        self.explain_seconds = Histogram(
            "relevance_explain_request_seconds",
            "Successful /explain latency, end to end.",
            buckets=_REQUEST,
            registry=r,
        )
        self.cache_hits = Counter(
            "relevance_explain_cache_hits_total", "Explanations served from the Redis cache.", registry=r
        )
        self.cache_misses = Counter(
            "relevance_explain_cache_misses_total",
            "Explanations not in the cache (or cache unavailable).",
            registry=r,
        )
        self.shared_flights = Counter(
            "relevance_explain_singleflight_shared_total",
            "Requests that joined an identical LLM call already in flight instead of starting one.",
            registry=r,
        )
        self.llm_calls = Counter(
            "relevance_explain_llm_calls_total", "LLM teacher calls started.", registry=r
        )
        self.llm_seconds = Histogram(
            "relevance_explain_llm_call_seconds",
            "LLM teacher call latency (after a concurrency slot was taken).",
            buckets=_LLM,
            registry=r,
        )
        self.llm_errors = Counter(
            "relevance_explain_llm_errors_total",
            "Failed LLM teacher calls by reason (timeout, error).",
            ["reason"],
            registry=r,
        )
        self.llm_slot_wait_seconds = Histogram(
            "relevance_explain_llm_slot_wait_seconds",
            "Time spent waiting for an LLM concurrency slot.",
            buckets=_WAIT,
            registry=r,
        )
        self.breaker_state = Gauge(
            "relevance_explain_breaker_state",
            "LLM circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.breaker_rejections = Counter(
            "relevance_explain_breaker_rejections_total",
            "Requests refused at once because the breaker was open.",
            registry=r,
        )
        self.rate_limited = Counter(
            "relevance_explain_rate_limited_total", "Requests refused by the per-key rate limit.", registry=r
        )
        self.item_store_writes = Counter(
            "relevance_item_store_writes_total", "Items written to the Redis item store.", registry=r
        )
        self.item_store_failures = Counter(
            "relevance_item_store_failures_total",
            "Items whose write to the Redis item store failed.",
            registry=r,
        )
        self.item_store_dropped = Counter(
            "relevance_item_store_dropped_total",
            "Items not stored, by reason: queue_full, no_id, too_large (over RELEVANCE_ITEM_STORE_MAX_FIELDS "
            "or _MAX_BYTES), unkeyed (from an unkeyed /score, RELEVANCE_ITEM_STORE_UNKEYED_WRITES=false).",
            ["reason"],
            registry=r,
        )
        for reason in ("queue_full", "no_id", "too_large", "unkeyed"):
            self.item_store_dropped.labels(reason)
        self.item_store_queue = Gauge(
            "relevance_item_store_queue_depth",
            "Items waiting in the item store's write-behind queue.",
            registry=r,
        )
        self.redis_unavailable = Counter(
            "relevance_redis_unavailable_total",
            "Redis operations skipped or failed because Redis was unreachable, by operation.",
            ["operation"],
            registry=r,
        )
