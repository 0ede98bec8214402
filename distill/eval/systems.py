"""System specs for ``relevance eval --system``: each turns a list of pairs into a SystemOutput.

* ``bm25`` — distill.baselines.bm25 over the dataset's whole catalogue.
* ``bundle:PATH`` — a model bundle scored in-process through the service's scoring code.
* ``annotations:PATH.jsonl`` — teacher CoTRecords: score = expected level value of the grade
  distribution, grades from the distribution (a record with a grade but no distribution counts
  as one-hot). Pairs without a usable record are left unscored (NaN) and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
from pydantic import ValidationError

from distill.data.reading import DataError, read_text
from distill.data.schema import GRADE_LEVELS, LabelledPair
from distill.eval.evaluate import SystemOutput
from distill.teacher.cot import CoTRecord
from service.bundle import DEFAULT_LEVEL_VALUES

KINDS = ("bm25", "bundle:PATH", "annotations:PATH")


def score_system(spec: str, pairs: list[LabelledPair], catalogue: list[LabelledPair]) -> SystemOutput:
    kind, _, arg = spec.partition(":")
    if kind == "bm25" and not arg:
        from distill.baselines.bm25 import BM25Scorer

        return SystemOutput("bm25", BM25Scorer(catalogue).score(pairs), info={"spec": spec})
    if kind == "bundle" and arg:
        from distill.baselines.bundle import score_bundle

        scores, probs, info = score_bundle(arg, pairs)
        return SystemOutput(f"bundle:{Path(arg).name}", scores, probs, info={"spec": spec, **info})
    if kind == "annotations" and arg:
        return annotations_output(arg, pairs)
    raise ValueError(f"system {spec!r} is not one of {', '.join(KINDS)}")


def read_annotations(path: str | Path) -> tuple[list[CoTRecord], list[str]]:
    """CoTRecords of a JSONL file, and the 'file:line: problem' of each line that is not one."""
    records, problems = [], []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(CoTRecord.model_validate(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            problems.append(f"{path}:{n}: not a CoTRecord ({str(exc).splitlines()[0]})")
    return records, problems


def record_distribution(record: CoTRecord) -> np.ndarray | None:
    """The record's grade distribution over GRADE_LEVELS, or None when it has none."""
    if record.grade_distribution:
        probs = np.array([record.grade_distribution.get(g, 0.0) for g in GRADE_LEVELS], dtype=float)
        if probs.sum() > 0:
            return probs / probs.sum()
    if record.grade in GRADE_LEVELS:
        return np.eye(len(GRADE_LEVELS))[GRADE_LEVELS.index(record.grade)]
    return None


def annotations_output(path: str, pairs: list[LabelledPair]) -> SystemOutput:
    if not Path(path).is_file():
        raise DataError(f"{path}: annotations file not found")
    records, problems = read_annotations(path)
    by_pair_id = {r.pair_id: r for r in records}
    by_query_item = {(r.query, r.item_id): r for r in records}
    scores = np.full(len(pairs), np.nan)
    probs = np.zeros((len(pairs), len(GRADE_LEVELS)))
    missing = no_grade = 0
    values = np.asarray(DEFAULT_LEVEL_VALUES)
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
    info = {"spec": f"annotations:{path}", "records": len(records), "unreadable_lines": len(problems),
            "unreadable_examples": problems[:3], "pairs_without_record": missing,
            "records_without_grade": no_grade}
    return SystemOutput(f"annotations:{Path(path).stem}", scores, probs, info=info)
