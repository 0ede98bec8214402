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

from core.cot import read_records
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
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
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

    subprocess.run(
        _cli(out, summary), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
    )
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
    subprocess.run(
        _cli(out, summary), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
    )
    assert json.loads(summary.read_text())["already_done"] == N_PAIRS and _lines(out) == N_PAIRS
