"""annotate with a teacher that judges many pairs at once (``judge_many``, e.g. the ensemble teacher):
chunks grouped by query, every pair written once, a failed chunk counted and retried by a rerun."""

from __future__ import annotations

import asyncio

from core.cot import CoTRecord, read_records
from core.grades import GRADE_LEVELS
from distill.data.bundled import load_bundled
from distill.teacher import annotate as annotate_module
from distill.teacher.annotate import annotate


class ManyTeacher:
    teacher_id = "many"
    prompt_version = "v1"

    def __init__(self, fail_first: bool = False) -> None:
        self.chunks: list[list[str]] = []
        self.fail_first = fail_first

    async def judge(self, *args, **kwargs):  # never used when judge_many exists
        raise AssertionError("annotate called judge, not judge_many")

    async def judge_many(self, pairs, *, mode="score"):
        self.chunks.append([p.query for p in pairs])
        if self.fail_first and len(self.chunks) == 1:
            raise RuntimeError("backend down")
        return [
            CoTRecord(
                teacher_id=self.teacher_id,
                prompt_version=self.prompt_version,
                mode="score",
                pair_id=p.pair_id,
                query=p.query,
                item_id=p.item.id,
                item_text=p.item.title,
                grade="Exact",
                grade_levels=list(GRADE_LEVELS),
                grade_distribution={"Irrelevant": 0.1, "Partial": 0.2, "Exact": 0.7},
                distribution_source="logits",
            )
            for p in pairs
        ]

    async def aclose(self) -> None:
        pass


def test_chunks_keep_each_querys_pairs_together_and_a_failed_chunk_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(annotate_module, "JUDGE_MANY_CHUNK", 50)
    pairs = load_bundled("dev")
    out = tmp_path / "records.jsonl"
    teacher = ManyTeacher(fail_first=True)
    first = asyncio.run(annotate(teacher, pairs, out, progress=False))
    assert first.judge_errors == 50 and "backend down" in first.judge_error_examples[0]
    assert all(len(chunk) <= 50 for chunk in teacher.chunks)
    flat = [q for chunk in teacher.chunks for q in chunk]
    assert flat == sorted(flat)  # grouped by query: a query's pairs arrive together
    assert first.annotated == len({p.pair_id for p in pairs}) - 50

    again = asyncio.run(annotate(ManyTeacher(), pairs, out, progress=False))
    assert again.annotated == 50 and again.already_done == first.annotated and again.judge_errors == 0
    records, _ = read_records(out)
    assert sorted(r.pair_id for r in records) == sorted({p.pair_id for p in pairs})
