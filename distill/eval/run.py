"""One evaluation (``relevance eval run``): load a labelled set, score it with each system, calibrate
score-only systems on the other split, and compute the metrics of every section (all queries, then
each slice asked for). The caller writes the report (``report.write_report``) and prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.datasets import Split
from distill.data.reading import DataError
from distill.data.schema import LabelledPair
from distill.eval.evaluate import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    EvalSet,
    Predictions,
    SystemOutput,
    evaluate,
    predictions,
)
from distill.eval.slices import SLICES, Slice


@dataclass
class Evaluation:
    result: dict[str, Any]  # what metrics.json holds: the command, the data, one section per slice
    predictions: dict[str, Predictions]  # per system name, on the evaluated pairs
    labels: np.ndarray  # of the evaluated pairs


@dataclass
class _Data:
    pairs: list[LabelledPair]  # to evaluate
    catalogue: list[LabelledPair]  # the whole dataset: BM25's corpus, the slices' statistics
    calibration: list[LabelledPair] | None  # the other split, for score-only systems
    description: str


def _load(
    data: str, fmt: str | None, split: Split | None, max_queries: int | None, log: Callable[[str], None]
) -> _Data:
    """The pairs of a dataset spec to evaluate, all labelled; DataError naming the problem otherwise."""
    from distill.data.datasets import load_dataset

    dataset = load_dataset(data, fmt, default_split=split or Split.all)
    if dataset.load_summary:
        log(dataset.load_summary)
    pairs, calibration, description = dataset.pairs, dataset.other, dataset.description
    if max_queries:
        from distill.data.splits import sample_queries

        pairs = sample_queries(pairs, max_queries)
        calibration = sample_queries(calibration, max_queries) if calibration else None
        description += f"; at most {max_queries} queries of each split, chosen by hash"
    if not pairs:
        raise DataError(f"{data}: no pairs in the selected split")
    unlabelled = [p for p in pairs + (calibration or []) if p.label is None]
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} pairs have no label (e.g. {unlabelled[0].source}); "
            "evaluation needs labelled pairs"
        )
    return _Data(pairs, dataset.catalogue, calibration, description)


def run_evaluation(
    data: str,
    systems: Sequence[str],
    *,
    fmt: str | None = None,
    split: Split | None = None,
    slices: Sequence[Slice] = (),
    calibrate: bool = True,
    max_queries: int | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    command: str = "",
    log: Callable[[str], None] = lambda _: None,
    progress: bool = False,
    compare: Sequence[tuple[str, str]] = (),
) -> Evaluation:
    """Evaluate each of ``systems`` (distinct specs, distill/eval/systems.py; the first is the reference
    of the paired comparisons, and ``compare`` adds (a, b) pairs of specs) on ``data`` (a dataset spec,
    core/datasets.py). Systems are compared on the pairs every one of them scored. Raises DataError or
    ValueError naming the unusable data or system."""
    from distill.eval.systems import score_system

    unknown = sorted({spec for pair in compare for spec in pair} - set(systems))
    if unknown:  # before any scoring: a typo must not cost a whole evaluation
        raise ValueError(f"--compare names {unknown}, which are not --system specs")

    loaded = _load(data, fmt, split, max_queries, log)
    outputs: list[SystemOutput] = []
    calib_outputs: list[SystemOutput | None] = []
    for spec in systems:
        log(f"scoring {len(loaded.pairs)} pairs with {spec}")
        outputs.append(score_system(spec, loaded.pairs, loaded.catalogue))
        if calibrate and loaded.calibration and outputs[-1].grade_probs is None:
            log(f"scoring {len(loaded.calibration)} calibration pairs with {spec}")
            calib_outputs.append(score_system(spec, loaded.calibration, loaded.catalogue))
        else:
            calib_outputs.append(None)
    # Short names (file or folder name) where unique; the whole spec where two would collide.
    short = Counter(o.name for o in outputs)
    for o, spec in zip(outputs, systems, strict=True):
        if short[o.name] > 1:
            o.name = spec
    scored = np.all([~np.isnan(o.scores) for o in outputs], axis=0)
    unscored = {o.name: int(np.isnan(o.scores).sum()) for o in outputs}
    if not scored.any():
        raise ValueError(f"no pair was scored by every system (unscored per system: {unscored})")
    es = EvalSet([p for p, keep in zip(loaded.pairs, scored, strict=True) if keep])
    calib_es = EvalSet(loaded.calibration) if loaded.calibration else None
    name_of = {spec: o.name for spec, o in zip(systems, outputs, strict=True)}
    pairs = [(name_of[a], name_of[b]) for a, b in compare]
    preds = {}
    for o, c in zip(outputs, calib_outputs, strict=True):
        o.scores = o.scores[scored]
        if o.grade_probs is not None:
            o.grade_probs = o.grade_probs[scored]
        preds[o.name] = predictions(o, (calib_es, c) if c is not None else None)
    sections = {
        "All queries": evaluate(es, preds, resamples=resamples, seed=seed, progress=progress, compare=pairs)
    }
    for name in dict.fromkeys(slices):
        title, queries_of = SLICES[name]
        in_slice = queries_of(loaded.catalogue)
        mask = np.array([p.query_id in in_slice for p in es.pairs])
        if mask.any():
            sub_preds = {n: _restrict(p, mask) for n, p in preds.items()}
            sections[title] = evaluate(
                es.subset(mask), sub_preds, resamples=resamples, seed=seed, progress=progress, compare=pairs
            )
        else:
            log(f"{name} slice: no evaluated query is in it")
    for o in outputs:
        for section in sections.values():
            section["systems"][o.name]["info"] = o.info
    result = {
        "command": command,
        "data": {
            "name": data if ":" in data else "/".join(Path(data).parts[-2:]) + (f":{split}" if split else ""),
            "description": loaded.description,
            "pairs_dropped_unscored": int((~scored).sum()),
            "unscored_per_system": unscored,
        },
        "sections": sections,
    }
    return Evaluation(result, preds, es.labels)


def _restrict(pred: Predictions, mask: np.ndarray) -> Predictions:
    return Predictions(
        pred.scores[mask],
        None if pred.p_relevant is None else pred.p_relevant[mask],
        None if pred.grades is None else pred.grades[mask],
        pred.method,
    )
