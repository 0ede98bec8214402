"""Transfer sets for distillation: unlabelled (query, item) pairs a teacher can label.

Knowledge distillation adds most where the teacher labels pairs that have no human label. This
builds such pairs from a labelled set alone: each query is paired with the catalogue items it has
no judgement for that score highest under BM25 (``distill/baselines/bm25.py``), i.e. the near
misses a search engine would show for it. The pairs are written in the generic JSONL format with
an empty label, so every loader, ``relevance teacher annotate``, ``relevance teacher sft --predict`` and
``relevance student train`` read them; the student's hard-label loss skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from distill.data.schema import LabelledPair


def transfer_pairs(pairs: Sequence[LabelledPair], per_query: int) -> list[LabelledPair]:
    """Up to ``per_query`` unjudged items per query, by BM25 over the set's own catalogue (score > 0)."""
    from distill.baselines.bm25 import BM25Scorer

    scorer = BM25Scorer(pairs)
    items = {p.item.id: p.item for p in pairs}
    judged = {(p.query_id, p.item.id) for p in pairs}
    queries = {p.query_id: p.query for p in pairs}
    out: list[LabelledPair] = []
    for query_id, query in queries.items():
        candidates = [
            LabelledPair(query_id=query_id, query=query, item=item, source="transfer:bm25")
            for item_id, item in items.items()
            if (query_id, item_id) not in judged
        ]
        if not candidates:
            continue
        scores = scorer.score(candidates)
        for i in np.argsort(-scores, kind="stable")[:per_query]:
            if scores[i] > 0:
                out.append(candidates[i])
    return out


def write_generic_jsonl(path: Path, pairs: Sequence[LabelledPair]) -> None:
    """Pairs in the generic JSONL format (``distill/data/formats/generic.py``); unlabelled: label "".
    Items keep every field, so each pair's ``pair_id`` is the same when read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for pair in pairs:
            item = pair.item.as_mapping()
            record = {
                "query": pair.query,
                "query_id": pair.query_id,
                "item_id": item.pop("id"),
                "title": item.pop("title"),
                "label": pair.label or "",
                **item,
            }
            f.write(orjson.dumps(record) + b"\n")
