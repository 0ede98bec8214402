"""`relevance teacher sft`: make ELLM-rele stronger by fine-tuning its verdict on human labels.

What is trained, plainly: the teacher's grade distribution is a softmax over the output-layer
rows ("unembeddings") of the grade levels' first tokens, applied to the model's final hidden
state at the verdict position (right after ``{"grade": "`` in score mode). This command keeps the
transformer body frozen and fine-tunes those rows only (3 × 576 numbers for SmolLM2-135M) with
cross-entropy against the human labels of the training pairs, L2-anchored to the mean of their
original values (so that heavy regularisation means "uniform", not the zero-shot bias) (the weight chosen by cross-validation on the training pairs, folds by query). It is cheap
enough for a shared 2-core CPU: one llama.cpp forward per training pair to read the hidden state
(cached in ``verdict_states.npz``), then full-batch L-BFGS fits in seconds.

Output: a GGUF copy of the base model whose (formerly tied) output layer is written out as its
own ``output.weight`` tensor with the fine-tuned rows, served by the llama.cpp backend
(``llamacpp:OUT/model.gguf``) exactly like the base model; plus ``sft.json`` (config, data,
losses, provenance). Writing a transformers checkpoint needs a 150 s+ de-quantising load on this
CPU and is left out; llama.cpp's GGUF *converter* is not in the pip package, so the GGUF is
written with ``gguf``'s writer by copying every tensor and adding ``output.weight``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from core.cot import EXCLUSION_DIMENSION, VERDICTS, DimensionJudgement
from core.datasets import fold_of
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.data.schema import LabelledPair
from distill.teacher.bootstrap import rule_judgements, rule_rationale
from teacher.prompt import PROMPT_VERSION, SCORE_PREFILL, build_messages

SFT_GGUF = "model.gguf"
SFT_REPORT = "sft.json"
OOF_FILE = "oof_train.jsonl"
COT_HEAD_FILE = "cot_head.npz"  # the fitted head when it reads CoT features (no GGUF can hold it)
STATES_FILE = "verdict_states.npz"  # cache of hidden states by pair id (same base model and prompt)
SAVE_STATES_EVERY = 25  # pairs read between cache writes


L2_GRID: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0)
CV_FOLDS = 5


class SFTConfig(BaseModel):
    # Weight of ||rows - original rows||²; None: chosen by cross-validation over L2_GRID, folds by query.
    l2: float | None = Field(default=None, ge=0.0)  # anchor: the mean of the levels' original rows
    max_iter: int = Field(default=200, ge=1)
    max_pairs: int | None = Field(
        default=None, ge=1, description="fine-tune on a seeded random subset this large"
    )
    # Stop reading hidden states after this long and fit on the pairs read so far (a shared CPU's budget).
    max_minutes: float | None = Field(default=None, gt=0)
    threads: int = Field(default=2, ge=1)
    seed: int = 0
    # Condition the head on the rule CoT's per-dimension verdicts too (cot_features): h' = [h; v].
    cot_features: bool = False
    # Ablation: the head reads the CoT features alone (no LLM state), to show what the LLM adds.
    llm_states: bool = True


class VerdictFeatures:
    """Final hidden states at the score-mode verdict position.

    llama.cpp returns the raw next-token logits z = W h, with W the output layer [vocab, dim]
    (vocab ≫ dim, full column rank), so h = W⁺ z exactly up to llama.cpp's arithmetic. This
    reuses the teacher's own fast, KV-cached evaluation path instead of a second model context.
    """

    def __init__(self, gguf_path: Path, output: np.ndarray, *, threads: int = 2) -> None:
        from teacher.backends.llamacpp import LlamaCppBackend

        self.backend = LlamaCppBackend(gguf_path, n_threads=threads)
        w = output.astype(np.float64)
        self._pinv = np.linalg.solve(w.T @ w, w.T)  # W⁺ = (WᵀW)⁻¹Wᵀ, [dim, vocab]
        self.dim = output.shape[1]

    def prompt_text(self, pair: LabelledPair, levels: Sequence[str]) -> str:
        messages = build_messages(
            DEFAULT_TEMPLATE.query_text(pair.query),
            DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()),
            "score",
            levels,
        )
        return self.backend.render_prompt(messages) + SCORE_PREFILL

    def level_first_tokens(self, prompt_text: str, levels: Sequence[str]) -> list[int]:
        prefix = self.backend.tokenize(prompt_text)
        firsts = [self.backend._continuation(prefix, prompt_text, level)[0] for level in levels]
        if len(set(firsts)) != len(firsts):
            raise ValueError(
                f"grade levels {list(levels)} share a first token: the verdict head needs distinct ones"
            )
        return firsts

    def __call__(self, prompt_text: str) -> np.ndarray:
        return self._pinv @ self.backend.raw_logits(self.backend.tokenize(prompt_text))


def _read_states(
    pairs: Sequence[LabelledPair],
    levels: Sequence[str],
    features: VerdictFeatures,
    cache: dict[str, np.ndarray],
    cache_path: Path,
    deadline: float | None,
    progress: bool,
) -> list[np.ndarray]:
    """Hidden states of ``pairs`` in order, from the cache or the model, until ``deadline``
    (perf_counter); new ones are added to the cache, saved every SAVE_STATES_EVERY and on exit."""
    from tqdm import tqdm

    read: list[np.ndarray] = []
    unsaved = 0
    try:
        for pair in tqdm(pairs, desc="verdict states", disable=not progress, file=sys.stderr):
            if pair.pair_id in cache:
                read.append(cache[pair.pair_id])
                continue
            if deadline is not None and time.perf_counter() > deadline:
                break
            read.append(features(features.prompt_text(pair, levels)))
            cache[pair.pair_id] = read[-1]
            unsaved += 1
            if unsaved == SAVE_STATES_EVERY:
                _save_states(cache_path, cache)
                unsaved = 0
    finally:  # an interrupted run keeps the states it read: the next run resumes from them
        if unsaved:
            _save_states(cache_path, cache)
    return read


# Scales of the CoT features tried by cross-validation: the LLM state's norm is ~50 and the features
# are counts, so under one shared L2 weight the scale sets how strongly the CoT weights are shrunk.
COT_SCALE_GRID: tuple[float, ...] = (1.0, 10.0, 30.0)
# Rule dimensions whose verdicts the CoT-conditioned head reads (bootstrap.rule_judgements).
COT_FEATURE_DIMENSIONS = ("color", "material", "size", "quantity", EXCLUSION_DIMENSION)


def pair_judgements(pair: LabelledPair) -> list[DimensionJudgement]:
    return rule_judgements(
        DEFAULT_TEMPLATE.query_text(pair.query), DEFAULT_TEMPLATE.item_text(pair.item.as_mapping())
    )


def cot_features(pairs: Sequence[LabelledPair]) -> np.ndarray:
    """[n, 5·4 + 1]: per pair, how many judgements of each rule dimension gave each verdict, and
    ln(1 + number of other query words found in the item). Label-free: the rules never see the label."""
    out = np.zeros((len(pairs), len(COT_FEATURE_DIMENSIONS) * len(VERDICTS) + 1))
    for n, pair in enumerate(pairs):
        *dimensions, overlap = pair_judgements(pair)
        for j in dimensions:
            out[n, COT_FEATURE_DIMENSIONS.index(j.dimension) * len(VERDICTS) + VERDICTS.index(j.verdict)] += 1
        out[n, -1] = math.log1p(len(overlap.evidence) // 2)
    return out


def _save_states(path: Path, cache: dict[str, np.ndarray]) -> None:
    """Write the cache atomically (a kill mid-write leaves the previous file)."""
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(partial, states=np.stack(list(cache.values())), pair_ids=list(cache))
    os.replace(partial, path)


def _load_states(path: Path, dim: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    data = np.load(path)
    if data["states"].shape[1:] != (dim,):
        raise ValueError(
            f"{path}: states of dimension {data['states'].shape[1:]}, the model's is {dim}; delete the file"
        )
    return dict(zip((str(i) for i in data["pair_ids"]), data["states"], strict=True))


def output_matrix(gguf_path: Path) -> np.ndarray:
    """The model's output layer [vocab, dim] (the tied token embedding when there is no output.weight)."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    tensor = tensors.get("output.weight") or tensors["token_embd.weight"]
    return dequantize(tensor.data, tensor.tensor_type).astype(np.float32)


def fit_rows(
    states: np.ndarray, labels: np.ndarray, rows0: np.ndarray, *, l2: float, max_iter: int, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Rows minimising mean CE(softmax(rows · h), label) + l2 · ||rows - rows0||² (rows0: the anchor)."""
    import torch

    torch.manual_seed(seed)
    h = torch.tensor(states, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.long)
    anchor = torch.tensor(rows0, dtype=torch.float64)
    rows = anchor.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([rows], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(h @ rows.T, y) + l2 * ((rows - anchor) ** 2).sum()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(h @ anchor.T, y))
    optimiser.step(closure)
    with torch.no_grad():
        after = float(torch.nn.functional.cross_entropy(h @ rows.T, y))
    return rows.detach().numpy(), {"train_ce_before": round(before, 4), "train_ce_after": round(after, 4)}


def choose_l2(
    states: np.ndarray, labels: np.ndarray, groups: Sequence[str], rows0: np.ndarray, config: SFTConfig
) -> tuple[float, dict[str, float], np.ndarray]:
    """The L2 weight of L2_GRID with the lowest cross-validated CE (folds split by query), its CV CE
    per weight, and the chosen weight's out-of-fold grade distributions [n, levels]."""
    fold = np.array([fold_of(g, CV_FOLDS, salt="sft-cv") for g in groups])
    cv: dict[str, float] = {}
    oof: dict[float, np.ndarray] = {}
    for l2 in L2_GRID:
        logp = np.zeros((len(labels), rows0.shape[0]))
        for k in range(CV_FOLDS):
            train, held = fold != k, fold == k
            if not held.any() or not train.any():
                continue
            rows, _ = fit_rows(
                states[train], labels[train], rows0, l2=l2, max_iter=config.max_iter, seed=config.seed
            )
            logits = states[held] @ rows.T
            logits -= logits.max(axis=1, keepdims=True)
            logp[held] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cv[f"{l2:g}"] = round(-float(logp[np.arange(len(labels)), labels].mean()), 4)
        oof[l2] = np.exp(logp)
    best = min(L2_GRID, key=lambda l2: cv[f"{l2:g}"])
    return best, cv, oof[best]


def write_distribution_records(
    path: Path,
    pairs: Sequence[LabelledPair],
    probs: np.ndarray,
    levels: Sequence[str],
    *,
    teacher_id: str,
    with_cot: bool = False,
) -> None:
    """Grade distributions as CoT records, readable by `relevance eval run` and `relevance student train`:
    score mode, or (``with_cot``) with the rule judgements the head read as their dimensions."""
    from datetime import UTC, datetime

    from core.cot import CoTRecord

    now = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for pair, p in zip(pairs, probs, strict=True):
            distribution = {level: float(v) for level, v in zip(levels, p / p.sum(), strict=True)}
            judgements = pair_judgements(pair) if with_cot else []
            record = CoTRecord(
                teacher_id=teacher_id, prompt_version=PROMPT_VERSION, mode="cot" if with_cot else "score",
                pair_id=pair.pair_id, query_id=pair.query_id, query=DEFAULT_TEMPLATE.query_text(pair.query),
                item_id=pair.item.id, item_text=DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()),
                dimensions=judgements, grade=max(distribution, key=distribution.get),
                grade_levels=list(levels), grade_distribution=distribution, distribution_source="logits",
                rationale=rule_rationale(judgements) if with_cot else None, label=pair.label, created_at=now,
            )  # fmt: skip
            f.write(record.model_dump_json() + "\n")


def write_gguf_with_output(src: Path, dst: Path, output: np.ndarray, *, name_suffix: str) -> None:
    """Copy ``src`` to ``dst`` (metadata and tensors as they are) adding an F16 ``output.weight``."""
    import gguf

    if any(t.name == "output.weight" for t in gguf.GGUFReader(src).tensors):
        raise ValueError(f"{src} already has an output.weight tensor; replacing one is not supported")
    head = output.astype(np.float16)
    write_gguf_copy(
        src, dst, name_suffix=name_suffix, add={"output.weight": (head, gguf.GGMLQuantizationType.F16)}
    )


def write_gguf_copy(
    src: Path,
    dst: Path,
    *,
    name_suffix: str,
    replace: dict[str, np.ndarray] | None = None,
    add: dict[str, tuple[np.ndarray, Any]] | None = None,
) -> None:
    """Copy ``src`` to ``dst`` (metadata and tensors as they are), writing the tensors named in
    ``replace`` as F32 arrays instead and appending ``add``'s (array, GGML type) tensors."""
    import gguf

    replace = replace or {}
    reader = gguf.GGUFReader(src)
    missing = set(replace) - {t.name for t in reader.tensors}
    if missing:
        raise ValueError(f"{src} has no tensor(s) {sorted(missing)} to replace")
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.NAME:
            value = f"{value}-{name_suffix}"
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    data = []
    for tensor in reader.tensors:
        if tensor.name in replace:
            array = replace[tensor.name].astype(np.float32)
            writer.add_tensor_info(
                tensor.name, array.shape, array.dtype, array.nbytes, gguf.GGMLQuantizationType.F32
            )
            data.append(array)
        else:
            writer.add_tensor_info(
                tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
            )
            data.append(tensor.data)
    for name, (array, kind) in (add or {}).items():
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes, kind)
        data.append(array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for array in data:
        writer.write_tensor_data(array, tensor_endianess=reader.endianess)
    writer.close()


def run_sft(
    pairs: Sequence[LabelledPair],
    out: Path,
    config: SFTConfig,
    *,
    base_gguf: Path | None = None,
    levels: Sequence[str] = GRADE_LEVELS,
    progress: bool = True,
    predict: Sequence[LabelledPair] = (),
    predict_out: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune the verdict rows on ``pairs`` (unlabelled pairs are skipped and counted).

    With ``config.cot_features`` the head reads [h; v] (v: ``cot_features``): no GGUF can hold
    it, so it is saved as COT_HEAD_FILE and its records carry the rule judgements as their CoT.
    ``predict`` pairs (e.g. the dev split) are scored by the fitted head into ``predict_out``."""
    from teacher.backends.llamacpp import default_gguf_path

    base = Path(base_gguf) if base_gguf else default_gguf_path()
    labelled = [p for p in pairs if p.label in levels]
    if not labelled:
        raise ValueError(f"no pair has a label in {list(levels)}; SFT needs human labels")
    if config.max_pairs is not None or config.max_minutes is not None:
        # Random order, so that whatever prefix the budget allows is a random sample.
        order = np.random.default_rng(config.seed).permutation(len(labelled))[: config.max_pairs]
        labelled = [labelled[i] for i in order]
    if predict and predict_out is None:
        raise ValueError("predict pairs need a predict_out file")
    if not (config.llm_states or config.cot_features):
        raise ValueError("a head without LLM states needs the CoT features (cot_features)")
    selected = len(labelled)
    started = time.perf_counter()
    output = output_matrix(base)
    features = VerdictFeatures(base, output, threads=config.threads)
    first_tokens = features.level_first_tokens(features.prompt_text(labelled[0], levels), levels)
    cache = _load_states(out / STATES_FILE, features.dim)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None if config.max_minutes is None else started + 60 * config.max_minutes

    def head_inputs(
        pairs: Sequence[LabelledPair], deadline: float | None
    ) -> tuple[list[LabelledPair], np.ndarray, np.ndarray]:
        """The pairs read before ``deadline``, their LLM states h and CoT features v (either may be
        zero-width); the head reads [h; scale·v]."""
        if config.llm_states:
            read = _read_states(pairs, levels, features, cache, out / STATES_FILE, deadline, progress)
            pairs, h = pairs[: len(read)], np.stack(read)
        else:
            h = np.zeros((len(pairs), 0))
        v = cot_features(pairs) if config.cot_features else np.zeros((len(pairs), 0))
        return list(pairs), h, v

    labelled, h, v = head_inputs(labelled, deadline)
    labels = np.array([list(levels).index(p.label) for p in labelled])
    # Anchor every level's row to the mean of the original rows: strong regularisation then means a
    # uniform distribution, not the zero-shot model's bias (it calls nearly every pair Exact).
    rows0 = np.repeat(
        output[first_tokens].astype(np.float64).mean(axis=0, keepdims=True), len(levels), axis=0
    )
    # The CoT features' weights start at 0 (and are pulled towards it).
    rows0 = np.hstack([rows0 if config.llm_states else rows0[:, :0], np.zeros((len(levels), v.shape[1]))])
    teacher_id = "+".join(
        ([f"llamacpp:{base.stem}-verdict-sft"] if config.llm_states else [])
        + (["rule-cot"] if config.cot_features else [])
    )
    # Out-of-fold (held out by query) distributions: an honest estimate without spending dev pairs.
    groups = [p.query_id for p in labelled]
    # CV over the CoT features' scale too (no features: nothing to scale).
    tried = {
        scale: choose_l2(np.hstack([h, scale * v]), labels, groups, rows0, config)
        for scale in (COT_SCALE_GRID if config.cot_features else (1.0,))
    }
    scale = min(tried, key=lambda k: tried[k][1][f"{tried[k][0]:g}"])
    best_l2, cv, oof = tried[scale]
    if config.cot_features:
        cv = {f"scale {k:g}, l2 {l2}": ce for k, t in tried.items() for l2, ce in t[1].items()}
    states = np.hstack([h, scale * v])
    l2 = best_l2 if config.l2 is None else config.l2
    write_distribution_records(
        out / OOF_FILE, labelled, oof, levels, teacher_id=f"{teacher_id}-oof", with_cot=config.cot_features
    )
    rows, losses = fit_rows(states, labels, rows0, l2=l2, max_iter=config.max_iter, seed=config.seed)
    if config.cot_features:
        np.savez(
            out / COT_HEAD_FILE,
            rows=rows,
            cot_feature_scale=scale,
            level_first_tokens=np.array(first_tokens),
            levels=np.array(levels),
        )
    else:
        output[first_tokens] = rows
        write_gguf_with_output(base, out / SFT_GGUF, output, name_suffix="ellm-rele-verdict-sft")
    if predict:
        held, held_h, held_v = head_inputs(list(predict), None)
        held_states = np.hstack([held_h, scale * held_v])
        logits = held_states @ rows.T
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        write_distribution_records(
            predict_out, held, probs, levels, teacher_id=teacher_id, with_cot=config.cot_features
        )
    predictions = (states @ rows.T).argmax(axis=1)
    report = {
        "method": "verdict-row fine-tuning (frozen body, score mode)"
        + (", head conditioned on the rule CoT's verdicts" if config.cot_features else ""),
        "base_model": str(base),
        "prompt_version": PROMPT_VERSION,
        "levels": list(levels),
        "level_first_tokens": first_tokens,
        "config": config.model_dump(),
        "l2": l2,
        "cot_feature_scale": scale if config.cot_features else None,
        "cv_ce_by_l2": cv,
        "input_pairs": len(pairs),
        "skipped_unlabelled": sum(p.label not in levels for p in pairs),
        "train_pairs": len(labelled),
        "not_read_within_max_minutes": selected - len(labelled),
        "out_of_fold_records": str(out / OOF_FILE),
        "predicted_records": str(predict_out) if predict else None,
        "label_counts": dict(Counter(p.label for p in labelled)),
        "train_accuracy_after": round(float((predictions == labels).mean()), 4),
        **losses,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "teacher_spec": None if config.cot_features else f"llamacpp:{out / SFT_GGUF}",
    }
    (out / SFT_REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if not math.isfinite(losses["train_ce_after"]):
        raise ValueError(f"SFT diverged: {losses}")
    return report
