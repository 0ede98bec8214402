"""The one resolver: a dataset spec (core/datasets.py names the grammar) → loaded, split pairs.

Every command that reads pairs (train, annotate, sft, sft-lora, bootstrap-cot, data transfer-set,
eval…) calls ``load_dataset``, so ``bundled:dev``, ``home-depot:train`` and ``path/to/file.csv:dev``
mean the same everywhere. What a loader skipped is returned (and printed by the commands), never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.datasets import BUNDLED, DatasetError, Split, external_dataset_path, parse_dataset
from distill.data.reading import DataError
from distill.data.schema import LabelledPair

__all__ = ["Dataset", "DataError", "load_dataset"]


@dataclass
class Dataset:
    spec: str
    pairs: list[LabelledPair]  # the requested split
    catalogue: list[LabelledPair]  # every split: what BM25 indexes, where transfer pairs come from
    other: list[LabelledPair] | None  # the complementary split (train for dev and back); None for "all"
    description: str
    skipped: dict[str, int] = field(default_factory=dict)  # loader skips by reason
    load_summary: str = ""  # the loader's one-paragraph report, empty for the bundled set

    def report(self) -> dict:
        return {"source": self.spec, "pairs": len(self.pairs), "skipped": self.skipped}


def load_dataset(spec: str, fmt: str | None = None, *, default_split: Split = "all") -> Dataset:
    """Load ``spec``; ``fmt`` names the format of a path (default: detected). DataError names the problem."""
    from distill.data.splits import split_by_query

    try:
        parsed = parse_dataset(spec, default_split=default_split)
    except DatasetError as exc:
        raise DataError(str(exc)) from None
    if parsed.name == BUNDLED:
        from distill.data.bundled import load_bundled

        every = load_bundled("all")
        other = {"dev": "train", "train": "dev"}.get(parsed.split)
        return Dataset(
            spec,
            load_bundled(parsed.split),
            every,
            load_bundled(other) if other else None,  # type: ignore[arg-type]
            f"bundled ESCI US data, {parsed.split} split (distill/data/bundled/splits.json)",
        )
    from distill.data.loaders import load_pairs

    try:
        path = external_dataset_path(parsed.name) if parsed.name else parsed.path
    except DatasetError as exc:
        raise DataError(str(exc)) from None
    result = load_pairs(path, fmt)
    report = result.report
    desc = (
        f"{parsed.name or path} ({report.format}; {report.rows_read} rows, {report.pairs} pairs, "
        f"{report.skipped_total} skipped: {report.skipped or 'none'})"
    )
    every = result.pairs
    if parsed.split == "all":
        pairs, other, desc = every, None, desc + ", all pairs"
    else:
        parts = split_by_query(every)
        pairs, other = parts[parsed.split], parts["train" if parsed.split == "dev" else "dev"]
        desc += f", {parsed.split} split by query (core/datasets.py)"
    return Dataset(spec, pairs, every, other, desc, dict(report.skipped), report.summary())
