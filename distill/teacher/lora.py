"""`relevance teacher sft-lora`: LoRA fine-tuning of a causal LM on CoT records → an ELLM-rele checkpoint.

Each CoT record (``cot.CoTRecord``, as written by ``relevance teacher annotate``, ``collaborate`` or
``bootstrap-cot``) becomes training text in exactly the teacher's protocol (``prompt.py``): the
same chat messages through the tokenizer's chat template, then the assistant turn as the JSON the
prompt asks for — dimensions, rationale, and the grade LAST — starting with the same prefill the
backends write. The loss covers the assistant tokens only (the prompt is masked with -100), and
the grade is tokenised exactly as the backends read it at the verdict position ``"grade": "``, so
the fine-tuned model's grade distribution there is what was trained. A record gives a CoT example
(``mode="cot"`` records with a grade) and/or a score-mode example (``{"grade": "<level>"}``),
per ``targets``.

Base weights: transformers cannot reach a hub here, so the base is the embedded SmolLM2-135M-Instruct
GGUF, de-quantised once into a transformers checkpoint (``convert_gguf_to_hf``, cached under
``models/smollm2-135m-hf``). Training holds out a group of queries (no query in both parts),
evaluates on it every ``eval_every`` steps and keeps the adapter with the lowest held-out verdict
cross-entropy (early stop after ``patience`` evaluations without improvement). The output folder
holds the merged model (``merge_and_unload``) and the tokenizer with its chat template, loadable
as teacher ``hf:OUT``, plus ``lora.json`` (config, data counts, losses, timings) and ``adapter/``,
the adapter alone in bfloat16 (about 10 MB at rank 16 on every projection of SmolLM2-135M, where
the merged model is 540 MB): ``merge_adapter`` rebuilds the merged checkpoint from it and the base.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.cot import CoTRecord
from core.datasets import unit_hash
from teacher.backends.base import hf_token_ids, level_first_tokens
from teacher.prompt import GRADE_KEY_PREFIX, PROMPT_VERSION, Mode, build_messages, prefill

DEFAULT_HF_BASE = Path("models/smollm2-135m-hf")
LORA_REPORT = "lora.json"
ADAPTER_DIR = (
    "adapter"  # inside the output folder: the LoRA adapter alone, in bfloat16 (what a GPU run brings back)
)
IGNORE = -100  # label value the loss skips


class Targets(StrEnum):
    """The assistant turns a record trains: its CoT, the score-mode verdict, or both."""

    cot = "cot"
    score = "score"
    both = "both"


class LoRAPrecision(StrEnum):
    """Autocast precision of training (LoRAConfig.precision)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class LoRAConfig(BaseModel):
    targets: Targets = Targets.both  # which assistant turns to train: CoT, score mode, or both per record
    rank: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=4, ge=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    max_minutes: float | None = Field(default=None, gt=0)
    max_length: int = Field(default=1024, ge=32)  # longer examples are skipped and counted, never cut
    max_records: int | None = Field(
        default=None, ge=1, description="train on a seeded random subset this large"
    )
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)  # share of queries held out
    max_eval_examples: int = Field(default=32, ge=1)
    eval_every: int = Field(default=25, ge=1)
    patience: int = Field(default=3, ge=1)
    warmup_steps: int = Field(default=5, ge=0)
    device: str = "auto"
    # bf16 autocast: the weights and the saved checkpoint stay float32. auto: bf16 on CUDA with
    # bf16 support and on CPUs with native bf16 (avx512_bf16/amx_bf16; ~3x faster here), else fp32.
    precision: LoRAPrecision = LoRAPrecision.auto
    threads: int = Field(default=2, ge=1)
    seed: int = 0


def convert_gguf_to_hf(
    out: Path = DEFAULT_HF_BASE, gguf_path: Path | None = None, *, echo: Callable[[str], None] | None = None
) -> Path:
    """De-quantise a GGUF (default: the embedded SmolLM2) into a transformers checkpoint at ``out``, once."""
    if (out / "config.json").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teacher.backends.llamacpp import default_gguf_path

    gguf_path = Path(gguf_path) if gguf_path else default_gguf_path()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"base GGUF not found: {gguf_path}")
    say = echo or (lambda message: print(message, file=sys.stderr))
    say(
        f"converting {gguf_path} to a transformers checkpoint at {out} (de-quantising; minutes on a CPU, done once)"
    )
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # transformers marks a GGUF-loaded model as quantised and refuses to save it: copy the
    # de-quantised weights into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    partial = out.with_name(
        out.name + ".partial"
    )  # renamed when complete: a killed run leaves no half checkpoint
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "source.json").write_text(json.dumps({"gguf": str(gguf_path)}) + "\n", encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)
    say(f"converted in {time.perf_counter() - started:.0f} s")
    return out


def assistant_turn(record: CoTRecord, mode: Mode) -> tuple[str, str]:
    """(assistant text up to and including ``"grade": "``, the grade) in the prompt's JSON layout."""
    answer: dict[str, Any] = {}
    if mode == "cot":
        answer["dimensions"] = [
            {
                "dimension": d.dimension,
                "query_value": d.query_value,
                "item_value": d.item_value,
                "verdict": d.verdict,
                "evidence": [{"source": e.source, "text": e.text} for e in d.evidence],
            }
            for d in record.dimensions
        ]
        if record.rationale:
            answer["rationale"] = record.rationale
    answer["grade"] = record.grade
    text = json.dumps(answer, ensure_ascii=False)  # the layout of the prompt's example answer
    head = text[: text.rindex(GRADE_KEY_PREFIX) + len(GRADE_KEY_PREFIX)]
    assert head.startswith(prefill(mode)), head[:40]
    return head, str(record.grade)


def text_tokenizer(tokenizer: Any) -> Callable[[str], list[int]]:
    """text → ids without special tokens, as the backends tokenise (the chat template adds them)."""
    return lambda text: hf_token_ids(tokenizer, [text])[0]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens
    answer_start: int  # index of the first assistant token
    verdict_index: int  # position whose logits predict the grade's first token
    grade: int  # index into the levels
    group: str  # query, for the held-out split
    mode: str


def build_example(record: CoTRecord, mode: Mode, tokenizer: Any, levels: Sequence[str]) -> Example:
    """Token ids and labels for one record; the grade is tokenised as the backends read it."""
    return tokenize_examples([(record, mode)], tokenizer, levels)[0]


def tokenize_examples(
    jobs: Sequence[tuple[CoTRecord, Mode]], tokenizer: Any, levels: Sequence[str]
) -> list[Example]:
    """``build_example`` of each (record, mode), the texts tokenised a list at a time (the fast
    tokenizer spreads a list over its threads: on a 16-core GPU host, 92k examples in seconds)."""

    def tokenize_all(texts: list[str]) -> list[list[int]]:
        return hf_token_ids(tokenizer, texts)

    tokenize = text_tokenizer(tokenizer)
    closing = tokenize('"}') + [tokenizer.eos_token_id]
    prompts, heads, grades = [], [], []
    for record, mode in jobs:
        messages = build_messages(record.query, record.item_text, mode, levels)
        prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        head, grade = assistant_turn(record, mode)
        heads.append(head)
        grades.append(grade)
    prompt_ids = tokenize_all(prompts)
    head_ids = tokenize_all(
        [p + h for p, h in zip(prompts, heads, strict=True)]
    )  # one string, as the backends tokenise the verdict prefix
    full_ids = tokenize_all([p + h + g for p, h, g in zip(prompts, heads, grades, strict=True)])
    examples = []
    for (record, mode), prompt, head, full, grade in zip(
        jobs, prompt_ids, head_ids, full_ids, grades, strict=True
    ):
        if head[: len(prompt)] != prompt:
            raise ValueError(
                f"record {record.pair_id}: the prompt's tokens change when the answer follows it"
            )
        grade_ids = (
            full[len(head) :] if full[: len(head)] == head and len(full) > len(head) else tokenize(grade)
        )
        answer_ids = head[len(prompt) :] + grade_ids + closing
        examples.append(
            Example(
                input_ids=prompt + answer_ids,
                labels=[IGNORE] * len(prompt) + answer_ids,
                answer_start=len(prompt),
                verdict_index=len(head) - 1,
                grade=list(levels).index(grade),
                group=record.query_id or record.query,
                mode=mode,
            )
        )
    return examples


def build_examples(
    records: Sequence[CoTRecord], tokenizer: Any, config: LoRAConfig
) -> tuple[list[Example], dict[str, int]]:
    """Training examples and counts of what was used and skipped (nothing is dropped silently)."""
    counts: Counter[str] = Counter()
    jobs: list[tuple[CoTRecord, Mode]] = []
    first_levels: list[str] | None = None
    for record in records:
        levels = record.grade_levels
        first_levels = first_levels or levels
        if levels != first_levels:  # one verdict head: grade indices must mean the same level everywhere
            raise ValueError(
                f"record {record.pair_id}: grade levels {levels}, earlier records {first_levels}"
            )
        if record.grade not in levels:
            counts["skipped_no_grade"] += 1
            continue
        if config.targets in ("cot", "both"):
            if record.mode == "cot" and record.parse_ok:
                jobs.append((record, "cot"))
            else:
                counts["no_cot_target (score-mode or unparsed record)"] += 1
        if config.targets in ("score", "both"):
            jobs.append((record, "score"))
    examples: list[Example] = []
    for example in tokenize_examples(jobs, tokenizer, first_levels or []) if jobs else []:
        if len(example.input_ids) > config.max_length:
            counts[f"skipped_too_long_{example.mode}"] += 1
            continue
        examples.append(example)
        counts[f"examples_{example.mode}"] += 1
    return examples, dict(counts)


def split_by_query(
    examples: Sequence[Example], eval_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, held-out): a query's examples all fall on one side (hash of seed and query)."""

    def held(group: str) -> bool:
        # Salted: the bundled train/dev split hashes "{seed}:{query}" the same way, so unsalted no train query would be held out.
        return unit_hash(f"lora-eval:{seed}:{group}") < eval_fraction

    train = [e for e in examples if not held(e.group)]
    return train, [e for e in examples if held(e.group)]


def epoch_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffled batches, each of one mode: a short score-mode example padded to a CoT one's
    length would cost as much as the CoT example."""
    batches: list[list[Example]] = []
    for mode in sorted({e.mode for e in examples}):
        same = [e for e in examples if e.mode == mode]
        rng.shuffle(same)
        batches += [same[i : i + batch_size] for i in range(0, len(same), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):  # right padding: positions (and the verdict index) are unchanged
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def batch_losses(
    model: Any, batch: Sequence[Example], pad_id: int, firsts: Sequence[int], device: Any
) -> tuple[Any, Any, Any]:
    """(mean assistant-token CE, mean verdict CE over the levels' first tokens, verdict hits)."""
    import torch

    inputs = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
    labels = inputs.pop("labels")
    # Logits only from the first position that predicts an answer token: the prompt (most of the
    # sequence) never reaches the 49k-wide output layer, forward or backward.
    start = min(e.answer_start for e in batch) - 1
    keep = torch.arange(start, labels.shape[1] - 1, device=device)
    logits = model(**inputs, logits_to_keep=keep).logits.float()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, start + 1 :].reshape(-1), ignore_index=IGNORE
    )
    rows = torch.arange(len(batch), device=device)
    at = torch.tensor([e.verdict_index - start for e in batch], device=device)
    verdict_logits = logits[rows, at][:, list(firsts)]
    grades = torch.tensor([e.grade for e in batch], device=device)
    verdict_ce = torch.nn.functional.cross_entropy(verdict_logits, grades)
    hits = (verdict_logits.argmax(dim=1) == grades).sum()
    return loss, verdict_ce, hits


def evaluate(
    model: Any,
    examples: Sequence[Example],
    pad_id: int,
    firsts: Sequence[int],
    device: Any,
    batch_size: int,
    autocast: Any,
) -> dict[str, float]:
    import torch

    model.eval()
    token_ce = verdict_ce = hits = 0.0
    with torch.no_grad(), autocast:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            loss, vce, h = batch_losses(model, batch, pad_id, firsts, device)
            token_ce += float(loss) * len(batch)
            verdict_ce += float(vce) * len(batch)
            hits += float(h)
    model.train()
    n = len(examples)
    return {
        "token_ce": round(token_ce / n, 4),
        "verdict_ce": round(verdict_ce / n, 4),
        "verdict_accuracy": round(hits / n, 4),
    }


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return name


def resolve_precision(precision: str, device: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return "fp32"
    return "bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "fp32"


def save_adapter(model: Any, folder: Path) -> None:
    """The peft adapter alone (config + weights), its weights cast to bfloat16 for transport."""
    import torch
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder)
    weights = folder / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights)


def merge_adapter(base: Path, adapter: Path, out: Path) -> Path:
    """base + ``adapter`` (``save_adapter``'s folder) → a merged float32 checkpoint at ``out`` (teacher
    ``hf:OUT``) with the base's tokenizer; how a checkpoint fine-tuned elsewhere is rebuilt here."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path, what in (
        (base / "config.json", "base checkpoint"),
        (adapter / "adapter_config.json", "adapter"),
    ):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {what} there")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter, torch_dtype=torch.float32).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def run_lora_sft(
    records: Sequence[CoTRecord],
    out: Path,
    config: LoRAConfig,
    *,
    base: Path = DEFAULT_HF_BASE,
    progress: bool = True,
    source: str = "",
) -> dict[str, Any]:
    """LoRA-fine-tune ``base`` on ``records``; writes the merged checkpoint, ``adapter/`` and
    ``lora.json`` to ``out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(
            f"base checkpoint not found (no config.json): {base}; run `relevance teacher convert-base`"
        )
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.chat_template is None:
        raise ValueError(f"{base}: the tokenizer has no chat template; the teacher prompt needs one")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    selected = list(records)
    if config.max_records is not None and len(selected) > config.max_records:
        selected = random.Random(config.seed).sample(selected, config.max_records)
    examples, counts = build_examples(selected, tokenizer, config)
    if not examples:
        raise ValueError(f"no usable training example among {len(records)} records ({counts})")
    levels = next(r.grade_levels for r in selected if r.grade in r.grade_levels)
    firsts = level_first_tokens(text_tokenizer(tokenizer), levels)
    train, held = split_by_query(examples, config.eval_fraction, config.seed)
    if not train:
        raise ValueError(f"all {len(examples)} examples fell in the held-out queries; lower eval_fraction")
    held = random.Random(config.seed).sample(held, min(len(held), config.max_eval_examples))
    held.sort(key=lambda e: len(e.input_ids))  # eval batches of similar lengths: little padding

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
            target_modules=list(config.target_modules), task_type="CAUSAL_LM",
        ),
    )  # fmt: skip
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base_parameters = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    steps_per_epoch = len(epoch_batches(train, config.batch_size, random.Random(0)))
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / (config.warmup_steps + 1))
    )

    history: list[dict[str, Any]] = []
    if held:
        history.append(
            {"step": 0, **evaluate(model, held, pad_id, firsts, device, config.batch_size, autocast)}
        )
    best = {"step": 0, "verdict_ce": history[0]["verdict_ce"] if history else math.inf}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    train_losses: list[float] = []
    stop_reason = "steps done"
    batches: list[list[Example]] = []
    rng = random.Random(config.seed)
    model.train()
    bar = tqdm(total=total_steps, desc="lora sft", disable=not progress, file=sys.stderr)
    step = 0
    tokens_trained = 0  # real (unpadded) tokens of the trained batches: the tokens/s of the report
    loop_started = time.perf_counter()
    while step < total_steps:
        if not batches:
            batches = epoch_batches(train, config.batch_size, rng)
        batch = batches.pop()
        with autocast:
            loss, _, _ = batch_losses(model, batch, pad_id, firsts, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad()
        step += 1
        tokens_trained += sum(len(e.input_ids) for e in batch)
        train_losses.append(round(loss.item(), 4))
        bar.update(1)
        bar.set_postfix(loss=f"{train_losses[-1]:.3f}")
        out_of_time = (
            config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
        )
        if out_of_time:
            stop_reason = f"max_minutes ({config.max_minutes}) reached"
        # Evaluate at the last step too, so that the steps since the previous evaluation can win.
        if held and (step % config.eval_every == 0 or step == total_steps or out_of_time):
            history.append({"step": step, "train_token_ce_recent": round(sum(train_losses[-config.eval_every :]) / len(train_losses[-config.eval_every :]), 4),
                            **evaluate(model, held, pad_id, firsts, device, config.batch_size, autocast)})  # fmt: skip
            bar.write(f"held-out eval: {history[-1]}", file=sys.stderr)
            if history[-1]["verdict_ce"] < best["verdict_ce"]:
                best = {"step": step, "verdict_ce": history[-1]["verdict_ce"]}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
            elif (step - best["step"]) // config.eval_every >= config.patience:
                stop_reason = f"early stop: held-out verdict CE not better than step {best['step']} for {config.patience} evaluations"
                break
        if out_of_time:
            break
    bar.close()
    loop_s = time.perf_counter() - loop_started
    if held:
        model.load_state_dict(best_state, strict=False)  # the adapter with the best held-out verdict CE
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(model, out / ADAPTER_DIR)
    merged = model.merge_and_unload()
    merged.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        "method": "LoRA SFT on CoT records (assistant tokens only), merged",
        "base": str(base),
        "records": source,
        "prompt_version": PROMPT_VERSION,
        "levels": list(levels),
        "config": config.model_dump(),
        "device": device,
        "precision": precision,
        "input_records": len(records),
        "selected_records": len(selected),
        "example_counts": counts,
        "train_examples": len(train),
        "held_out_examples": len(held),
        "held_out_queries": len({e.group for e in held}),
        "trainable_parameters": trainable,
        "steps": step,
        "tokens_trained": tokens_trained,
        "train_loop_s": round(loop_s, 2),  # the steps and held-out evaluations, not loading or saving
        "base_parameters": base_parameters,
        "stop_reason": stop_reason,
        "best_step": best["step"] if held else None,  # None: no held-out queries, the last adapter is kept
        "eval_history": history,
        "train_token_ce_first": train_losses[:1],
        "train_token_ce_last": train_losses[-1:],
        "elapsed_s": round(time.perf_counter() - started, 1),
        "teacher_spec": f"hf:{out}",
    }
    (out / LORA_REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
