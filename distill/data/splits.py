"""Splitting and sampling loaded pairs by query, with core/datasets.py's hash (``split_of``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from core.datasets import DEV_FRACTION, SPLIT_SEED, split_of, unit_hash
from distill.data.schema import LabelledPair

SplitName = Literal["train", "dev"]


def split_by_query(
    pairs: Iterable[LabelledPair], *, dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED
) -> dict[SplitName, list[LabelledPair]]:
    """Split any loaded set (Home Depot, CrowdFlower, ...) by query id; order within a split is kept."""
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), not {dev_fraction}")
    out: dict[SplitName, list[LabelledPair]] = {"train": [], "dev": []}
    for pair in pairs:
        out[split_of(pair.query_id, dev_fraction=dev_fraction, seed=seed)].append(pair)
    return out


def sample_queries(
    pairs: list[LabelledPair], max_queries: int, *, seed: int = SPLIT_SEED
) -> list[LabelledPair]:
    """All pairs of at most ``max_queries`` queries, chosen by hash (deterministic, order-free)."""
    queries = {p.query_id for p in pairs}
    if len(queries) <= max_queries:
        return pairs
    rank = sorted(queries, key=lambda q: unit_hash(f"sample:{seed}:{q}"))
    keep = set(rank[:max_queries])
    return [p for p in pairs if p.query_id in keep]
