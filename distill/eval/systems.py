"""System specs for ``relevance eval run --system``: each turns a list of pairs into a SystemOutput.

* ``bm25`` — distill.baselines.bm25 over the dataset's whole catalogue.
* ``bundle:PATH`` — a model bundle scored in-process through the service's scoring code.
* ``ensemble:DIR`` — teacher rung (c) (distill/teacher/ensemble.py): score = expected level value of
  its grade distribution.
* ``annotations:PATH.jsonl`` — teacher CoTRecords: score = expected level value of the grade
  distribution, grades from the distribution (a record with a grade but no distribution counts
  as one-hot). Pairs without a usable record are left unscored (NaN) and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.cot import CoTFileError, CoTRecord, grade_distribution, read_records
from core.grades import GRADE_LEVELS, LEVEL_VALUES
from distill.data.reading import DataError
from distill.data.schema import LabelledPair
from distill.eval.evaluate import SystemOutput

KINDS = ("bm25", "bundle:PATH", "ensemble:DIR", "annotations:PATH")


def score_system(spec: str, pairs: list[LabelledPair], catalogue: list[LabelledPair]) -> SystemOutput:
    kind, _, arg = spec.partition(":")
    if kind == "bm25" and not arg:
        from distill.baselines.bm25 import BM25Scorer

        return SystemOutput("bm25", BM25Scorer(catalogue).score(pairs), info={"spec": spec})
    if kind == "bundle" and arg:
        from distill.baselines.bundle import score_bundle

        scores, probs, info = score_bundle(arg, pairs)
        return SystemOutput(f"bundle:{Path(arg).name}", scores, probs, info={"spec": spec, **info})
    if kind == "ensemble" and arg:
        from distill.teacher.ensemble import score_ensemble

        probs, info = score_ensemble(arg, pairs)
        scores = probs @ np.asarray(LEVEL_VALUES)
        return SystemOutput(f"ensemble:{Path(arg).name}", scores, probs, info={"spec": spec, **info})
    if kind == "annotations" and arg:
        return annotations_output(arg, pairs)
    raise ValueError(f"system {spec!r} is not one of {', '.join(KINDS)}")


def record_distribution(record: CoTRecord) -> np.ndarray | None:
    """The record's grade distribution (core.cot's rule), else its grade as one-hot, else None."""
    dist = grade_distribution(record, GRADE_LEVELS)
    if dist is None and record.grade in GRADE_LEVELS:
        return np.eye(len(GRADE_LEVELS))[GRADE_LEVELS.index(record.grade)]
    return dist


def annotations_output(path: str, pairs: list[LabelledPair]) -> SystemOutput:
    try:
        records, _ = read_records(path)
    except CoTFileError as exc:
        raise DataError(str(exc)) from None
    by_pair_id = {r.pair_id: r for r in records}
    by_query_item = {(r.query, r.item_id): r for r in records}
    scores = np.full(len(pairs), np.nan)
    probs = np.zeros((len(pairs), len(GRADE_LEVELS)))
    missing = no_grade = 0
    values = np.asarray(LEVEL_VALUES)
    for i, pair in enumerate(pairs):
        record = by_pair_id.get(pair.pair_id) or by_query_item.get((pair.query, pair.item.id))
        if record is None:
            missing += 1
            continue
        dist = record_distribution(record)
        if dist is None:
            no_grade += 1
            continue
        probs[i] = dist
        scores[i] = float(dist @ values)
    info = {
        "spec": f"annotations:{path}",
        "records": len(records),
        "pairs_without_record": missing,
        "records_without_grade": no_grade,
    }
    return SystemOutput(f"annotations:{Path(path).stem}", scores, probs, info=info)
