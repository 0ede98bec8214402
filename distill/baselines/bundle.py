"""Scores pairs with a model bundle in-process, through the service's own ``Scorer``.

The service's code path (template → tokeniser → dynamic batcher → ONNX → score mapping) is
the only one, so offline reports measure exactly what the HTTP service would return.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.grades import GRADE_LEVELS
from distill.data.schema import LabelledPair

CONCURRENT_REQUESTS = 8  # × max_items (500) + 8 stays below the service's default queue capacity


def offline_settings(bundle_dir: str | Path, **overrides: Any):
    """The service's settings for scoring a bundle in-process: CPU, OMP_NUM_THREADS (default up to 4)
    inference threads, and a deadline no offline batch meets by accident (10 minutes); ``overrides``
    (any ``Settings`` field, ``provider`` included) replace these."""
    from service.settings import Settings

    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or min(4, os.cpu_count() or 1)
    defaults: dict[str, Any] = {
        "ort_intra_op_threads": threads,
        "request_deadline_ms": 600_000,
        "provider": "cpu",
    }
    return Settings(bundle=Path(bundle_dir), **(defaults | overrides))


def score_bundle(
    bundle_dir: str | Path, pairs: list[LabelledPair], **settings_overrides: Any
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(score per pair, grade probabilities over GRADE_LEVELS per pair or None, bundle info).

    ``settings_overrides`` go to ``offline_settings`` (e.g. ``provider="cuda", provider_strict=True``
    for the GPU parity check of loadtest/gpu/run.py)."""
    from core.bundle import read_manifest

    manifest = read_manifest(bundle_dir)  # BundleError (a ValueError) names the problem
    if manifest.has_grades and list(manifest.grade_levels) != list(GRADE_LEVELS):
        raise ValueError(
            f"{bundle_dir}: grade levels {manifest.grade_levels} differ from the project's {GRADE_LEVELS}"
        )
    scores, probs = asyncio.run(_score_all(offline_settings(bundle_dir, **settings_overrides), pairs))
    return scores, probs if manifest.has_grades else None, manifest.summary()


async def _score_all(settings, pairs: list[LabelledPair]) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    from core.item import Item
    from service.metrics import Metrics
    from service.schemas import ScoreRequest
    from service.scorer import Scorer

    scorer = Scorer(settings, Metrics())
    await scorer.start()
    scores = np.full(len(pairs), np.nan)
    probs = np.zeros((len(pairs), len(GRADE_LEVELS)))
    by_query: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_query.setdefault(p.query, []).append(i)
    untitled = [p.source or p.item.id for p in pairs if not p.item.title.strip()]
    if untitled:
        raise ValueError(
            f"{len(untitled)} items have no title (e.g. {untitled[0]}); the service cannot score them"
        )
    requests = []
    for query, rows in by_query.items():
        for start in range(0, len(rows), settings.max_items):
            chunk = rows[start : start + settings.max_items]
            items = [Item(**pairs[i].item.as_mapping()) for i in chunk]
            requests.append((ScoreRequest(query=query, items=items), chunk))
    gate = asyncio.Semaphore(CONCURRENT_REQUESTS)
    progress = tqdm(total=len(pairs), desc=f"scoring with {settings.bundle.name}", unit="pair", disable=None)

    async def run(request, rows: list[int]) -> None:
        async with gate:
            results = await scorer.score(request)
        for row, result in zip(rows, results, strict=True):
            scores[row] = result["score"]
            if "grades" in result:
                probs[row] = [result["grades"][g] for g in GRADE_LEVELS]
        progress.update(len(rows))

    try:
        await asyncio.gather(*(run(req, rows) for req, rows in requests))
    finally:
        progress.close()
        await scorer.stop()
    return scores, probs
