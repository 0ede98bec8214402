"""Annotate labelled pairs with a teacher → JSONL of CoTRecords (the output file is its own cache).

* Resume, never pay twice: records already in the output with the same (teacher id, prompt
  version, mode, pair id) are skipped.
* Line-atomic appends: each record is written as one whole line, flushed and fsync'ed. A torn
  last line (the process was killed mid-write) is detected on resume, truncated and counted; a
  corrupt line anywhere else is an error naming the file and line.
* Bounded concurrency (asyncio semaphore); progress bar with rate and ETA; a summary at the end.
* A pair whose judgement raised (e.g. the teacher server kept failing) is not written, so a rerun
  retries it; it is counted in the summary with its error.

``pending_pairs`` (the resume rule) and ``RecordSink`` (the writes and counts) are shared with the
Batch route (distill/teacher/batch.py), which gets its judgements from a results file instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.cot import CoTRecord, read_records
from distill.data.schema import LabelledPair
from teacher.prompt import Mode
from teacher.runtime import Teacher

CacheKey = tuple[str, str, str, str]
# Pairs handed at once to a teacher with ``judge_many`` (one that scores many pairs faster together);
# a kill loses at most this many judgements, which a rerun redoes.
JUDGE_MANY_CHUNK = 2048


class AnnotationSummary(BaseModel):
    out: str
    teacher_id: str
    prompt_version: str
    mode: str
    input_pairs: int
    duplicate_pairs: int = 0  # same query and item content more than once in the input: judged once
    already_done: int = 0  # found in the output (resume)
    annotated: int = 0
    parse_ok: int = 0
    parse_failed: int = 0
    judge_errors: int = 0
    judge_error_examples: list[str] = Field(default_factory=list)
    distribution_sources: dict[str, int] = Field(default_factory=dict)
    evidence_spans: int = 0
    unverified_evidence_spans: int = 0
    torn_lines_truncated: int = 0
    stopped_early: str | None = None  # why pairs were left for a rerun (the deadline), else None
    elapsed_s: float = 0.0
    pairs_per_s: float = 0.0


def record_key(record: CoTRecord) -> CacheKey:
    return (record.teacher_id, record.prompt_version, record.mode, record.pair_id)


class _Writer:
    """Appends whole lines and makes each durable before the next (line-atomic across kills).
    ``durable=False`` leaves the flushing to the file object: for a run that writes to a scratch disk
    it will not resume from (the GPU run), where an fsync per record would cost more than the model."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._durable = durable

    def write(self, record: CoTRecord) -> None:
        self._file.write(record.model_dump_json().encode("utf-8") + b"\n")
        if self._durable:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@dataclass
class Pending:
    """What a run still has to do: the pairs without a record, each once, and what was left out."""

    pairs: list[LabelledPair]
    duplicate_pairs: int  # same query and item content more than once in the input: judged once
    already_done: int  # a record with the same key is in the output (resume)
    torn_lines_truncated: int

    def counts(self) -> dict[str, int]:
        """The summary fields both routes report (AnnotationSummary, the Batch summary)."""
        return {
            "duplicate_pairs": self.duplicate_pairs,
            "already_done": self.already_done,
            "torn_lines_truncated": self.torn_lines_truncated,
        }


def pending_pairs(pairs: Sequence[LabelledPair], out: Path | None, key: tuple[str, str, str]) -> Pending:
    """The resume rule: the pairs with no record in ``out`` under ``key`` = (teacher id, prompt version,
    mode), each once. A torn last line of ``out`` is cut (its pair is redone); no ``out``: all pairs."""
    existing, torn = read_records(out, missing_ok=True, torn="cut") if out else ([], 0)
    done = {record_key(r) for r in existing}
    pending: list[LabelledPair] = []
    seen: set[str] = set()
    duplicates = already_done = 0
    for pair in pairs:
        pair_id = pair.pair_id
        if pair_id in seen:
            duplicates += 1
            continue
        seen.add(pair_id)
        if (*key, pair_id) in done:
            already_done += 1
        else:
            pending.append(pair)
    return Pending(pending, duplicates, already_done, torn)


class RecordSink:
    """Appends each pair's record to the output (line-atomic) and counts it into the summary."""

    def __init__(self, out: Path, summary: AnnotationSummary, *, durable: bool = True) -> None:
        self._writer = _Writer(out, durable=durable)
        self._summary = summary
        self._sources: Counter[str] = Counter()

    def keep(self, pair: LabelledPair, record: CoTRecord) -> None:
        record = record.model_copy(update={"query_id": pair.query_id})
        self._writer.write(record)
        summary = self._summary
        summary.annotated += 1
        summary.parse_ok += record.parse_ok
        summary.parse_failed += not record.parse_ok
        self._sources[record.distribution_source] += 1
        spans = [e for d in record.dimensions for e in d.evidence]
        summary.evidence_spans += len(spans)
        summary.unverified_evidence_spans += sum(not e.verified for e in spans)

    def close(self) -> None:
        self._writer.close()
        self._summary.distribution_sources = dict(self._sources)


async def annotate(
    teacher: Teacher,
    pairs: Sequence[LabelledPair],
    out: Path,
    *,
    mode: Mode = "score",
    concurrency: int = 1,
    progress: bool = True,
    deadline: float | None = None,
    durable: bool = True,
) -> AnnotationSummary:
    """Judge every pair not yet in ``out`` and append its record; returns the run's summary.

    ``deadline`` (a ``time.perf_counter()`` value; teachers with ``judge_many`` only): no chunk starts
    after it, and the summary says how many pairs were left. ``durable``: fsync each record (_Writer)."""
    if deadline is not None and not hasattr(teacher, "judge_many"):
        raise ValueError("a deadline needs a teacher that judges pairs in chunks (judge_many)")
    todo = pending_pairs(pairs, out, (teacher.teacher_id, teacher.prompt_version, mode))
    summary = AnnotationSummary(
        out=str(out),
        teacher_id=teacher.teacher_id,
        prompt_version=teacher.prompt_version,
        mode=mode,
        input_pairs=len(pairs),
        **todo.counts(),
    )
    pending = todo.pairs

    from tqdm import tqdm

    bar = tqdm(
        total=len(pending), unit="pair", desc=f"annotate {mode}", disable=not progress, file=sys.stderr
    )
    semaphore = asyncio.Semaphore(max(1, concurrency))
    sink = RecordSink(out, summary, durable=durable)
    started = time.perf_counter()

    def count_error(pair: LabelledPair, exc: Exception) -> None:
        summary.judge_errors += 1
        if len(summary.judge_error_examples) < 5:
            summary.judge_error_examples.append(f"{pair.source or pair.pair_id}: {type(exc).__name__}: {exc}")

    def keep(pair: LabelledPair, record: CoTRecord) -> None:
        sink.keep(pair, record)
        bar.update(1)

    async def one(pair: LabelledPair) -> None:
        async with semaphore:
            try:
                record = await teacher.judge(pair.query, pair.item.as_mapping(), label=pair.label, mode=mode)
            except Exception as exc:  # counted and reported; not written, so a rerun retries it
                count_error(pair, exc)
                bar.update(1)
                return
        keep(pair, record)

    async def in_chunks() -> None:
        # Each query's pairs together, so a teacher that scores a query's items in one request gets them.
        ordered = sorted(pending, key=lambda p: p.query)
        for start in range(0, len(ordered), JUDGE_MANY_CHUNK):
            if deadline is not None and time.perf_counter() >= deadline:
                summary.stopped_early = (
                    f"deadline reached: {len(ordered) - start} of {len(ordered)} pairs left for a rerun"
                )
                break
            chunk = ordered[start : start + JUDGE_MANY_CHUNK]
            try:
                records = await teacher.judge_many(chunk, mode=mode)
            except Exception as exc:  # the whole chunk is counted and retried by a rerun
                for pair in chunk:
                    count_error(pair, exc)
                bar.update(len(chunk))
                continue
            for pair, record in zip(chunk, records, strict=True):
                keep(pair, record)

    try:
        if hasattr(teacher, "judge_many"):
            await in_chunks()
        else:
            await asyncio.gather(*(one(p) for p in pending))
    finally:
        sink.close()
        bar.close()
        summary.elapsed_s = round(time.perf_counter() - started, 3)
        summary.pairs_per_s = round(summary.annotated / summary.elapsed_s, 3) if summary.elapsed_s else 0.0
    return summary


def write_parquet(jsonl: Path, parquet: Path) -> int:
    """Flat Parquet copy of an annotation file (nested fields as JSON strings); returns rows."""
    import pandas as pd

    records, _ = read_records(jsonl)
    rows: list[dict[str, Any]] = []
    for record in records:
        row = record.model_dump()
        for key in ("dimensions", "grade_distribution", "grade_levels", "parse_errors"):
            row[key] = json.dumps(row[key], ensure_ascii=False)
        rows.append(row)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(parquet, index=False)
    return len(rows)
