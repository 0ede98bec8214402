"""Collaborative CoT annotation (the paper's recipe for ELLM-rele training data).

Two annotator teachers (any two specs: two models, or one model at two temperatures/seeds) each
judge every pair ``samples`` times (self-consistency: different seeds). Per annotator the grade is
the majority over its samples. A pair's CoT is KEPT when both annotators' majority grades agree
and, where the pair has a human label, agree with it; the kept record is annotator A's first
sample with that grade whose reasoning parsed (or, failing that, its first sample with that grade).

Every sample is written by ``annotate`` (one resumable JSONL per annotator), so an interrupted run
resumes without paying twice. Files in ``out_dir``: ``annotator_a.jsonl``, ``annotator_b.jsonl``,
``kept.jsonl`` and ``summary.json`` (agreement rates and counts).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.cot import CoTRecord, read_records
from distill.data.schema import LabelledPair
from distill.teacher.annotate import annotate
from teacher.prompt import Mode


def majority(grades: Sequence[str | None]) -> tuple[str | None, float]:
    """Most common grade (ties: the first reached) and the share of samples that gave it."""
    valid = [g for g in grades if g is not None]
    if not valid:
        return None, 0.0
    counts = Counter(valid)
    best = max(counts, key=lambda g: (counts[g], -valid.index(g)))
    return best, counts[best] / len(grades)


async def collaborate(
    pairs: Sequence[LabelledPair],
    out_dir: Path,
    *,
    annotators: tuple[str, str],
    samples: int = 3,
    mode: Mode = "cot",
    concurrency: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    from teacher import load_teacher, split_spec_options

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"a": out_dir / "annotator_a.jsonl", "b": out_dir / "annotator_b.jsonl"}
    teacher_ids: dict[str, list[str]] = {"a": [], "b": []}
    for name, spec in zip(("a", "b"), annotators, strict=True):
        for s in range(samples):
            # Self-consistency: one seed per sample (at temperature 0 the samples coincide and are judged once).
            teacher = load_teacher(spec, seed=split_spec_options(spec)[1].get("seed", 0) + s)
            if teacher.teacher_id not in teacher_ids[name]:
                teacher_ids[name].append(teacher.teacher_id)
            try:
                await annotate(
                    teacher, pairs, files[name], mode=mode, concurrency=concurrency, progress=progress
                )
            finally:
                await teacher.aclose()

    by_pair: dict[str, dict[str, list[CoTRecord]]] = defaultdict(lambda: {"a": [], "b": []})
    for name, path in files.items():
        wanted = set(teacher_ids[name])
        for record in read_records(path)[0]:
            if record.teacher_id in wanted and record.mode == mode:
                by_pair[record.pair_id][name].append(record)

    kept: list[CoTRecord] = []
    stats: Counter[str] = Counter()
    consistency: dict[str, list[float]] = {"a": [], "b": []}
    for pair in {p.pair_id: p for p in pairs}.values():
        records = by_pair.get(pair.pair_id)
        if not records or not records["a"] or not records["b"]:
            stats["missing"] += 1
            continue
        grades = {}
        for name in ("a", "b"):
            grades[name], share = majority([r.grade for r in records[name]])
            consistency[name].append(share)
        stats["pairs"] += 1
        agree = grades["a"] is not None and grades["a"] == grades["b"]
        stats["annotators_agree"] += agree
        if pair.label is not None:
            stats["labelled"] += 1
            stats["a_agrees_human"] += grades["a"] == pair.label
            stats["b_agrees_human"] += grades["b"] == pair.label
        if agree and (pair.label is None or grades["a"] == pair.label):
            same = [r for r in records["a"] if r.grade == grades["a"]]
            chosen = next((r for r in same if r.parse_ok), same[0])
            kept.append(chosen)
            stats["kept_parse_ok"] += chosen.parse_ok

    with (out_dir / "kept.jsonl").open("w", encoding="utf-8") as f:
        for record in kept:
            f.write(record.model_dump_json() + "\n")

    def rate(num: int, den: int) -> float | None:
        return round(num / den, 4) if den else None

    summary = {
        "annotators": {"a": annotators[0], "b": annotators[1]},
        "teacher_ids": teacher_ids,
        "samples_per_annotator": samples,
        "mode": mode,
        "pairs": stats["pairs"],
        "pairs_missing_records": stats["missing"],
        "labelled_pairs": stats["labelled"],
        "annotator_agreement": rate(stats["annotators_agree"], stats["pairs"]),
        "annotator_a_human_agreement": rate(stats["a_agrees_human"], stats["labelled"]),
        "annotator_b_human_agreement": rate(stats["b_agrees_human"], stats["labelled"]),
        "self_consistency_a": rate(sum(consistency["a"]), len(consistency["a"])),
        "self_consistency_b": rate(sum(consistency["b"]), len(consistency["b"])),
        "kept": len(kept),
        "kept_fraction": rate(len(kept), stats["pairs"]),
        "kept_with_parsed_reasoning": stats["kept_parse_ok"],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
