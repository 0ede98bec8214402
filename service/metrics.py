"""Prometheus metrics, one registry per app (so several apps in one process do not collide).

Names follow Prometheus conventions (base units, ``_total`` counters, ``_seconds``) and mirror what
text-embeddings-inference exposes: one histogram per stage (queue wait, tokenisation, inference),
batch size and batch tokens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.process_collector import ProcessCollector

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Up to the largest X-Deadline-Ms (60 s by default), so a p99 never reads +Inf.
_STAGE = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter(
            "relevance_requests_total",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "relevance_request_duration_seconds",
            "HTTP request latency.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.scored_pairs = Counter("relevance_scored_pairs_total", "(query, item) pairs scored.", registry=r)
        self.queue_wait_seconds = Histogram(
            "relevance_queue_wait_seconds",
            "Time a request's inputs waited in the batch queue.",
            buckets=_STAGE,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "relevance_tokenization_seconds", "Tokenisation time per request.", buckets=_STAGE, registry=r
        )
        self.inference_seconds = Histogram(
            "relevance_inference_seconds", "Model execution time per batch.", buckets=_STAGE, registry=r
        )
        self.batch_pairs = Histogram(
            "relevance_batch_size_pairs",
            "Model input rows per batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "relevance_batch_tokens",
            "Padded tokens per batch.",
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.padding_ratio = Histogram(
            "relevance_batch_padding_ratio",
            "Share of padded tokens that are padding.",
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
            registry=r,
        )
        self.queue_depth = Gauge(
            "relevance_queue_depth_pairs",
            "Model input rows admitted and not yet finished (queued or running).",
            registry=r,
        )
        self.queue_tokens = Gauge(
            "relevance_queue_tokens",
            "Tokens of the model inputs queued and not yet taken into a batch.",
            registry=r,
        )
        self.seconds_per_token = Gauge(
            "relevance_model_seconds_per_token",
            "Measured model speed (seconds per real token, recent batches); queued work in seconds is "
            "relevance_queue_tokens x this.",
            registry=r,
        )
        self.queue_work_seconds = Gauge(
            "relevance_queue_work_seconds",
            "Admitted model work not yet done, in seconds at the measured speed (the running batch's "
            "rest plus relevance_queue_tokens x relevance_model_seconds_per_token): how far behind this "
            "replica is; the autoscaling signal (deploy/k8s).",
            registry=r,
        )
        self.dropped_pairs = Counter(
            "relevance_dropped_pairs_total",
            "Queued inputs dropped before inference, by reason.",
            ["reason"],
            registry=r,
        )
        self.rejected = Counter(
            "relevance_rejected_requests_total",
            "Requests refused at once: queue_full (503, capacity), backlog (503, queued work "
            "would make it or an admitted request miss its deadline), too_costly (413, it "
            "alone cannot meet its deadline) or shutting_down (503, draining).",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "relevance_embedding_cache_hits_total", "Item embeddings found in the cache.", registry=r
        )
        self.cache_misses = Counter(
            "relevance_embedding_cache_misses_total", "Item embeddings computed.", registry=r
        )
        self.model_info = Info(
            "relevance_model", "The bundle being served and the execution provider.", registry=r
        )
        self.reloads = Counter(
            "relevance_model_reloads_total",
            "Hot bundle reloads: ok (swapped) or refused (the old bundle kept serving).",
            ["result"],
            registry=r,
        )
        # Every label value exists from the start (at 0), so rates and alerts work before the first event.
        for reason in ("queue_full", "backlog", "too_costly", "shutting_down"):
            self.rejected.labels(reason)
        for reason in ("deadline", "disconnected", "cancelled"):
            self.dropped_pairs.labels(reason)
        for result in ("ok", "refused"):
            self.reloads.labels(result)
        self.draining = Gauge(
            "relevance_draining", "1 from SIGTERM until exit: new requests get 503.", registry=r
        )
