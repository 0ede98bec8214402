"""Transfer sets for distillation: unlabelled (query, item) pairs a teacher can label.

Knowledge distillation adds most where the teacher labels pairs that have no human label. This
builds such pairs from a labelled set alone, from the set's own catalogue (its distinct items):

* for each query, the ``per_query`` items it has no judgement for that score highest under BM25
  (``distill/baselines/bm25.py``; score > 0), i.e. the near misses a search engine would show for it,
  retrieved from one BM25 index for all queries at once (``bm25s`` top-k), never by scoring every
  catalogue item for every query;
* plus ``random_per_query`` other unjudged items, drawn uniformly per query with a generator seeded by
  the query id and ``seed``: the easy negatives a search backend also sends, so the student sees them.

Deterministic: the same input and options give the same pairs in the same order (queries in input
order, BM25 items best first, ties by catalogue order, then the random ones). The pairs are written in
the generic JSONL format with an empty label, so every loader, ``relevance teacher annotate`` and
``relevance student train`` read them; the student's hard-label loss skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from core.datasets import unit_hash
from distill.data.schema import LabelledPair, distinct_items

BM25_SOURCE, RANDOM_SOURCE = "transfer:bm25", "transfer:random"


def transfer_pairs(
    pairs: Sequence[LabelledPair],
    per_query: int,
    *,
    random_per_query: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> list[LabelledPair]:
    """Up to ``per_query`` unjudged top-BM25 items and ``random_per_query`` random unjudged items per query."""
    from tqdm import tqdm

    from distill.baselines.bm25 import BM25Scorer

    scorer = BM25Scorer(pairs)
    items = list(distinct_items(pairs).values())  # catalogue order = the index's rows
    judged: dict[str, set[str]] = {}
    queries: dict[str, str] = {}
    for p in pairs:
        judged.setdefault(p.query_id, set()).add(p.item.id)
        queries.setdefault(p.query_id, p.query)
    most_judged = max((len(v) for v in judged.values()), default=0)
    top = scorer.top_items(list(queries.values()), k=min(len(items), per_query + most_judged))
    out: list[LabelledPair] = []
    for (query_id, query), (rows, scores) in tqdm(
        zip(queries.items(), top, strict=True),
        total=len(queries),
        desc="transfer pairs",
        unit="query",
        disable=not progress,
    ):
        seen = judged[query_id]
        taken: list[int] = []
        for row, score in zip(rows, scores, strict=True):
            if len(taken) == per_query or score <= 0:
                break
            if items[row].id not in seen:
                taken.append(row)
        picked = set(taken)
        out.extend(
            LabelledPair(query_id=query_id, query=query, item=items[r], source=BM25_SOURCE) for r in taken
        )
        if random_per_query:
            rng = np.random.default_rng(int(unit_hash(f"transfer:{seed}:{query_id}") * 2**63))
            drawn: list[int] = []
            # Rejection sampling: the judged and BM25 items are a sliver of a large catalogue.
            for row in rng.permutation(len(items)):
                if len(drawn) == random_per_query:
                    break
                if row not in picked and items[row].id not in seen:
                    drawn.append(int(row))
            out.extend(
                LabelledPair(query_id=query_id, query=query, item=items[r], source=RANDOM_SOURCE)
                for r in drawn
            )
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
