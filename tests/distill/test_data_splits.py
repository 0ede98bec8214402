"""By-query splits: deterministic, no query in two splits, and the bundled manifest matches them."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.item import Item
from distill.data.bundled import BUNDLED_DIR, SPLITS_FILE, load_bundled
from distill.data.schema import LabelledPair
from distill.data.splits import split_by_query, split_of


def _pairs(n_queries: int, per_query: int = 3) -> list[LabelledPair]:
    return [
        LabelledPair(
            query_id=f"q{q}", query=f"query {q}", item=Item(id=f"i{q}-{i}", title="t"), label="Exact"
        )
        for q in range(n_queries)
        for i in range(per_query)
    ]


def test_split_is_deterministic_and_by_query():
    pairs = _pairs(500)
    a = split_by_query(pairs)
    b = split_by_query(list(reversed(pairs)))
    assert {p.item.id for p in a["dev"]} == {p.item.id for p in b["dev"]}
    train_q = {p.query_id for p in a["train"]}
    dev_q = {p.query_id for p in a["dev"]}
    assert not train_q & dev_q
    assert len(a["train"]) + len(a["dev"]) == len(pairs)
    assert 0.12 < len(dev_q) / 500 < 0.28  # about 20%
    # A query's split does not depend on which other queries are present.
    assert all(split_of(q) == "dev" for q in dev_q)
    assert split_by_query(pairs, seed=1)["dev"] != a["dev"]


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="dev_fraction"):
        split_by_query(_pairs(2), dev_fraction=1.0)


def test_bundled_splits_match_manifest_and_do_not_overlap():
    manifest = json.loads(SPLITS_FILE.read_text(encoding="utf-8"))
    for source in manifest["sources"]:
        assert hashlib.sha256((BUNDLED_DIR / source["file"]).read_bytes()).hexdigest() == source["sha256"]
    train, dev, every = load_bundled("train"), load_bundled("dev"), load_bundled("all")
    assert len(train) + len(dev) == len(every) == 1077
    train_q, dev_q = {p.query_id for p in train}, {p.query_id for p in dev}
    assert not train_q & dev_q
    assert sorted(dev_q) == manifest["query_ids"]["dev"]
    assert manifest["counts"]["dev"] == {"queries": len(dev_q), "pairs": len(dev)}
    # The manifest is what the split function gives today (no stale manifest).
    assert all(
        split_of(q, dev_fraction=manifest["dev_fraction"], seed=manifest["seed"]) == "dev" for q in dev_q
    )
    assert all(
        split_of(q, dev_fraction=manifest["dev_fraction"], seed=manifest["seed"]) == "train" for q in train_q
    )
    assert all(p.label is not None for p in every)


def test_bundled_rejects_unknown_split():
    with pytest.raises(ValueError, match="split must be"):
        load_bundled("test")  # type: ignore[arg-type]


def test_sample_queries_keeps_whole_queries_deterministically():
    from distill.data.splits import sample_queries

    pairs = _pairs(50)
    a = sample_queries(pairs, 10)
    assert len({p.query_id for p in a}) == 10 and len(a) == 30  # every pair of a kept query
    assert [p.item.id for p in sample_queries(list(reversed(pairs)), 10)] == [p.item.id for p in reversed(a)]
    assert sample_queries(pairs, 100) == pairs
