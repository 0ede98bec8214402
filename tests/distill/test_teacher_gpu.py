"""The teacher GPU recipe (distill/teacher/gpu/), dry-run end to end on this CPU.

The slow test is `make teacher-gpu-dry-run` at a smaller slice: prepare (bundled ESCI, 24 pairs per
split, the real GGUF and the real wheels for python 3.12), the device script with DRY_RUN=1 (receive,
reassemble, check, install the wheels for 3.12, run every stage with --dry-run on the real SmolLM2: 2 optimiser steps),
then collect (records, the adapter merged into an hf: teacher, its GGUF for llama.cpp). What it shows
is the plumbing; two optimiser steps teach SmolLM2 nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from distill.teacher.gpu.payload import TeacherPayload, record_chunks, write_gzip_chunks
from distill.teacher.gpu.run import DRY_RUN_PLAN

ROOT = Path(__file__).resolve().parents[2]


def test_record_chunks_roll_over_under_the_limit(tmp_path: Path) -> None:
    lines = [json.dumps({"n": n, "noise": os.urandom(40).hex()}).encode() + b"\n" for n in range(3000)]
    files = write_gzip_chunks(iter(lines), tmp_path, "dev", limit=60_000)
    assert len(files) > 1 and files == record_chunks(tmp_path, "dev")
    assert all(f.stat().st_size <= 60_000 + 40_000 for f in files)  # checked every 256 lines
    back = b"".join(gzip.open(f).read() for f in files)
    assert back == b"".join(lines)  # nothing lost, in order


def test_a_payload_names_its_first_missing_piece(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"payload\.json: missing from the payload .*make teacher-gpu-prepare"
    ):
        TeacherPayload(tmp_path).check()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    from distill.teacher.gpu.collect import collect
    from distill.teacher.gpu.prepare import prepare

    root = tmp_path_factory.mktemp("teacher-gpu")
    carry_dir = root / "carry"
    prepare(
        carry_dir, train="bundled:train", dev="bundled:dev", per_query=2, random_per_query=1,
        slice_pairs=24, log=lambda _: None,
    )  # fmt: skip
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": str(ROOT / ".venv/bin/python"), "CARRY_DIR": str(carry_dir),
           "RELEVANCE_GPU_DIR": str(root / "device"), "OUT": str(root / "results")}  # fmt: skip
    done = subprocess.run(
        ["bash", "distill/teacher/gpu/on_device.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((root / "results" / "report.json").read_text())
    collected = collect(root / "results", root / "collected", log=lambda _: None)
    return root, report, collected


@pytest.mark.slow
def test_the_dry_run_runs_every_stage_and_brings_back_records(dry_run) -> None:
    root, report, collected = dry_run
    assert report["dry_run"] is True and list(report["stages"]) == ["convert", "sft", "label", "cot"]
    sft = report["stages"]["sft"]
    assert (
        sft["steps"] == DRY_RUN_PLAN.max_steps
        and sft["tokens_trained"] > 0
        and sft["trainable_parameters"] > 4_000_000
    )
    assert sft["share_of_bf16_peak"] is None  # a CPU share of the GPU's peak would mean nothing
    label = report["stages"]["label"]
    info = report["payload"]
    assert label["dev"]["records"] == info["dev_pairs"] == 24
    # The transfer set: the 24 train pairs and unjudged items of their queries, every one labelled.
    assert (
        label["transfer"]["records"] == info["transfer_pairs"] > 24
        and label["transfer"]["stopped_early"] is None
    )
    assert len(report["results"]) + 1 <= 8 and "results_warning" not in report
    records = collected["records"]
    assert records["dev"]["records"] == 24 and records["transfer"]["records"] == info["transfer_pairs"]
    from core.cot import read_records

    dev, _ = read_records(Path(records["dev"]["path"]))
    assert all(
        r.distribution_source == "logits" and abs(sum(r.grade_distribution.values()) - 1) < 1e-6 for r in dev
    )
    assert all(r.query_id and r.label for r in dev)  # kept for the evaluation
    cot = report["stages"]["cot"]
    for name, count in (("cot-dev", DRY_RUN_PLAN.cot_dev), ("cot-train", DRY_RUN_PLAN.cot_train)):
        assert (
            cot[name]["records"] == records[name]["records"] == count and cot[name]["parse_rate"] is not None
        )
    cot_dev, _ = read_records(Path(records["cot-dev"]["path"]))
    assert {r.pair_id for r in cot_dev} <= {r.pair_id for r in dev} and all(r.mode == "cot" for r in cot_dev)


def _with_their_dependencies(names: set[str]) -> set[str]:
    """``names`` and what they require, as installed here (extras left out): a package the GPU image
    has brings its own dependencies there."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
    return seen


@pytest.mark.slow
def test_the_run_imports_only_what_is_carried_or_on_the_gpu_image(dry_run) -> None:
    from distill.teacher.gpu.prepare import CARRIED_DISTRIBUTIONS, GPU_IMAGE_HAS, OPTIONAL_IMPORTS

    _, report, _ = dry_run
    imported = set(report["imported_distributions"])
    assert {"pydantic", "torch", "transformers", "peft", "gguf"} <= imported  # the list is real
    provided = (
        set(CARRIED_DISTRIBUTIONS) | _with_their_dependencies(set(GPU_IMAGE_HAS)) | set(OPTIONAL_IMPORTS)
    )
    provided.add("relevance-distill")  # the source tree travels
    assert imported - provided == set()


@pytest.mark.slow
async def test_the_collected_teacher_loads_as_hf_and_as_gguf(dry_run) -> None:
    from teacher import load_teacher

    root, _, collected = dry_run
    assert collected["teacher"] == f"hf:{root / 'collected' / 'teacher'}"
    assert collected["gguf"]["written"] is True
    for spec in (f"{collected['teacher']}?threads=1", f"llamacpp:{collected['gguf']['path']}"):
        record = await load_teacher(spec).judge(
            "wireless mouse", {"id": "m1", "title": "Logitech M185"}, mode="score"
        )
        assert record.distribution_source in ("logits", "logprobs") and record.parse_ok


@pytest.mark.slow
def test_collect_refuses_an_adapter_of_another_base(dry_run, tmp_path: Path) -> None:
    import shutil

    from distill.teacher.gpu.collect import collect

    root, report, _ = dry_run
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    report["payload"]["gguf_sha256"] = "0" * 64
    (results / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="merging it into another base would be wrong"):
        collect(results, tmp_path / "collected", log=lambda _: None)
