"""The project's own interchange format, as JSONL or CSV/TSV.

Columns/keys: ``query`` and ``item_id`` (required), ``title``, ``query_id`` (defaults to the query
text), ``label`` (grade name, ESCI letter or index 0–2; empty = unlabelled), ``attributes`` (an
object; in CSV a JSON object string). Any other column becomes an item field (brand, color, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from core.item import Item
from distill.data.labels import LabelError, generic_grade
from distill.data.reading import DataError, LoadResult, OnError, PairCollector, read_table, read_text
from distill.data.schema import LabelledPair

REQUIRED = ("query", "item_id")
_RESERVED = {"query", "query_id", "item_id", "title", "label", "attributes"}


def _pair(record: dict[str, Any], where: str, out: PairCollector) -> None:
    query = str(record.get("query") or "").strip()
    item_id = str(record.get("item_id") or "").strip()
    if not query:
        out.skip("empty query", where, "query is empty")
        return
    if not item_id:
        out.skip("empty item_id", where, "item_id is empty")
        return
    try:
        grade = generic_grade(record.get("label"))
    except LabelError as exc:
        out.skip("bad label", where, str(exc))
        return
    attributes = record.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = orjson.loads(attributes)
        except orjson.JSONDecodeError:
            attributes = None
    if not isinstance(attributes, dict):
        out.skip("bad attributes", where, "attributes is not a JSON object")
        return
    fields = {k: v for k, v in record.items() if k not in _RESERVED and v not in (None, "")}
    try:
        item = Item(
            id=item_id,
            title=str(record.get("title") or "").strip(),
            attributes={str(k): str(v) for k, v in attributes.items()},
            **fields,
        )
    except ValidationError as exc:
        out.skip("bad item", where, str(exc.errors()[0]["msg"]))
        return
    label = record.get("label")
    out.add(
        LabelledPair(
            query_id=str(record.get("query_id") or query).strip(),
            query=query,
            item=item,
            label=grade,
            raw_label=label if isinstance(label, str | int | float) else None,
            source=f"generic:{where}",
        )
    )


def load_jsonl(path: str | Path, *, on_error: OnError = "skip") -> LoadResult:
    p = Path(path)
    out = PairCollector("jsonl", [p], on_error)
    missing_seen = False
    for line_no, line in enumerate(read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        out.row()
        where = f"{p}:{line_no}"
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            out.skip("invalid JSON", where, f"not valid JSON ({exc})")
            continue
        if not isinstance(record, dict):
            out.skip("invalid JSON", where, "line is not a JSON object")
            continue
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            if not missing_seen and line_no == 1:
                # A first record without the required keys means the wrong file, not a bad row.
                raise DataError(f"{where}: missing key(s) {', '.join(missing)} (found: {', '.join(record)})")
            missing_seen = True
            out.skip("missing key", where, f"missing key(s) {', '.join(missing)}")
            continue
        _pair(record, where, out)
    return out.result()


def load_csv(path: str | Path, *, on_error: OnError = "skip", delimiter: str | None = None) -> LoadResult:
    p = Path(path)
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
    out = PairCollector("csv", [p], on_error)
    for where, row in out.table_rows(read_table(p, required=REQUIRED, delimiter=delimiter), p):
        _pair(dict(row), where, out)
    return out.result()
