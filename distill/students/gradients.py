"""Do a run's MKD terms pull together? Per-term gradient cosines on the shared backbone.

``relevance student gradients RUN`` takes a finished training run folder and, on batches of the run's
own training data (its config's --train and teacher files), computes the gradient of each switched-on
loss term (hard label, score KD, CoT KD, verdict), weighted as in the run, with respect to the
backbone's parameters (the ones every term reaches; the heads are left out). It does so at the run's
start weights (its --init-from run, or all-MiniLM-L6-v2) and at its trained weights, and reports for
each pair of terms the mean cosine over batches with a bootstrap CI, and each term's mean gradient
norm.

Why: a negative cosine between two terms means a step on one undoes part of the other. It is the
measured form of "the CoT term pulls against score KD". The norms say which term dominates a step.
All terms of a batch come from one forward pass, so they share its dropout mask. A batch where a term
has no row to apply to (no evidence, no label) gives that term no gradient. Such a batch is left out of
that term's pairs, and the report counts it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from core.grades import GRADE_LEVELS
from distill.students.config import TrainConfig, make_tokenizer
from distill.students.run_folder import TOKENIZER_FILE, init_from_run, load_run, read_config


class At(StrEnum):
    """Where the gradients are taken: the run's start weights (its --init-from run, or MiniLM), its trained ones."""

    start = "start"
    trained = "trained"


RESAMPLES = 1000


@dataclass
class PairCosine:
    terms: tuple[str, str]
    mean: float
    ci: tuple[float, float]
    batches: int  # batches where both terms had a gradient
    negative_share: float  # share of those batches with a cosine below 0


@dataclass
class GradientReport:
    run: str
    at: str
    batches: int
    batch_size: int
    weights: dict[str, float]
    norms: dict[str, float]  # mean norm of each weighted term's gradient, over the batches it had one
    cosines: list[PairCosine] = field(default_factory=list)
    empty: dict[str, int] = field(default_factory=dict)  # batches where the term had no gradient

    def as_dict(self) -> dict:
        return asdict(self)


def _model_at(run_dir: Path, config: TrainConfig, at: At):
    if at is At.trained:
        return load_run(run_dir)[0]
    model = config.student_kind.build(config.layers)
    if config.init_from:
        init_from_run(model, config.init_from, config.kind)
    return model


def _mean_ci(values: np.ndarray, seed: int) -> tuple[float, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(axis=1)
    return float(values.mean()), (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def term_gradients(
    run_dir: str | Path, train_pairs, teacher_sources, *, at: At | str, batches: int, seed: int = 0
) -> GradientReport:
    """The report for ``run_dir`` on ``batches`` batches of ``train_pairs`` drawn with ``seed``."""
    import torch

    from distill.students.data import TeacherReport, build_examples, collate, merge_teacher
    from distill.students.loop import loss_terms, make_losses

    at = At(at)
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    kind = config.student_kind
    weights = {name: w for name, w in config.weights.model_dump().items() if w}
    if len(weights) < 2:
        raise ValueError(f"{run_dir} trains with one loss term ({', '.join(weights)}): nothing to compare")
    torch.manual_seed(seed)
    # Only the pairs of the batches drawn are encoded: a Home Depot transfer set is 117k pairs.
    order = np.random.default_rng(seed).permutation(len(train_pairs))[: batches * config.batch_size]
    pairs = [train_pairs[i] for i in order]
    tokenizer = make_tokenizer(config, run_dir / TOKENIZER_FILE)
    report = TeacherReport()
    merged = merge_teacher(pairs, teacher_sources, report) if teacher_sources else {}
    examples = build_examples(kind, pairs, tokenizer, config.template, merged, report, config.cot_agree_only)
    model = _model_at(run_dir, config, at)
    model.train()  # the regime the terms are trained in (dropout on)
    heads = {id(p) for p in model.head_parameters()}
    shared = [p for p in model.parameters() if id(p) not in heads and p.requires_grad]
    losses = make_losses(config)
    pairs_of_terms = list(itertools.combinations(weights, 2))
    # Per batch only the norms and cosines are kept: one term's gradient is the size of the model.
    norms: dict[str, list[float]] = {name: [] for name in weights}
    cosines: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs_of_terms}
    empty = dict.fromkeys(weights, 0)
    n = 0
    for start in range(0, len(examples), config.batch_size):
        batch = collate(
            examples[start : start + config.batch_size], kind, tokenizer.pad_id, len(GRADE_LEVELS)
        )
        terms = loss_terms(model, batch, config, losses)
        flat: dict[str, torch.Tensor] = {}
        for name in weights:
            value = terms[name] * weights[name]
            if not value.requires_grad or float(value.detach()) == 0.0:
                empty[name] += 1  # no row of this batch carries the term's target
                continue
            g = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
            flat[name] = torch.cat(
                [
                    (x if x is not None else torch.zeros_like(p)).flatten()
                    for x, p in zip(g, shared, strict=True)
                ]
            ).double()
            norms[name].append(float(flat[name].norm()))
        for a, b in pairs_of_terms:
            if a in flat and b in flat and norms[a][-1] > 0 and norms[b][-1] > 0:
                cosines[(a, b)].append(float(flat[a] @ flat[b]) / (norms[a][-1] * norms[b][-1]))
        n += 1
    result = GradientReport(
        run=str(run_dir), at=str(at), batches=n, batch_size=config.batch_size, weights=weights,
        norms={name: float(np.mean(v)) if v else float("nan") for name, v in norms.items()}, empty=empty,
    )  # fmt: skip
    for pair, values in cosines.items():
        if values:
            cos = np.array(values)
            mean, ci = _mean_ci(cos, seed)
            result.cosines.append(PairCosine(pair, mean, ci, len(cos), float((cos < 0).mean())))
    return result


def format_report(report: GradientReport) -> str:
    weights = ", ".join(f"{k} {v:g}" for k, v in report.weights.items())
    lines = [
        f"{report.run} at its {report.at} weights: {report.batches} batches of {report.batch_size} ({weights})",
        "gradient norm (weighted, mean over batches with the term): "
        + ", ".join(f"{k} {v:.4g}" + (f" ({report.empty[k]} batches without)" if report.empty[k] else "")
                    for k, v in report.norms.items()),
        "| terms | mean cosine [95% CI] | batches | share < 0 |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for c in report.cosines:
        lines.append(
            f"| {c.terms[0]} · {c.terms[1]} | {c.mean:+.3f} [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] | {c.batches} | "
            f"{c.negative_share:.0%} |"
        )
    return "\n".join(lines)
