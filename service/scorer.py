"""Scores one request: render texts with the bundle's template, tokenise, run through the batcher, map.

What depends on the bundle's kind (the model inputs, the mapping to scores) is in service/kinds.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.bundle import BundleManifest, bundle_tokenizer, read_manifest, verify_files
from core.item import Item
from core.tokenization import Encoded
from service.batcher import RUN_OVERHEAD_TOKENS, Batcher, BatchPolicy
from service.errors import ApiError
from service.kinds import KindScoring, scoring_for
from service.metrics import Metrics
from service.onnx_model import OnnxModel
from service.schemas import ScoreRequest
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestTimings:
    """Where one request's time went, in seconds (POST /score sends it as Server-Timing): tokenising,
    waiting in the batcher's queue, and the model batches that held its inputs (the wall time of each
    batch, shared with the other requests in it)."""

    tokenize_s: float = 0.0
    queue_s: float = 0.0
    infer_s: float = 0.0


class Scorer:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        # One tokeniser thread per request batch is the service's parallelism; tokenizers' own thread pool
        # would only compete with onnxruntime for the cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.bundle_dir = Path(settings.bundle)
        self.manifest: BundleManifest = read_manifest(self.bundle_dir)
        verify_files(self.bundle_dir, self.manifest)
        if not self.manifest.files:
            log.warning(
                "%s records no file checksums (written by an older version): not verified", self.bundle_dir
            )
        m = self.manifest
        self.template = m.template
        self.tokenizer = bundle_tokenizer(self.bundle_dir, m)
        self.model = OnnxModel(
            self.bundle_dir,
            m,
            provider=settings.provider,
            strict=settings.provider_strict,
            intra_op_threads=settings.ort_intra_op_threads,
            allow_spinning=settings.ort_allow_spinning,
        )
        policy = BatchPolicy(
            max_pairs=settings.batch_max_pairs,
            max_tokens=settings.batch_max_tokens,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            capacity=settings.queue_capacity_pairs,
            max_batch_s=settings.batch_max_ms / 1000,
            run_overhead_tokens=RUN_OVERHEAD_TOKENS[
                "cpu" if self.model.provider == "CPUExecutionProvider" else "cuda"
            ],
        )
        self.batcher = Batcher(
            self.model.run,
            policy,
            metrics,
            pad_id=self.tokenizer.pad_id,
            on_idle=self.model.release_memory,
            idle_s=settings.ort_release_idle_s,
        )
        self.scoring: KindScoring = scoring_for(m, self.tokenizer, settings.embedding_cache_size, metrics)
        self.deadline_ms = settings.request_deadline_ms
        self._metrics = metrics
        self._tokenize_pool = ThreadPoolExecutor(
            settings.tokenizer_threads, thread_name_prefix="relevance-tokenize"
        )
        self.ready = False
        self._warmed = False
        self.active = 0  # requests between in_use() entry and exit: close() waits for them

    @contextmanager
    def in_use(self) -> Iterator[Scorer]:
        """Mark one request as using this scorer. Entered synchronously, right where the caller picks
        the scorer, so a reload can never close a scorer that a request is about to use."""
        self.active += 1
        try:
            yield self
        finally:
            self.active -= 1

    def check(self) -> None:
        """Run the warm-up batch now, in the caller's thread: raises BundleError when the model's output
        does not match bundle.json (``relevance serve`` calls this before the server starts)."""
        self._warm_up()
        self._warmed = True

    async def start(self) -> None:
        self.batcher.start()
        if not self._warmed:
            await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, self._warm_up)
        self.ready = True
        log.info(
            "bundle %s %s (%s) ready on %s",
            self.manifest.name,
            self.manifest.version,
            self.manifest.kind,
            self.model.provider,
        )

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop taking requests, let those in use finish (at most ``grace_s``), then stop the batcher."""
        self.ready = False
        give_up = time.monotonic() + grace_s
        while self.active and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        if self.active:
            log.warning(
                "stopping bundle %s with %d requests still in use after %.1f s",
                self.manifest.name,
                self.active,
                grace_s,
            )
        await self.batcher.stop()
        self._tokenize_pool.shutdown(wait=True)

    def _warm_up(self) -> None:
        encoded = self.scoring.warmup_inputs()
        self.model.check_output(self.batcher.compute_now(encoded), len(encoded))

    async def score(
        self,
        request: ScoreRequest,
        deadline_ms: float | None = None,
        timings: RequestTimings | None = None,
    ) -> list[dict[str, Any]]:
        """One result per item: {index, id, score, truncated, grades?, logits?}, in request order, or the
        ``top_n`` best first. ``deadline_ms`` (default: the service's RELEVANCE_REQUEST_DEADLINE_MS)
        bounds the time from now to the scores; ``timings``, when given, is filled in."""
        if request.return_logits and not self.scoring.has_logits:
            raise ApiError(
                422,
                "validation_error",
                f"return_logits: the served bundle ({self.manifest.name}) is a {self.manifest.kind} "
                "bundle, which outputs embeddings, not grade logits",
                field="return_logits",
            )
        deadline_ms = deadline_ms or self.deadline_ms
        query = self.template.query_text(request.query)
        rendered = [self.template.render_item(_item_fields(item)) for item in request.items]
        texts = [text for text, _ in rendered]
        timings = timings if timings is not None else RequestTimings()

        async def run(n: int, encode, deadline_ms: float) -> np.ndarray:
            return await self._run(n, encode, deadline_ms, timings)

        scored = await self.scoring.score(run, query, request.items, texts, deadline_ms)
        self._metrics.scored_pairs.inc(len(texts))
        levels = self.manifest.grade_levels
        results: list[dict[str, Any]] = []
        for i, item in enumerate(request.items):
            result: dict[str, Any] = {
                "index": i,
                "id": item.id,
                "score": float(scored.scores[i]),
                # cut by the template's character limits or by the bundle's token limit
                "truncated": rendered[i][1] or scored.truncated[i],
            }
            if scored.probs is not None:
                result["grades"] = {level: float(p) for level, p in zip(levels, scored.probs[i], strict=True)}
            if request.return_logits:
                result["logits"] = {
                    level: float(x) for level, x in zip(levels, scored.logits[i], strict=True)
                }
            results.append(result)
        if request.top_n is not None:
            results = sorted(results, key=lambda r: -r["score"])[: request.top_n]  # stable: ties keep order
        return results

    async def _run(self, n: int, encode, deadline_ms: float, timings: RequestTimings) -> np.ndarray:
        """Admit n inputs (or 503 at once), tokenise them in the tokeniser thread, queue them (or 503/413
        when they cannot meet the deadline at the measured speed), await their rows."""
        ticket = self.batcher.admit(n, deadline_ms)
        try:
            start = time.perf_counter()
            encoded: list[Encoded] = await asyncio.get_running_loop().run_in_executor(
                self._tokenize_pool, encode
            )
            queued = time.perf_counter()
            self._metrics.tokenize_seconds.observe(queued - start)
            timings.tokenize_s += queued - start
            self.batcher.enqueue(ticket, encoded)
            rows = await self.batcher.result(ticket)
            timings.infer_s += ticket.infer_s
            timings.queue_s += max(0.0, time.perf_counter() - queued - ticket.infer_s)
            return rows
        except asyncio.CancelledError:
            self.batcher.release(ticket, "disconnected")
            raise
        finally:
            self.batcher.release(ticket)  # no-op once finished; frees the room otherwise


def _item_fields(item: Item) -> dict[str, Any]:
    fields = dict(item.model_extra or {})
    fields["title"] = item.title
    fields["attributes"] = item.attributes
    return fields
