"""Deterministic train/dev splits by query: a query's split depends only on its id and the seed.

``u = sha256(f"{seed}:{query_id}")`` read as a fraction in [0, 1); ``u < dev_fraction`` → dev.
No query can appear in two splits, and adding or removing other queries never moves a query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

from distill.data.schema import LabelledPair

SPLIT_SEED = 0
DEV_FRACTION = 0.2
SplitName = Literal["train", "dev"]


def split_of(query_id: str, *, dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED) -> SplitName:
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "dev" if u < dev_fraction else "train"


def split_by_query(pairs: Iterable[LabelledPair], *, dev_fraction: float = DEV_FRACTION,
                   seed: int = SPLIT_SEED) -> dict[SplitName, list[LabelledPair]]:
    """Split any loaded set (Home Depot, CrowdFlower, ...) by query id; order within a split is kept."""
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), not {dev_fraction}")
    out: dict[SplitName, list[LabelledPair]] = {"train": [], "dev": []}
    for pair in pairs:
        out[split_of(pair.query_id, dev_fraction=dev_fraction, seed=seed)].append(pair)
    return out


def sample_queries(pairs: list[LabelledPair], max_queries: int, *, seed: int = SPLIT_SEED) -> list[LabelledPair]:
    """All pairs of at most ``max_queries`` queries, chosen by hash (deterministic, order-free)."""
    queries = {p.query_id for p in pairs}
    if len(queries) <= max_queries:
        return pairs
    rank = sorted(queries, key=lambda q: hashlib.sha256(f"sample:{seed}:{q}".encode()).digest())
    keep = set(rank[:max_queries])
    return [p for p in pairs if p.query_id in keep]
