"""BM25 (Lucene variant, via ``bm25s``) of the query against each item's rendered text.

The index holds the catalogue's distinct items, rendered by ``TextTemplate.item_text`` (title and
item fields, as the models see them); words are lower-cased ``\\w+`` runs, no stemming or
stop-word removal. A pair's score is its item's BM25 score for the pair's query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from core.text_template import DEFAULT_TEMPLATE, TextTemplate
from distill.data.schema import LabelledPair, distinct_items

_WORD = re.compile(r"\w+")
K1, B = 1.5, 0.75


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25Scorer:
    def __init__(self, catalogue: Iterable[LabelledPair], template: TextTemplate = DEFAULT_TEMPLATE) -> None:
        import bm25s

        self.template = template
        texts = {i: template.item_text(item.as_mapping()) for i, item in distinct_items(catalogue).items()}
        self.row = {item_id: n for n, item_id in enumerate(texts)}
        corpus = [tokens(t) or ["\u2205"] for t in texts.values()]  # bm25s rejects empty documents
        self.vocab = {w for doc in corpus for w in doc}
        self.index = bm25s.BM25(method="lucene", k1=K1, b=B)
        self.index.index(corpus, show_progress=False)

    def score(self, pairs: list[LabelledPair]) -> np.ndarray:
        """BM25 score per pair; a pair whose item is not in the catalogue is an error."""
        missing = [p.item.id for p in pairs if p.item.id not in self.row]
        if missing:
            raise ValueError(f"{len(missing)} items are not in the BM25 catalogue (e.g. {missing[0]!r})")
        out = np.zeros(len(pairs))
        by_query: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_query.setdefault(self.template.query_text(p.query), []).append(i)
        for query, rows in by_query.items():
            q = [w for w in tokens(query) if w in self.vocab]
            if not q:
                continue  # no query word in the catalogue: every item scores 0
            doc_scores = self.index.get_scores(q)
            out[rows] = doc_scores[[self.row[pairs[i].item.id] for i in rows]]
        return out

    def top_items(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, its ``k`` best catalogue rows (in catalogue order, ``self.row``) and their
        BM25 scores, best first: one top-k retrieval over the index, not a score per item. A query
        with no word in the catalogue gets none."""
        texts = [[w for w in tokens(self.template.query_text(q)) if w in self.vocab] for q in queries]
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, int), np.zeros(0))] * len(queries)
        asked = [i for i, words in enumerate(texts) if words]
        k = min(k, len(self.row))
        if not asked or k <= 0:
            return out
        rows, scores = self.index.retrieve([texts[i] for i in asked], k=k, show_progress=False)
        for n, i in enumerate(asked):
            order = np.lexsort((rows[n], -scores[n]))  # best first, ties by catalogue row: deterministic
            out[i] = (rows[n][order], scores[n][order])
        return out
