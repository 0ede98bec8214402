"""``load_pairs``: one entry point for every supported dataset format, with format detection.

Formats (``fmt``): ``wands`` (folder), ``esci`` (folder with the official parquet pair),
``esci-csv`` (flat CSV), ``esci-tsv`` (judgments TSV), ``home-depot``, ``crowdflower``
(Kaggle train.csv), ``jsonl`` and ``csv`` (the project's generic format; ``csv`` also reads TSV).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distill.data.formats import esci, generic, kaggle, wands
from distill.data.reading import DataError, LoadReport, LoadResult

__all__ = ["FORMATS", "DataError", "LoadReport", "LoadResult", "detect_format", "load_pairs"]

FORMATS: dict[str, Callable[..., LoadResult]] = {
    "wands": wands.load,
    "esci": esci.load_parquet,
    "esci-csv": esci.load_flat,
    "esci-tsv": lambda path, **opts: esci.load_flat(path, delimiter="\t", **opts),
    "home-depot": kaggle.load_home_depot,
    "crowdflower": kaggle.load_crowdflower,
    "jsonl": generic.load_jsonl,
    "csv": generic.load_csv,
}


def load_pairs(path: str | Path, fmt: str | None = None, **opts) -> LoadResult:
    """Load labelled pairs from ``path``; ``opts`` go to the format's loader (e.g. on_error, locale)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    fmt = fmt or detect_format(p)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "esci" and p.is_file():
        p = p.parent  # given one of the two parquet files: read the pair from its folder
    return FORMATS[fmt](p, **opts)


def detect_format(path: Path) -> str:
    """Format of ``path`` from its layout and header; DataError when it cannot tell."""
    if path.is_dir():
        names = {c.name for c in path.iterdir()}
        if set(wands.FILES) <= names:
            return "wands"
        if esci.EXAMPLES_FILE in names:
            return "esci"
        raise DataError(
            f"{path}: a folder must hold the WANDS files ({', '.join(wands.FILES)}) "
            f"or the ESCI parquet files ({esci.EXAMPLES_FILE}, {esci.PRODUCTS_FILE})"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "esci"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    with path.open("rb") as f:
        # latin-1 never fails, and every known header is ASCII.
        header_line = f.readline().decode("latin-1").lstrip("\ufeffï»¿").strip()
    delimiter = "\t" if "\t" in header_line else ","
    header = {c.strip().strip('"') for c in header_line.split(delimiter)}
    if {"search_term", "product_uid", "relevance"} <= header:
        return "home-depot"
    if "median_relevance" in header:
        return "crowdflower"
    if "esci_label" in header:
        return "esci-tsv" if delimiter == "\t" else "esci-csv"
    if {"query", "item_id"} <= header:
        return "csv"
    raise DataError(
        f"{path}: cannot tell the format from its header ({header_line[:120]!r}); "
        f"pass one of {', '.join(FORMATS)}"
    )
