"""Student training: one loop for both kinds, MKD losses switched and weighted by ``TrainConfig``.

The loop runs under 🤗 Accelerate, so the same code trains on CPU, one GPU, or several GPUs when
started with ``accelerate launch -m distill.cli student train ...``. Early stopping on dev NDCG@10 (or AUC); the best
epoch is saved as a run folder (distill/students/run_folder.py), which ``relevance student export`` turns
into a bundle. What differs between kinds is the kind's strategy (distill/students/kinds.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.grades import GRADE_GAINS, GRADE_LEVELS
from distill.data.schema import LabelledPair
from distill.students.config import TrainConfig, make_tokenizer
from distill.students.predict import predict_scores, ranking_metrics, student_manifest
from distill.students.run_folder import init_from_run, save_run, write_metrics


def make_losses(config: TrainConfig) -> dict:
    """The loss modules the terms are computed with, by name (one place: training and diagnostics)."""
    from distill.losses import (
        AttentionKDLoss,
        HardLabelLoss,
        PoolingKDLoss,
        ScoreDistributionKDLoss,
        VerdictAuxLoss,
    )

    return {
        "hard": HardLabelLoss(),
        "score_kd": ScoreDistributionKDLoss(config.temperature),
        "attention": AttentionKDLoss(),
        "pooling": PoolingKDLoss(),
        "verdict": VerdictAuxLoss(),
    }


def loss_terms(model, batch: dict, config: TrainConfig, losses: dict) -> dict:
    """Each switched-on term's (unweighted) value on a batch, by the name of its weight."""
    w = config.weights
    logits, terms = config.student_kind.loss_terms(model, batch, w, losses)
    if w.hard:
        terms["hard"] = losses["hard"](logits, batch["labels"])
    if w.score_kd:
        terms["score_kd"] = losses["score_kd"](logits, batch["teacher_probs"], batch["has_teacher_probs"])
    return terms


def _check_coverage(config: TrainConfig, report) -> None:
    """A KD term with no training row to apply to would silently train label-only: refuse instead."""
    w = config.weights
    missing = [
        (term, what)
        for term, weight, n, what in (
            ("score_kd", w.score_kd, report.with_distribution, "a usable grade distribution"),
            ("cot", w.cot, report.evidence.records_with_evidence, "usable evidence spans"),
            ("verdict", w.verdict, report.with_verdicts, "a verdict on a known dimension"),
        )
        if weight and not n
    ]
    if missing:
        files = ", ".join(f"{path} ({use})" for path, use in config.teacher_files())
        raise ValueError(
            "; ".join(f"the {term} weight is > 0 but no training pair got {what}" for term, what in missing)
            + f" from the teacher files {files}; per-file counts: {report.as_dict()['sources']}"
        )


class TrainResult(BaseModel):
    run_dir: str
    best_epoch: int
    best_dev: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    teacher: dict[str, Any] | None = None
    # Processes of the run (accelerate launch --num_processes N): each step took batch_size pairs in
    # each process, so global_batch_size = processes x batch_size pairs.
    processes: int = 1
    global_batch_size: int | None = None


def train(
    config: TrainConfig,
    train_pairs: Sequence[LabelledPair],
    dev_pairs: Sequence[LabelledPair],
    run_dir: str | Path,
    *,
    teacher: Sequence | None = None,
    tokenizer_file: str | Path | None = None,
    data_report: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a student on ``train_pairs`` (+ merged ``teacher`` sources), early-stopping on dev."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from distill.students.backbone import tokenizer_file as backbone_tokenizer
    from distill.students.data import TeacherReport, build_examples, collate, merge_teacher

    started = time.monotonic()
    run_dir = Path(run_dir)
    kind = config.student_kind
    accelerator = Accelerator()
    if accelerator.device.type == "cpu":
        # --threads is the run's CPU budget: shared by the processes of a multi-process run on one host.
        torch.set_num_threads(max(1, config.threads // accelerator.num_processes))
    set_seed(config.seed)

    tokenizer_file = tokenizer_file or backbone_tokenizer()
    tokenizer = make_tokenizer(config, tokenizer_file)
    teacher_report = TeacherReport()
    merged = merge_teacher(train_pairs, teacher, teacher_report) if teacher else {}
    train_examples = build_examples(
        kind, train_pairs, tokenizer, config.template, merged, teacher_report, config.cot_agree_only
    )
    _check_coverage(config, teacher_report)
    dev_examples = build_examples(kind, dev_pairs, tokenizer, config.template)
    if not any(p.label in GRADE_GAINS for p in dev_pairs):
        raise ValueError("the dev set has no labelled pair: early stopping on NDCG@10 needs labels")

    model = kind.build(config.layers)
    if config.init_from:
        init_from_run(model, config.init_from, config.kind)
    head_ids = {id(p) for p in model.head_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": config.lr},
        {"params": model.head_parameters(), "lr": config.head_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        train_examples,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=lambda exs: collate(exs, kind, tokenizer.pad_id, len(GRADE_LEVELS)),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = config.epochs * len(loader)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total_steps), max(total_steps, 1)
    )
    losses = make_losses(config)
    weights = config.weights.model_dump()

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    step = 0
    bad_epochs = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        batches = 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not accelerator.is_local_main_process,
        )
        for batch in bar:
            terms = loss_terms(model, batch, config, losses)
            loss = sum(weights[name] * value for name, value in terms.items())
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            batches += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if config.max_steps is not None and step >= config.max_steps:
                break
        student = accelerator.unwrap_model(model)
        scores = predict_scores(student, student_manifest(student, config), dev_examples, tokenizer.pad_id)
        dev = ranking_metrics(dev_pairs, scores)
        entry = {
            "epoch": epoch,
            "steps": step,
            "train_loss": {k: v / max(batches, 1) for k, v in sums.items()},
            "dev": dev,
        }
        history.append(entry)
        accelerator.print(
            f"epoch {epoch}: train {entry['train_loss']} dev ndcg@10 {dev['ndcg@10']:.4f} "
            f"auc {dev['auc']:.4f}"
        )
        metric = config.select_metric
        if best is None or dev[metric] > best["dev"][metric] + 1e-9:
            best = entry
            bad_epochs = 0
            if accelerator.is_main_process:
                save_run(run_dir, student, config, tokenizer_file)
            # Every process took the same decision (same weights, same dev scores); none goes on while
            # the checkpoint is being written.
            accelerator.wait_for_everyone()
        else:
            bad_epochs += 1
        if bad_epochs >= config.patience or (config.max_steps is not None and step >= config.max_steps):
            break

    assert best is not None
    result = TrainResult(
        run_dir=str(run_dir),
        best_epoch=best["epoch"],
        best_dev=best["dev"],
        history=history,
        seconds=round(time.monotonic() - started, 1),
        teacher=teacher_report.as_dict() if teacher else None,
        processes=accelerator.num_processes,
        global_batch_size=accelerator.num_processes * config.batch_size,
    )
    if accelerator.is_main_process:
        metrics = result.model_dump()
        metrics["data"] = data_report or {}
        write_metrics(run_dir, metrics)
    accelerator.wait_for_everyone()  # the run folder is complete for every process that returns
    return result
