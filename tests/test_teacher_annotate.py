"""`relevance teacher annotate`: resume after a kill without duplicates, corrupt lines, or lost pairs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cot import CoTFileError, CoTRecord, read_records
from distill.teacher.annotate import record_key

pytestmark = pytest.mark.llm

N_PAIRS = 6


def _cli(out: Path, summary: Path) -> list[str]:
    relevance = str(Path(sys.executable).with_name("relevance"))
    return [relevance, "teacher", "annotate", "-i", "bundled:dev", "--limit", str(N_PAIRS), "-o", str(out),
            "--mode", "score", "--summary", str(summary)]  # fmt: skip


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run_until_lines_then_signal(cmd: list[str], out: Path, lines: int, sig: int) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while _lines(out) < lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)


def test_resume_after_sigint_and_sigkill(tmp_path: Path) -> None:
    out, summary = tmp_path / "ann.jsonl", tmp_path / "summary.json"
    _run_until_lines_then_signal(_cli(out, summary), out, 1, signal.SIGINT)
    _run_until_lines_then_signal(_cli(out, summary), out, _lines(out) + 1, signal.SIGKILL)
    done = _lines(out)
    assert 2 <= done < N_PAIRS
    # A kill mid-write leaves a torn last line: simulate one on top of the real kills.
    first = out.read_bytes().split(b"\n")[0]
    with out.open("ab") as f:
        f.write(first[: len(first) // 2])

    subprocess.run(_cli(out, summary), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    report = json.loads(summary.read_text())
    assert report["torn_lines_truncated"] == 1
    assert report["already_done"] == done
    assert report["annotated"] == N_PAIRS - done and report["judge_errors"] == 0

    records, torn = read_records(out)
    assert torn == 0 and out.read_bytes().endswith(b"\n")
    keys = [record_key(r) for r in records]
    assert len(records) == N_PAIRS and len(set(keys)) == N_PAIRS
    assert all(r.query_id and r.distribution_source == "logits" for r in records)

    # A rerun pays nothing.
    subprocess.run(_cli(out, summary), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert json.loads(summary.read_text())["already_done"] == N_PAIRS and _lines(out) == N_PAIRS


def _record(pair_id: str) -> CoTRecord:
    return CoTRecord(teacher_id="t", prompt_version="v", pair_id=pair_id, query="q", item_id="i", item_text="x",
                     grade_levels=["Irrelevant", "Partial", "Exact"])  # fmt: skip


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_record("a").model_dump_json() + "\n{not json}\n" + _record("b").model_dump_json() + "\n")
    with pytest.raises(CoTFileError, match=r"bad\.jsonl:2: not a CoT record"):
        read_records(path)


def test_torn_tail_is_an_error_or_counted_and_only_cut_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    whole = _record("a").model_dump_json() + "\n"
    path.write_text(whole + '{"teacher_id": "t", "prom')
    with pytest.raises(CoTFileError, match=r"torn\.jsonl:2: torn last line"):
        read_records(path)
    records, torn = read_records(path, torn="count")
    assert (len(records), torn) == (1, 1) and path.read_text() != whole
    records, torn = read_records(path, torn="cut")
    assert (len(records), torn) == (1, 1) and path.read_text() == whole


def test_a_partial_distribution_is_no_distribution_for_training_and_eval_alike(tmp_path: Path) -> None:
    from core.cot import grade_distribution
    from distill.eval.systems import record_distribution

    levels = ["Irrelevant", "Partial", "Exact"]
    partial = _record("a").model_copy(update={"grade_distribution": {"Exact": 0.9, "Partial": 0.1},
                                              "distribution_source": "logits", "grade": "Exact"})
    assert grade_distribution(partial, levels) is None
    # eval scores such a record by its grade (one-hot), never by the partial distribution
    assert list(record_distribution(partial)) == [0.0, 0.0, 1.0]
    whole = partial.model_copy(update={"grade_distribution": {"Exact": 2.0, "Partial": 1.0, "Irrelevant": 1.0}})
    assert list(grade_distribution(whole, levels)) == [0.25, 0.25, 0.5]
