"""Query slices reported by ``relevance eval run --slice``.

negation: queries with "without", "no", "not" or "non" as a word ("paper bags without handles"),
where matching words are a poor guide to relevance.

long-tail: queries made of words that are rare in the catalogue.

A query's rarity is the mean IDF of its distinct words, IDF = ln((N + 1) / (df + 1)) + 1, where
df counts the catalogue items whose rendered text (``TextTemplate.item_text``) contains the word
and N is the number of distinct items. The catalogue is the whole dataset the evaluated split
comes from (for the bundled data: train + dev), so the threshold does not depend on the split.
A query is long-tail when its mean IDF is above the 75th percentile of all the dataset's queries.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

import numpy as np

from core.text_template import DEFAULT_TEMPLATE, TextTemplate
from distill.data.schema import LabelledPair, distinct_items
from teacher.attributes import NEGATION_WORDS

LONG_TAIL_QUANTILE = 0.75
_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def query_rarity(
    catalogue: Iterable[LabelledPair], template: TextTemplate = DEFAULT_TEMPLATE
) -> dict[str, float]:
    """Mean IDF of each query of ``catalogue`` (query_id → value) over the catalogue's distinct items."""
    catalogue = list(catalogue)
    items = {i: template.item_text(item.as_mapping()) for i, item in distinct_items(catalogue).items()}
    queries: dict[str, str] = {}
    for pair in catalogue:
        queries.setdefault(pair.query_id, pair.query)
    df: Counter[str] = Counter()
    for text in items.values():
        df.update(words(text))
    n = len(items)
    rarity = {}
    for qid, query in queries.items():
        terms = words(template.query_text(query))
        idf = [math.log((n + 1) / (df[t] + 1)) + 1 for t in terms]
        rarity[qid] = float(np.mean(idf)) if idf else 0.0
    return rarity


def long_tail_queries(catalogue: Iterable[LabelledPair], quantile: float = LONG_TAIL_QUANTILE) -> set[str]:
    rarity = query_rarity(catalogue)
    threshold = float(np.quantile(list(rarity.values()), quantile))
    return {q for q, r in rarity.items() if r > threshold}


def negation_queries(catalogue: Iterable[LabelledPair]) -> set[str]:
    return {pair.query_id for pair in catalogue if words(pair.query) & set(NEGATION_WORDS)}


class Slice(StrEnum):
    long_tail = "long-tail"
    negation = "negation"


# slice -> (report section title, the query ids in the slice given the catalogue)
SLICES = {
    Slice.long_tail: ("Long-tail queries", long_tail_queries),
    Slice.negation: ("Negation queries", negation_queries),
}
