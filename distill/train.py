"""Student training: one loop for both kinds, MKD losses switched and weighted by ``TrainConfig``.

The loop runs under 🤗 Accelerate, so the same code trains on CPU, one GPU, or several GPUs when
started with ``accelerate launch -m distill.cli train ...``. Early stopping on dev NDCG@10 (or AUC); the best
epoch's checkpoint is written to ``runs/<name>/`` (``checkpoint.pt``, ``config.json``,
``tokenizer.json``, ``metrics.json``), which ``relevance export`` turns into a bundle.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.data.schema import GRADE_GAINS, GRADE_LEVELS, LabelledPair
from service.bundle import DEFAULT_LEVEL_VALUES
from service.text_template import DEFAULT_TEMPLATE, TextTemplate

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


class LossWeights(BaseModel):
    """Weight of each MKD term; 0 switches a term off."""

    model_config = ConfigDict(extra="forbid")
    hard: float = Field(default=1.0, ge=0)  # cross-entropy on the human label
    score_kd: float = Field(default=0.0, ge=0)  # KL to the teacher's grade distribution
    cot: float = Field(default=0.0, ge=0)  # evidence KL: attention (cross) or pooling weights (bi)
    verdict: float = Field(default=0.0, ge=0)  # per-dimension verdict CE (bi only)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["cross", "bi"] = "cross"
    layers: int = Field(default=4, ge=1)
    max_tokens: int = Field(default=64, ge=8)  # pair (cross) / item (bi) limit
    max_query_tokens: int = Field(default=32, ge=4)  # bi query tower limit
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop after this many optimiser steps in total
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=5e-5, gt=0)  # backbone
    head_lr: float = Field(default=1e-3, gt=0)  # freshly initialised heads and pooling scorer
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    temperature: float = Field(default=2.0, gt=0)
    patience: int = Field(default=2, ge=1)  # epochs without a dev gain (select_metric) before stopping
    # Early-stopping metric on dev. NDCG@10 by default; "auc" (Exact vs rest) where few dev queries
    # have two grades (NDCG is then defined on a handful of queries only).
    select_metric: Literal["ndcg@10", "auc"] = "ndcg@10"
    seed: int = 13
    threads: int = Field(default=2, ge=1)  # CPU threads (torch.set_num_threads)
    cot_agree_only: bool = True  # CoT evidence only where the teacher's grade equals the human label
    weights: LossWeights = Field(default_factory=LossWeights)
    template: TextTemplate = Field(default_factory=lambda: DEFAULT_TEMPLATE)
    train_data: str = "bundled:train"
    dev_data: str = "bundled:dev"
    teacher: list[str] = Field(default_factory=list)  # files read for every signal they carry
    teacher_scores: list[str] = Field(default_factory=list)  # files read for the grade distribution only
    teacher_cot: list[str] = Field(default_factory=list)  # files read for verdicts and evidence only

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.kind == "cross" and self.weights.verdict > 0:
            raise ValueError("weights.verdict (verdict auxiliary heads) applies to bi students only")
        if not any(self.weights.model_dump().values()):
            raise ValueError("all loss weights are 0: nothing to train")
        if self.weights.score_kd and not (self.teacher or self.teacher_scores):
            raise ValueError("the score_kd weight needs teacher records (--teacher or --teacher-scores FILE)")
        if (self.weights.cot or self.weights.verdict) and not (self.teacher or self.teacher_cot):
            raise ValueError("cot / verdict weights need teacher records (--teacher or --teacher-cot FILE)")
        return self

    def teacher_files(self) -> list[tuple[str, str]]:
        """(path, use) of every teacher file, in precedence order: --teacher, --teacher-scores, --teacher-cot."""
        return ([(p, "all") for p in self.teacher] + [(p, "scores") for p in self.teacher_scores]
                + [(p, "cot") for p in self.teacher_cot])


def build_student(kind: str, layers: int | None, *, bert_config: dict[str, Any] | None = None):
    from distill.students.bi import BiStudent
    from distill.students.cross import CrossStudent

    cls = CrossStudent if kind == "cross" else BiStudent
    return cls(len(GRADE_LEVELS), layers, bert_config=bert_config)


def make_tokenizer(config: TrainConfig, tokenizer_file: str | Path):
    from service.tokenization import BundleTokenizer

    return BundleTokenizer(tokenizer_file, max_pair_tokens=config.max_tokens,
                           max_query_tokens=config.max_query_tokens, max_item_tokens=config.max_tokens)


def save_run(run_dir: Path, model, config: TrainConfig, tokenizer_file: str | Path) -> None:
    import torch

    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": config.kind, "bert_config": model.bert.config.to_dict(),
                "state_dict": model.state_dict()}, run_dir / CHECKPOINT_FILE)
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if Path(tokenizer_file).resolve() != (run_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_file, run_dir / "tokenizer.json")


def load_run(run_dir: str | Path):
    """(model in eval mode, TrainConfig) from a training run folder; ValueError naming what is missing."""
    import torch

    run_dir = Path(run_dir)
    for name in (CHECKPOINT_FILE, CONFIG_FILE, "tokenizer.json"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not a training run: {name} is missing")
    config = TrainConfig.model_validate_json((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    state = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model = build_student(state["kind"], None, bert_config=state["bert_config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, config


def expected_scores(logits) -> np.ndarray:
    """Σ softmax(logits)_i · level_value_i — the service's softmax_expected score."""
    import torch

    values = torch.tensor(DEFAULT_LEVEL_VALUES, dtype=logits.dtype, device=logits.device)
    return (torch.softmax(logits, dim=-1) * values).sum(dim=-1).float().cpu().numpy()


def predict_scores(model, kind: str, examples: Sequence, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """PyTorch scores (expected level value) of examples, in order."""
    import torch

    from distill.students.data import collate

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start:start + batch_size]), kind, pad_id, len(GRADE_LEVELS))
            if kind == "cross":
                logits = model(**_to(batch["pair"], device)).logits
            else:
                logits = model(_to(batch["query"], device), _to(batch["item"], device)).logits
            out.append(expected_scores(logits))
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def ranking_metrics(pairs: Sequence[LabelledPair], scores: np.ndarray) -> dict[str, float]:
    """Dev NDCG@10 (graded gains) and AUC (Exact vs not) over labelled pairs."""
    from distill.eval.metrics import binary_auc, mean_ndcg

    keep = [i for i, p in enumerate(pairs) if p.label in GRADE_GAINS]
    qids = [pairs[i].query_id for i in keep]
    gains = [GRADE_GAINS[pairs[i].label] for i in keep]
    s = [float(scores[i]) for i in keep]
    return {
        "ndcg@10": float(mean_ndcg(qids, gains, s, k=10)),
        "auc": float(binary_auc([int(pairs[i].label == "Exact") for i in keep], s)),
        "pairs": len(keep),
        "queries": len(set(qids)),
    }


def _to(tensors: dict, device) -> dict:
    return {k: v.to(device) for k, v in tensors.items()}


def _loss_terms(model, batch: dict, config: TrainConfig, losses: dict) -> dict:
    w = config.weights
    terms = {}
    if config.kind == "cross":
        out = model(**batch["pair"], with_attention=w.cot > 0)
        if w.cot:
            terms["cot"] = losses["attention"](out.cls_attention, batch["pair_evidence"], batch["has_pair_evidence"])
    else:
        out = model(batch["query"], batch["item"])
        if w.cot:
            terms["cot"] = losses["pooling"](out.query.weights, batch["query_evidence"], batch["has_query_evidence"],
                                             out.item.weights, batch["item_evidence"], batch["has_item_evidence"])
        if w.verdict:
            terms["verdict"] = losses["verdict"](out.verdict_logits, batch["verdicts"])
    if w.hard:
        terms["hard"] = losses["hard"](out.logits, batch["labels"])
    if w.score_kd:
        terms["score_kd"] = losses["score_kd"](out.logits, batch["teacher_probs"], batch["has_teacher_probs"])
    return terms


def _check_coverage(config: TrainConfig, report) -> None:
    """A KD term with no training row to apply to would silently train label-only: refuse instead."""
    w = config.weights
    missing = [(term, what) for term, weight, n, what in (
        ("score_kd", w.score_kd, report.with_distribution, "a usable grade distribution"),
        ("cot", w.cot, report.evidence.records_with_evidence, "usable evidence spans"),
        ("verdict", w.verdict, report.with_verdicts, "a verdict on a known dimension"),
    ) if weight and not n]
    if missing:
        files = ", ".join(f"{path} ({use})" for path, use in config.teacher_files())
        raise ValueError("; ".join(f"the {term} weight is > 0 but no training pair got {what}" for term, what in missing)
                         + f" from the teacher files {files}; per-file counts: {report.as_dict()['sources']}")


class TrainResult(BaseModel):
    run_dir: str
    best_epoch: int
    best_dev: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    teacher: dict[str, Any] | None = None


def train(config: TrainConfig, train_pairs: Sequence[LabelledPair], dev_pairs: Sequence[LabelledPair],
          run_dir: str | Path, *, teacher: Sequence | None = None, tokenizer_file: str | Path | None = None,
          data_report: dict[str, Any] | None = None) -> TrainResult:
    """Train a student on ``train_pairs`` (+ merged ``teacher`` sources), early-stopping on dev."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from distill.losses import (
        AttentionKDLoss,
        HardLabelLoss,
        PoolingKDLoss,
        ScoreDistributionKDLoss,
        VerdictAuxLoss,
    )
    from distill.students.backbone import tokenizer_file as backbone_tokenizer
    from distill.students.data import TeacherReport, build_examples, collate, merge_teacher

    started = time.monotonic()
    run_dir = Path(run_dir)
    accelerator = Accelerator()
    if accelerator.device.type == "cpu":
        torch.set_num_threads(config.threads)
    set_seed(config.seed)

    tokenizer_file = tokenizer_file or backbone_tokenizer()
    tokenizer = make_tokenizer(config, tokenizer_file)
    teacher_report = TeacherReport()
    merged = merge_teacher(train_pairs, teacher, teacher_report) if teacher else {}
    train_examples = build_examples(config.kind, train_pairs, tokenizer, config.template, merged,
                                    teacher_report, config.cot_agree_only)
    _check_coverage(config, teacher_report)
    dev_examples = build_examples(config.kind, dev_pairs, tokenizer, config.template)
    if not any(p.label in GRADE_GAINS for p in dev_pairs):
        raise ValueError("the dev set has no labelled pair: early stopping on NDCG@10 needs labels")

    model = build_student(config.kind, config.layers)
    head_ids = {id(p) for p in model.head_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": config.lr},
        {"params": model.head_parameters(), "lr": config.head_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        train_examples, batch_size=config.batch_size, shuffle=True, generator=generator,
        collate_fn=lambda exs: collate(exs, config.kind, tokenizer.pad_id, len(GRADE_LEVELS)))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = config.epochs * len(loader)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps),
                                                max(total_steps, 1))
    losses = {"hard": HardLabelLoss(), "score_kd": ScoreDistributionKDLoss(config.temperature),
              "attention": AttentionKDLoss(), "pooling": PoolingKDLoss(), "verdict": VerdictAuxLoss()}
    weights = config.weights.model_dump()

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    step = 0
    bad_epochs = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                   disable=not accelerator.is_local_main_process)
        for batch in bar:
            terms = _loss_terms(model, batch, config, losses)
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
        dev = ranking_metrics(dev_pairs, predict_scores(student, config.kind, dev_examples, tokenizer.pad_id))
        entry = {"epoch": epoch, "steps": step, "train_loss": {k: v / max(batches, 1) for k, v in sums.items()},
                 "dev": dev}
        history.append(entry)
        accelerator.print(f"epoch {epoch}: train {entry['train_loss']} dev ndcg@10 {dev['ndcg@10']:.4f} "
                          f"auc {dev['auc']:.4f}")
        metric = config.select_metric
        if best is None or dev[metric] > best["dev"][metric] + 1e-9:
            best = entry
            bad_epochs = 0
            if accelerator.is_main_process:
                save_run(run_dir, student, config, tokenizer_file)
        else:
            bad_epochs += 1
        if bad_epochs >= config.patience or (config.max_steps is not None and step >= config.max_steps):
            break

    assert best is not None
    result = TrainResult(run_dir=str(run_dir), best_epoch=best["epoch"], best_dev=best["dev"], history=history,
                         seconds=round(time.monotonic() - started, 1),
                         teacher=teacher_report.as_dict() if teacher else None)
    if accelerator.is_main_process:
        metrics = result.model_dump()
        metrics["data"] = data_report or {}
        (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return result
