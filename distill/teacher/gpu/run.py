"""`python -m distill.teacher.gpu.run --payload DIR --out DIR [--dry-run]`: ELLM-rele on one GPU.

Stages, each under its own time budget (the device lends 15 minutes in all, start-up included), each
writing its results into OUT as soon as it ends, so that a run cut off at its limit still brings back
what was finished (report.json is rewritten after every stage):

1. convert  the payload's GGUF → a transformers checkpoint (``convert_gguf_to_hf``)
2. sft      LoRA SFT on every SFT record in the teacher's prompt format, score and CoT targets
            (``run_lora_sft``), queries held out for early stopping → OUT/adapter.tar
3. label    score-mode records of the dev pairs, then of the transfer set (train pairs in-fold: the
            teacher was fine-tuned on them; then the unlabelled pairs), batched (``BatchedTeacher``)
4. cot      CoT records of a sample of dev pairs, then of train pairs (parse and evidence rates)
5. report   wall time per stage, tokens/s, the share of the bf16 peak, what came back

Rank 16 on all seven projections (4.9M parameters, 9.8 MB in bf16): the adapter comes back in one
16 MiB file, where the merged model (540 MB) could not; a full fine-tune would have to stay there.
``--dry-run`` runs the same stages on the CPU, on a payload built with ``prepare.py --slice``, with a
few optimiser steps and tiny batches: what it proves is the plumbing, not the teacher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.datasets import unit_hash
from distill.teacher.gpu.payload import (
    ADAPTER_TAR,
    DEV_PAIRS,
    GGUF,
    MAX_RESULT_FILES,
    RECORD_SETS,
    REPORT,
    SFT_RECORDS,
    TRANSFER_PAIRS,
    TeacherPayload,
    write_gzip_chunks,
)

H200_BF16_PEAK_TFLOPS = 790.0  # measured dense bf16 matmul peak (the device's H200.md)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Plan:
    """Every setting of a run; report.json records it. Fixed before any dev number was seen."""

    device: str
    dtype: str  # of the labelling model
    threads: int
    rank: int
    alpha: int
    lr: float
    batch_size: int
    epochs: float
    max_steps: int | None
    max_length: int
    eval_fraction: float
    max_eval_examples: int
    eval_every: int
    sft_minutes: float
    label_minutes: float  # dev and transfer together
    batch_tokens: int
    cot_train: int
    cot_dev: int
    cot_max_tokens: int
    cot_minutes: float


# One epoch over every SFT record (score and CoT examples: about 92k on Home Depot) at batch 64 is
# about 1,430 steps. The stage budgets add up to 7 minutes, so that with loading, saving and the
# wheels the run ends inside one 10-minute call, and with the machine's start and the first part's
# call inside the device's 15 minutes.
GPU_PLAN = Plan(
    device="cuda", dtype="bfloat16", threads=16, rank=16, alpha=32, lr=4e-4, batch_size=64, epochs=1.0,
    max_steps=None, max_length=1024, eval_fraction=0.02, max_eval_examples=512, eval_every=200,
    sft_minutes=3.5, label_minutes=2.0, batch_tokens=131072, cot_train=2000, cot_dev=200,
    cot_max_tokens=320, cot_minutes=1.5,
)  # fmt: skip
DRY_RUN_PLAN = replace(
    GPU_PLAN, device="cpu", dtype="float32", threads=2, batch_size=2, max_steps=2, eval_fraction=0.2,
    max_eval_examples=2, eval_every=1, sft_minutes=5.0, label_minutes=5.0, batch_tokens=4096, cot_train=4,
    cot_dev=2, cot_max_tokens=48, cot_minutes=5.0,
)  # fmt: skip


class Run:
    """One run's report, rewritten into OUT after every stage."""

    def __init__(self, out: Path, plan: Plan, payload: TeacherPayload, dry_run: bool) -> None:
        self.out, self.plan = out, plan
        self.report: dict[str, Any] = {
            "dry_run": dry_run,
            "plan": asdict(plan),
            "payload": payload.info(),
            "machine": machine_facts(plan.device),
            "stages": {},
        }

    def stage(self, name: str, result: dict[str, Any], started: float) -> dict[str, Any]:
        result = {"wall_s": round(time.perf_counter() - started, 2), **result}
        self.report["stages"][name] = result
        self.save()
        print(f"teacher-gpu: {name} done in {result['wall_s']} s", file=sys.stderr, flush=True)
        return result

    def save(self) -> None:
        files = sorted(p for p in self.out.iterdir() if p.is_file() and p.name != REPORT)
        self.report["results"] = {p.name: p.stat().st_size for p in files}
        if len(files) + 1 > MAX_RESULT_FILES:
            self.report["results_warning"] = f"{len(files) + 1} files: only {MAX_RESULT_FILES} come back"
        (self.out / REPORT).write_text(json.dumps(self.report, indent=1) + "\n", encoding="utf-8")


def machine_facts(device: str) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["cuda"] = torch.version.cuda
    else:
        facts["cpu"] = platform.processor() or platform.machine()
    return facts


def share_of_peak(flops: float, seconds: float, device: str) -> float | None:
    """Achieved FLOP/s over the H200's bf16 peak; None off the GPU (a CPU share would mean nothing)."""
    if not device.startswith("cuda") or seconds <= 0:
        return None
    return round(flops / seconds / (H200_BF16_PEAK_TFLOPS * 1e12), 4)


def gunzip(path: Path, work: Path) -> Path:
    """``path`` decompressed into ``work`` (the project's readers take plain JSONL files)."""
    import gzip
    import shutil

    plain = work / path.name.removesuffix(".gz")
    with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return plain


def read_pairs(path: Path, work: Path) -> list:
    """Generic-JSONL pairs (payload.py) through the project's own loader, skipping nothing."""
    from distill.data.datasets import load_dataset

    dataset = load_dataset(str(gunzip(path, work)))
    if dataset.skipped:
        raise ValueError(f"{path}: the loader skipped pairs ({dataset.skipped}); the payload is damaged")
    return dataset.pairs


def stage_convert(payload: TeacherPayload, work: Path) -> tuple[Path, dict[str, Any]]:
    from distill.teacher.lora import convert_gguf_to_hf

    cached = (work / "base" / "config.json").is_file()
    base = convert_gguf_to_hf(work / "base", payload.path(GGUF), echo=lambda m: print(m, file=sys.stderr))
    return base, {"base": str(base), "cached": cached}


def stage_sft(payload: TeacherPayload, base: Path, work: Path, out: Path, plan: Plan) -> tuple[Path, dict]:
    from core.cot import read_records
    from distill.teacher.lora import ADAPTER_DIR, LORA_REPORT, LoRAConfig, Targets, run_lora_sft

    records, _ = read_records(gunzip(payload.path(SFT_RECORDS), work))
    config = LoRAConfig(
        targets=Targets.both, rank=plan.rank, alpha=plan.alpha, dropout=0.05, target_modules=PROJECTIONS,
        lr=plan.lr, batch_size=plan.batch_size, epochs=plan.epochs, max_steps=plan.max_steps,
        max_minutes=plan.sft_minutes, max_length=plan.max_length, eval_fraction=plan.eval_fraction,
        max_eval_examples=plan.max_eval_examples, eval_every=plan.eval_every, device=plan.device,
        threads=plan.threads, seed=0,
    )  # fmt: skip
    teacher = work / "teacher"
    report = run_lora_sft(records, teacher, config, base=base, source=SFT_RECORDS)
    with tarfile.open(out / ADAPTER_TAR, "w") as tar:
        tar.add(teacher / ADAPTER_DIR, arcname=ADAPTER_DIR)
        tar.add(teacher / LORA_REPORT, arcname=LORA_REPORT)
    # LoRA: a forward (2N) and the activations' gradients (2N) per token; the frozen weights get none.
    # N leaves out the embedding table: a lookup, not a matmul (the tied output layer is applied to
    # the answer positions only).
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    matmul_parameters = report["base_parameters"] - config["vocab_size"] * config["hidden_size"]
    flops = 4 * matmul_parameters * report["tokens_trained"]
    loop_s = report["train_loop_s"]
    return teacher, {
        "records": len(records),
        "steps": report["steps"],
        "stop_reason": report["stop_reason"],
        "best_step": report["best_step"],
        "held_out": report["eval_history"][-1:] if report["eval_history"] else [],
        "example_counts": report["example_counts"],
        "trainable_parameters": report["trainable_parameters"],
        "tokens_trained": report["tokens_trained"],
        "train_loop_s": loop_s,
        "tokens_per_s": round(report["tokens_trained"] / loop_s, 1) if loop_s else None,
        "share_of_bf16_peak": share_of_peak(flops, loop_s, plan.device),
    }


def label_set(
    teacher: Any, pairs: list, name: str, mode: str, work: Path, out: Path, deadline: float, plan: Plan
) -> dict[str, Any]:
    """Records of ``pairs`` (score or CoT mode) through ``annotate``, then into gz chunks in OUT."""
    from distill.teacher.annotate import annotate

    jsonl = work / f"records-{name}.jsonl"
    seen = dict(teacher.backend.batch_tokens_seen)
    started = time.perf_counter()
    summary = asyncio.run(annotate(teacher, pairs, jsonl, mode=mode, deadline=deadline, durable=False))  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    tokens = {k: v - seen[k] for k, v in teacher.backend.batch_tokens_seen.items()}
    model = teacher.backend.model
    # 2N per token through the decoder, N without the embedding table (a lookup; the verdict applies
    # the output layer to one position per row). The verdicts' padded positions are computed too, so
    # they count; a generation's left padding does not (an undercount).
    parameters = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    flops = 2 * parameters * (tokens["verdict_padded"] + tokens["generation_prompt"] + tokens["generated"])
    files = []
    if jsonl.is_file():
        with jsonl.open("rb") as lines:
            files = write_gzip_chunks(lines, out, name)
    spans, unverified = summary.evidence_spans, summary.unverified_evidence_spans
    return {
        "pairs": len(pairs),
        "records": summary.annotated,
        "stopped_early": summary.stopped_early,
        "parse_rate": round(summary.parse_ok / summary.annotated, 4) if summary.annotated else None,
        "evidence_spans": spans,
        "evidence_verified_rate": round(1 - unverified / spans, 4) if spans else None,
        "pairs_per_s": round(summary.annotated / seconds, 1) if seconds else None,
        "tokens": tokens,
        "real_tokens_per_s": round((tokens["verdict"] + tokens["generated"]) / seconds, 1)
        if seconds
        else None,
        "share_of_bf16_peak": share_of_peak(flops, seconds, plan.device),
        "files": [p.name for p in files],
    }


def cot_sample(pairs: list, count: int, salt: str, *, labelled: bool = False) -> list:
    """``count`` pairs (labelled ones only if ``labelled``), drawn by a stable hash of the pair id."""
    pool = [p for p in pairs if p.label] if labelled else pairs
    return sorted(pool, key=lambda p: unit_hash(f"{salt}:{p.pair_id}"))[:count]


def run(payload: TeacherPayload, out: Path, work: Path, plan: Plan, *, dry_run: bool) -> dict[str, Any]:
    from teacher.specs import load_teacher

    random.seed(0)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    # Records of an earlier run in the same scratch folder came from an earlier fine-tune under the same
    # teacher id: annotate would take them as done. The converted base is kept: every payload carries
    # the one embedded GGUF (payload.json records its sha256).
    for stale in work.glob("records-*.jsonl"):
        stale.unlink()
    state = Run(out, plan, payload, dry_run)
    started = time.perf_counter()
    base, result = stage_convert(payload, work)
    state.stage("convert", result, started)

    started = time.perf_counter()
    checkpoint, result = stage_sft(payload, base, work, out, plan)
    state.stage("sft", result, started)

    started = time.perf_counter()
    spec = f"hf:{checkpoint}?device={plan.device}&dtype={plan.dtype}&threads={plan.threads}"
    teacher = load_teacher(f"{spec}&batch_tokens={plan.batch_tokens}&max_tokens={plan.cot_max_tokens}")
    dev = read_pairs(payload.path(DEV_PAIRS), work)
    transfer = read_pairs(payload.path(TRANSFER_PAIRS), work)
    deadline = time.perf_counter() + 60 * plan.label_minutes
    labelled = {name: label_set(teacher, pairs, name, "score", work, out, deadline, plan)
                for name, pairs in zip(RECORD_SETS[:2], (dev, transfer), strict=True)}  # fmt: skip
    state.stage("label", labelled, started)

    # The dev sample first, in its own set: it is what /explain's parse and verification rates are
    # measured on, so the deadline must not take it; then the train sample for the students' CoT loss.
    started = time.perf_counter()
    deadline = time.perf_counter() + 60 * plan.cot_minutes
    samples = (
        cot_sample(dev, plan.cot_dev, "cot-dev"),
        cot_sample(transfer, plan.cot_train, "cot-train", labelled=True),
    )
    cot = {name: label_set(teacher, pairs, name, "cot", work, out, deadline, plan)
           for name, pairs in zip(RECORD_SETS[2:], samples, strict=True)}  # fmt: skip
    state.stage("cot", cot, started)
    state.report["imported_distributions"] = imported_distributions()
    state.save()
    return state.report


def imported_distributions() -> list[str]:
    """The installed distributions this process imported: what the GPU machine must have (a test checks
    the dry run's list against prepare.py's CARRIED_DISTRIBUTIONS and GPU_IMAGE_HAS)."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    return sorted(
        {d.lower().replace("_", "-") for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.teacher.gpu.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--payload", type=Path, required=True, help="the extracted payload (payload.py)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (what comes back)")
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: OUT/../teacher-gpu-work)"
    )
    parser.add_argument("--dry-run", action="store_true", help="the CPU plan: a few steps, tiny batches")
    args = parser.parse_args(argv)
    payload = TeacherPayload(args.payload)
    try:
        payload.check()
    except FileNotFoundError as exc:
        print(f"teacher-gpu: error: {exc}", file=sys.stderr)
        return 2
    plan = DRY_RUN_PLAN if args.dry_run else GPU_PLAN
    if plan.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("teacher-gpu: error: no CUDA device here; on a CPU use --dry-run", file=sys.stderr)
            return 2
    report = run(
        payload, args.out, args.work or args.out.parent / "teacher-gpu-work", plan, dry_run=args.dry_run
    )
    print(json.dumps(report["stages"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
