"""Amazon Shopping Queries Dataset (ESCI, https://github.com/amazon-science/esci-data).

Three layouts are read:

* the official release: ``shopping_queries_dataset_examples.parquet`` + ``..._products.parquet``
  (joined on product_id and product_locale), given as the folder that holds them;
* a flat CSV with the examples' and products' columns side by side (``esci.csv``);
* the judgments TSV (query_id, query, product_id, product_title, esci_label).

Labels map E → Exact, S/C → Partial, I → Irrelevant (``distill.data.labels``); the raw label is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from core.item import Item, is_blank
from distill.data.labels import LabelError, esci_grade
from distill.data.reading import DataError, LoadResult, OnError, PairCollector, clean, read_table
from distill.data.schema import LabelledPair

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
EXAMPLE_COLUMNS = (
    "example_id",
    "query",
    "query_id",
    "product_id",
    "product_locale",
    "esci_label",
    "small_version",
    "large_version",
    "split",
)
PRODUCT_COLUMNS = (
    "product_id",
    "product_title",
    "product_description",
    "product_bullet_point",
    "product_brand",
    "product_color",
    "product_locale",
)
FLAT_COLUMNS = ("query_id", "query", "product_id", "product_title", "esci_label")
TSV_COLUMNS = ("query_id", "query", "product_id", "product_title", "esci_label")
# Official product column → item field (the names TextTemplate.item_fields renders).
_ITEM_FIELDS = {
    "product_brand": "brand",
    "product_color": "color",
    "product_description": "description",
    "product_bullet_point": "bullet_points",
}

Version = Literal["small", "large", "any"]


def _pair(row: Mapping[str, object], where: str, out: PairCollector, dataset: str) -> None:
    def cell(key: str) -> str:
        value = row.get(key)
        return "" if value is None else str(value).strip()

    query, pid = cell("query"), cell("product_id")
    if not query:
        out.skip("empty query", where, "query is empty")
        return
    if not pid:
        out.skip("empty product_id", where, "product_id is empty")
        return
    if is_blank(cell("product_title")):
        out.skip("empty product_title", where, "product_title is empty")
        return
    try:
        grade = esci_grade(cell("esci_label"))
    except LabelError as exc:
        out.skip("bad label", where, str(exc))
        return
    fields = {field: cell(col) for col, field in _ITEM_FIELDS.items() if cell(col)}
    item = Item(id=pid, title=cell("product_title"), **fields)
    out.add(
        LabelledPair(
            query_id=cell("query_id") or query,
            query=query,
            item=item,
            label=grade,
            raw_label=cell("esci_label"),
            source=f"{dataset}:{where}",
        )
    )


def load_parquet(
    path: str | Path,
    *,
    locale: str | None = "us",
    version: Version = "small",
    split: str | None = None,
    on_error: OnError = "skip",
) -> LoadResult:
    """The official parquet pair; ``path`` is their folder. Rows outside the filters (locale,
    small/large version, split) are not part of this selection and are not counted as skipped."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if version not in ("small", "large", "any"):
        raise ValueError(f"version must be 'small', 'large' or 'any', not {version!r}")
    folder = Path(path)
    files = [folder / EXAMPLES_FILE, folder / PRODUCTS_FILE]
    for f in files:
        if not f.is_file():
            raise DataError(f"{folder}: missing ESCI file {f.name}")
    examples = _read_parquet(pq, files[0], EXAMPLE_COLUMNS)
    examples = examples.append_column("__row__", pa.array(range(examples.num_rows), pa.int64()))
    products = _read_parquet(pq, files[1], PRODUCT_COLUMNS)
    # Filter in Arrow first: the full release has 2.6M examples over three locales.
    if locale:
        examples = examples.filter(pc.equal(examples["product_locale"], locale))
        products = products.filter(pc.equal(products["product_locale"], locale))
    if version != "any":
        examples = examples.filter(pc.equal(pc.cast(examples[f"{version}_version"], pa.int64()), 1))
    if split:
        examples = examples.filter(pc.equal(examples["split"], split))
    catalogue = {(str(p["product_id"]), str(p["product_locale"])): p for p in products.to_pylist()}
    out = PairCollector("esci-parquet", files, on_error)
    for ex in examples.to_pylist():
        out.row()
        where = f"{files[0]}:row {ex['__row__']}"
        product = catalogue.get((str(ex["product_id"]), str(ex["product_locale"])))
        if product is None:
            out.skip(
                "product not in products file",
                where,
                f"product_id {ex['product_id']!r} (locale {ex['product_locale']}) is not in {PRODUCTS_FILE}",
            )
            continue
        _pair({**product, **ex}, where, out, "esci")
    return out.result()


def _read_parquet(pq, path: Path, columns: Iterable[str]):
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.column_names)})"
        )
    return table.select(list(columns))


def load_flat(
    path: str | Path, *, locale: str | None = "us", on_error: OnError = "skip", delimiter: str = ","
) -> LoadResult:
    """Flat CSV (examples and product columns in one file) or the judgments TSV (delimiter="\\t")."""
    p = Path(path)
    out = PairCollector("esci-tsv" if delimiter == "\t" else "esci-csv", [p], on_error)
    rows = (
        (line, row)
        for line, row in read_table(p, required=FLAT_COLUMNS, delimiter=delimiter)
        if not (locale and "product_locale" in row and clean(row["product_locale"]).lower() != locale)
    )
    for where, row in out.table_rows(rows, p):
        _pair(row, where, out, "esci")
    return out.result()
