"""Wayfair WANDS (https://github.com/wayfair/WANDS): a folder with three tab-separated files.

``query.csv`` (query_id, query, query_class), ``product.csv`` (product_id, product_name,
product_class, category hierarchy, product_description, product_features, ...) and
``label.csv`` (id, query_id, product_id, label ∈ Exact/Partial/Irrelevant).
``product_features`` is ``name : value|name:value|...`` and becomes the item's attributes.
"""

from __future__ import annotations

from pathlib import Path

from core.item import Item, is_blank
from distill.data.labels import LabelError, wands_grade
from distill.data.reading import DataError, LoadResult, OnError, PairCollector, clean, read_table
from distill.data.schema import LabelledPair

FILES = ("query.csv", "product.csv", "label.csv")


def parse_features(text: str) -> dict[str, str]:
    """``"name : value|name:value"`` → {name: value}; pieces without a colon are kept under ``feature_N``."""
    attributes: dict[str, str] = {}
    for n, piece in enumerate(p for p in text.split("|") if p.strip()):
        name, sep, value = piece.partition(":")
        if sep and name.strip():
            attributes[name.strip()] = value.strip()
        else:
            attributes[f"feature_{n}"] = piece.strip()
    return attributes


def load(path: str | Path, *, on_error: OnError = "skip") -> LoadResult:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: WANDS expects a folder holding {', '.join(FILES)}")
    for name in FILES:
        if not (folder / name).is_file():
            raise DataError(f"{folder}: missing WANDS file {name}")
    queries = {
        clean(row["query_id"]): clean(row["query"])
        for _, row in read_table(folder / "query.csv", required=("query_id", "query"), delimiter="\t")
    }
    products: dict[str, Item] = {}
    untitled: set[str] = set()  # products whose name is blank: their label rows are skipped, and say why
    for _, row in read_table(folder / "product.csv", required=("product_id", "product_name"), delimiter="\t"):
        fields = {
            key: clean(row.get(key))
            for key in ("product_class", "category hierarchy", "product_description")
            if clean(row.get(key))
        }
        if "category hierarchy" in fields:  # the official header has a space
            fields["category_hierarchy"] = fields.pop("category hierarchy")
        if "product_description" in fields:
            fields["description"] = fields.pop("product_description")
        if is_blank(clean(row["product_name"])):
            untitled.add(clean(row["product_id"]))
            continue
        products[clean(row["product_id"])] = Item(
            id=clean(row["product_id"]),
            title=clean(row["product_name"]),
            attributes=parse_features(clean(row.get("product_features"))),
            **fields,
        )
    label_file = folder / "label.csv"
    out = PairCollector("wands", [folder / n for n in FILES], on_error)
    labels = read_table(label_file, required=("query_id", "product_id", "label"), delimiter="\t")
    for where, row in out.table_rows(labels, label_file):
        qid, pid = clean(row["query_id"]), clean(row["product_id"])
        if qid not in queries:
            out.skip("unknown query_id", where, f"query_id {qid!r} is not in query.csv")
            continue
        if not queries[qid]:
            out.skip("empty query", where, f"query_id {qid!r} has an empty query in query.csv")
            continue
        if pid in untitled:
            out.skip(
                "empty product_name", where, f"product_id {pid!r} has an empty product_name in product.csv"
            )
            continue
        if pid not in products:
            out.skip("unknown product_id", where, f"product_id {pid!r} is not in product.csv")
            continue
        try:
            grade = wands_grade(clean(row["label"]))
        except LabelError as exc:
            out.skip("bad label", where, str(exc))
            continue
        out.add(
            LabelledPair(
                query_id=qid,
                query=queries[qid],
                item=products[pid],
                label=grade,
                raw_label=clean(row["label"]),
                source=f"wands:{where}",
            )
        )
    return out.result()
