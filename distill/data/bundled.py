"""The bundled data: Apache-2.0 excerpts of Amazon ESCI (US) shipped in ``distill/data/bundled/``.

Two files are bundled (see the folder's README and NOTICE): the judgments TSV (877 pairs, 346
queries, titles only) and a 200-pair sample with every product field. ``load_bundled`` returns
their union, split by query as recorded in ``splits.json`` (written by ``write_splits_manifest``;
``relevance data bundle-splits`` rewrites it). The manifest pins each source's sha256, so an
edited source file is an error rather than a silent change of the evaluation set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.datasets import Split
from distill.data.loaders import load_pairs
from distill.data.reading import DataError, LoadReport
from distill.data.schema import LabelledPair
from distill.data.splits import DEV_FRACTION, SPLIT_SEED, split_of

BUNDLED_DIR = Path(__file__).parent / "bundled"
SPLITS_FILE = BUNDLED_DIR / "splits.json"
SOURCES: tuple[tuple[str, str], ...] = (
    ("esci_us_subset.tsv", "esci-tsv"),
    ("esci_us_sample_full.csv", "esci-csv"),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_sources() -> tuple[list[LabelledPair], list[LoadReport]]:
    pairs: list[LabelledPair] = []
    reports: list[LoadReport] = []
    for name, fmt in SOURCES:
        result = load_pairs(BUNDLED_DIR / name, fmt, on_error="raise")  # bundled data must be clean
        pairs.extend(result.pairs)
        reports.append(result.report)
    return pairs, reports


def load_bundled(split: Split) -> list[LabelledPair]:
    """Pairs of the bundled ESCI US data in ``split`` ("train", "dev" or "all")."""
    if split not in ("train", "dev", "all"):
        raise ValueError(f"split must be 'train', 'dev' or 'all', not {split!r}")
    manifest = json.loads(SPLITS_FILE.read_text(encoding="utf-8"))
    for source in manifest["sources"]:
        actual = _sha256(BUNDLED_DIR / source["file"])
        if actual != source["sha256"]:
            raise DataError(
                f"{BUNDLED_DIR / source['file']}: sha256 {actual} differs from {SPLITS_FILE} "
                f"({source['sha256']}); run `relevance data bundle-splits` if the change is intended"
            )
    pairs, _ = _load_sources()
    if split == "all":
        return pairs
    wanted = set(manifest["query_ids"][split])
    known = set(manifest["query_ids"]["train"]) | set(manifest["query_ids"]["dev"])
    unknown = sorted({p.query_id for p in pairs} - known)
    if unknown:
        raise DataError(
            f"{SPLITS_FILE}: query ids {unknown[:5]} are in no split; run `relevance data bundle-splits`"
        )
    return [p for p in pairs if p.query_id in wanted]


def write_splits_manifest(*, dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED) -> dict:
    """Recompute the by-query split of the bundled sources and write ``splits.json``."""
    pairs, reports = _load_sources()
    query_ids: dict[str, set[str]] = {"train": set(), "dev": set()}
    pair_counts = {"train": 0, "dev": 0}
    for pair in pairs:
        name = split_of(pair.query_id, dev_fraction=dev_fraction, seed=seed)
        query_ids[name].add(pair.query_id)
        pair_counts[name] += 1
    manifest = {
        "method": "sha256(f'{seed}:{query_id}') as a fraction in [0,1); below dev_fraction -> dev",
        "seed": seed,
        "dev_fraction": dev_fraction,
        "sources": [
            {"file": name, "format": fmt, "sha256": _sha256(BUNDLED_DIR / name), "pairs": report.pairs}
            for (name, fmt), report in zip(SOURCES, reports, strict=True)
        ],
        "counts": {name: {"queries": len(query_ids[name]), "pairs": pair_counts[name]} for name in query_ids},
        "query_ids": {name: sorted(ids) for name, ids in query_ids.items()},
    }
    SPLITS_FILE.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest
