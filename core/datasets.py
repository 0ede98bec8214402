"""Dataset names and the split by query: the one grammar of every ``--data``, ``--train``, ``--dev`` and
``--input`` value, and the one hash that puts a query (or any group) on one side of a split.

A dataset spec is ``NAME:SPLIT`` or a path::

    bundled:train|dev|all      the Apache-2.0 ESCI excerpt shipped in distill/data/bundled/
    home-depot:train|dev|all   Kaggle data, read from $RELEVANCE_SHARED_DATA (default ../shared/data)
    crowdflower:train|dev|all  Kaggle data, likewise
    PATH[:train|dev|all]       any file or folder a loader reads (distill/data/loaders.py)

Named sets other than ``bundled`` are split by ``split_of`` (a query's side depends only on its id);
the bundled set's split is pinned in its splits.json, made by the same function. Loading a spec is
distill/data/datasets.py's job; this module only names and splits.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal


class Split(StrEnum):
    """The part of a dataset a spec selects (``NAME:SPLIT``): its by-query train or dev side, or all of it."""

    train = "train"
    dev = "dev"
    all = "all"


SPLITS: tuple[str, ...] = tuple(Split)
SPLIT_SEED = 0
DEV_FRACTION = 0.2

BUNDLED = "bundled"
# Kaggle sets are never bundled: they are read from the shared data folder.
EXTERNAL_DATASETS: dict[str, str] = {
    "home-depot": "home-depot/train.csv",
    "crowdflower": "crowdflower/train.csv",
}
SHARED_DATA_ENV = "RELEVANCE_SHARED_DATA"
DEFAULT_SHARED_DATA = "../shared/data"
NAMES: tuple[str, ...] = (BUNDLED, *EXTERNAL_DATASETS)
SPEC_HELP = "bundled:train|dev|all, home-depot:SPLIT, crowdflower:SPLIT, or a data file/folder (PATH[:SPLIT])"


class DatasetError(ValueError):
    """A dataset spec that names nothing loadable; the message says what is accepted or what is missing."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: a named dataset (``name``) or a path (``path``), and the split wanted."""

    name: str | None
    path: Path | None
    split: Split

    def __str__(self) -> str:
        return f"{self.name or self.path}:{self.split}"


def parse_dataset(spec: str, *, default_split: Split = Split.all) -> DatasetSpec:
    """``NAME:SPLIT`` or ``PATH[:SPLIT]`` → DatasetSpec; DatasetError when a name or split is unknown."""
    text = spec.strip()
    if not text:
        raise DatasetError(f"empty dataset spec; use {SPEC_HELP}")
    head, sep, tail = text.rpartition(":")
    if sep and tail in SPLITS and head:
        base, split = head, Split(tail)
    else:
        base, split = text, Split(default_split)
    if base in NAMES:
        return DatasetSpec(name=base, path=None, split=split)
    if sep and base == text and head in NAMES:  # e.g. home-depot:test
        raise DatasetError(f"{spec!r}: the split must be one of {', '.join(SPLITS)}")
    return DatasetSpec(name=None, path=Path(base), split=split)


def shared_data_root() -> Path:
    return Path(os.environ.get(SHARED_DATA_ENV, DEFAULT_SHARED_DATA))


def external_dataset_path(name: str) -> Path:
    """The file of a named external dataset; DatasetError (one line, saying where it looked) when absent."""
    if name not in EXTERNAL_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; named datasets: {', '.join(NAMES)}")
    path = shared_data_root() / EXTERNAL_DATASETS[name]
    if not path.is_file():
        raise DatasetError(
            f"{path}: {name} data not found. It is Kaggle competition data and is not bundled: "
            f"put its train.csv there, set {SHARED_DATA_ENV} to the folder above it, or pass the path"
        )
    return path


def unit_hash(key: str) -> float:
    """sha256 of ``key`` read as a fraction in [0, 1): the project's one stable hash for splits and folds."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(
    query_id: str, *, dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED
) -> Literal["train", "dev"]:
    """``unit_hash(f"{seed}:{query_id}") < dev_fraction`` → dev. No query is on two sides, and adding or
    removing other queries never moves a query."""
    return "dev" if unit_hash(f"{seed}:{query_id}") < dev_fraction else "train"


def fold_of(group: str, folds: int, *, salt: str) -> int:
    """The cross-validation fold of a group (a query), in [0, folds); ``salt`` keeps folds independent
    of the train/dev split, which hashes the same query ids."""
    return min(int(unit_hash(f"{salt}:{group}") * folds), folds - 1)
