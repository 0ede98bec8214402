"""Kaggle relevance competitions, read in their official ``train.csv`` formats.

Both are under the competitions' rules (not open licences): they are read from a path and never
copied into this repository. Neither has query ids, so a query's id is a hash of its normalised
text (the same query text → the same id → the same split).

* Home Depot Product Search Relevance (2016): ISO-8859-1, columns id, product_uid,
  product_title, search_term, relevance (mean of ≥3 raters on 1–3).
* CrowdFlower Search Results Relevance (2015): UTF-8, columns id, query, product_title,
  product_description, median_relevance (1–4), relevance_variance.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.item import Item, is_blank
from core.text_template import normalise_text
from distill.data.labels import LabelError, crowdflower_grade, home_depot_grade
from distill.data.reading import LoadResult, OnError, PairCollector, clean, read_table
from distill.data.schema import LabelledPair

HOME_DEPOT_COLUMNS = ("id", "product_uid", "product_title", "search_term", "relevance")
CROWDFLOWER_COLUMNS = ("id", "query", "product_title", "product_description", "median_relevance")


def query_id_for(query: str) -> str:
    return "q" + hashlib.sha1(normalise_text(query).lower().encode("utf-8")).hexdigest()[:12]


def load_home_depot(
    path: str | Path, *, on_error: OnError = "skip", encoding: str = "iso-8859-1"
) -> LoadResult:
    p = Path(path)
    out = PairCollector("home-depot", [p], on_error)
    for where, row in out.table_rows(read_table(p, required=HOME_DEPOT_COLUMNS, encoding=encoding), p):
        query, uid = clean(row["search_term"]), clean(row["product_uid"])
        if not query:
            out.skip("empty search_term", where, "search_term is empty")
            continue
        if not uid:
            out.skip("empty product_uid", where, "product_uid is empty")
            continue
        if is_blank(clean(row["product_title"])):
            out.skip("empty product_title", where, "product_title is empty")
            continue
        try:
            grade, mean = home_depot_grade(clean(row["relevance"]))
        except LabelError as exc:
            out.skip("bad label", where, str(exc))
            continue
        out.add(
            LabelledPair(
                query_id=query_id_for(query),
                query=query,
                item=Item(id=uid, title=clean(row["product_title"])),
                label=grade,
                raw_label=mean,
                source=f"home-depot:{where}",
            )
        )
    return out.result()


def load_crowdflower(path: str | Path, *, on_error: OnError = "skip") -> LoadResult:
    p = Path(path)
    out = PairCollector("crowdflower", [p], on_error)
    for where, row in out.table_rows(read_table(p, required=CROWDFLOWER_COLUMNS), p):
        query, title = clean(row["query"]), clean(row["product_title"])
        if not query:
            out.skip("empty query", where, "query is empty")
            continue
        if is_blank(title):
            out.skip("empty product_title", where, "product_title is empty")
            continue
        try:
            grade, median = crowdflower_grade(clean(row["median_relevance"]))
        except LabelError as exc:
            out.skip("bad label", where, str(exc))
            continue
        description = clean(row["product_description"])
        # No product ids in this set: the row id names the judged item.
        item = Item(
            id=f"cf{clean(row['id'])}", title=title, **({"description": description} if description else {})
        )
        out.add(
            LabelledPair(
                query_id=query_id_for(query),
                query=query,
                item=item,
                label=grade,
                raw_label=median,
                source=f"crowdflower:{where}",
            )
        )
    return out.result()
