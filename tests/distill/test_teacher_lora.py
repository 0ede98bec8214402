"""`relevance teacher sft-lora`: training text in the teacher's protocol, assistant-only loss, a real LoRA run.

The model is a tiny randomly initialised Llama with SmolLM2's tokenizer and chat template (the
pattern of test_teacher_transformers.py): what is checked is the protocol and the training
mechanics, not relevance quality. The real SmolLM2 run is in docs/RESULTS.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_llama import save_tiny_llama, smollm2_tokenizer

from distill.data.bundled import load_bundled
from distill.teacher.bootstrap import bootstrap_record
from distill.teacher.lora import (
    IGNORE,
    LoRAConfig,
    batch_losses,
    build_example,
    build_examples,
    evaluate,
    merge_adapter,
    run_lora_sft,
    split_by_query,
    text_tokenizer,
)
from distill.teacher.lora_gguf import export_gguf, permute_for_rope
from teacher import load_teacher
from teacher.backends.base import level_first_tokens
from teacher.parser import parse_output
from teacher.prompt import COT_PREFILL, GRADE_KEY_PREFIX, SCORE_PREFILL, build_messages

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def base(tokenizer, tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-base"), tokenizer)


@pytest.fixture(scope="module")
def records():
    pairs = load_bundled("train")[:12]
    return [bootstrap_record(pair) for pair in pairs]


def _evidence_record(records):
    return next(r for r in records if r.dimensions and r.dimensions[0].evidence)


@pytest.mark.parametrize("mode", ["cot", "score"])
def test_labels_cover_exactly_the_assistant_turn(tokenizer, records, mode) -> None:
    record = _evidence_record(records)
    example = build_example(record, mode, tokenizer, record.grade_levels)
    prompt = tokenizer.apply_chat_template(
        build_messages(record.query, record.item_text, mode, record.grade_levels),
        tokenize=False,
        add_generation_prompt=True,
    )
    n = example.answer_start
    assert tokenizer.decode(example.input_ids[:n]) == prompt  # the teacher's prompt, chat template included
    assert example.labels[:n] == [IGNORE] * n  # no loss on the prompt ...
    assert example.labels[n:] == example.input_ids[n:]  # ... and on every assistant token
    answer = tokenizer.decode(example.input_ids[n:])
    assert answer.startswith(COT_PREFILL if mode == "cot" else SCORE_PREFILL)
    assert answer.endswith(f'{GRADE_KEY_PREFIX}{record.grade}"}}{tokenizer.eos_token}')
    # The verdict position: the prompt + answer up to `"grade": "` as the backends tokenise it,
    # followed by the grade level's first token.
    head = prompt + answer[: answer.rindex(GRADE_KEY_PREFIX) + len(GRADE_KEY_PREFIX)]
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    assert example.input_ids[: example.verdict_index + 1] == head_ids
    firsts = level_first_tokens(text_tokenizer(tokenizer), record.grade_levels)
    assert example.input_ids[example.verdict_index + 1] == firsts[record.grade_levels.index(record.grade)]


def test_cot_target_is_what_the_parser_reads(tokenizer, records) -> None:
    record = _evidence_record(records)
    example = build_example(record, "cot", tokenizer, record.grade_levels)
    answer = tokenizer.decode(example.input_ids[example.answer_start :], skip_special_tokens=True)
    parsed = parse_output(answer, record.query, record.item_text, record.grade_levels)
    assert parsed.ok, parsed.errors
    assert parsed.grade == record.grade and parsed.rationale == record.rationale
    assert [e.text for e in parsed.dimensions[0].evidence] == [e.text for e in record.dimensions[0].evidence]
    assert all(e.verified for e in parsed.dimensions[0].evidence)


def test_loss_is_the_mean_over_assistant_tokens_only(base, tokenizer, records) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    batch = [build_example(r, "score", tokenizer, r.grade_levels) for r in records[:2]]
    batch.append(
        build_example(records[2], "cot", tokenizer, records[2].grade_levels)
    )  # different lengths: padding
    firsts = level_first_tokens(text_tokenizer(tokenizer), records[0].grade_levels)
    with torch.no_grad():
        loss, verdict_ce, _ = batch_losses(model, batch, tokenizer.eos_token_id, firsts, "cpu")
        # Reference: full logits, every assistant token of every example, nothing else.
        terms, verdict_terms = [], []
        for e in batch:
            logits = model(torch.tensor([e.input_ids])).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            terms += [-logp[t - 1, e.input_ids[t]] for t in range(e.answer_start, len(e.input_ids))]
            verdict_terms.append(-torch.log_softmax(logits[e.verdict_index, firsts].float(), dim=0)[e.grade])
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-4)
    assert float(verdict_ce) == pytest.approx(float(torch.stack(verdict_terms).mean()), rel=1e-4)


def test_held_out_split_is_by_query(tokenizer, records) -> None:
    examples, _ = build_examples(records, tokenizer, LoRAConfig())
    train, held = split_by_query(examples, 0.5, seed=0)
    assert train and held and len(train) + len(held) == len(examples)
    assert not {e.group for e in train} & {e.group for e in held}


def test_too_long_and_ungraded_records_are_counted_not_trained(tokenizer, records) -> None:
    ungraded = records[0].model_copy(update={"grade": None})
    examples, counts = build_examples([ungraded, *records[1:3]], tokenizer, LoRAConfig(max_length=400))
    assert counts["skipped_no_grade"] == 1
    assert (
        counts["skipped_too_long_cot"] == 2 and counts["examples_score"] == 2
    )  # the CoT prompt alone is > 400 tokens
    assert {e.mode for e in examples} == {"score"}


async def test_lora_run_trains_merges_and_serves_as_hf_teacher(base, tokenizer, records, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    config = LoRAConfig(
        lr=5e-2, batch_size=4, epochs=2.0, max_steps=12, eval_fraction=0.0, warmup_steps=0, rank=4, alpha=8, dropout=0.0,
        threads=1, precision="fp32", target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )  # fmt: skip
    examples, _ = build_examples(records, tokenizer, config)
    firsts = level_first_tokens(text_tokenizer(tokenizer), records[0].grade_levels)
    no_autocast = torch.autocast("cpu", enabled=False)
    before = evaluate(
        AutoModelForCausalLM.from_pretrained(base),
        examples,
        tokenizer.eos_token_id,
        firsts,
        "cpu",
        4,
        no_autocast,
    )

    report = run_lora_sft(records, out, config, base=base, progress=False)
    assert report["steps"] == 12 and report["train_examples"] == len(examples) and report["device"] == "cpu"

    # The merged checkpoint differs from the base exactly in the LoRA-targeted projections.
    tuned, original = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    changed = {name for name in tuned if not torch.equal(tuned[name], original[name])}
    assert changed and all(name.split(".")[-2] in config.target_modules for name in changed)
    after = evaluate(
        AutoModelForCausalLM.from_pretrained(out),
        examples,
        tokenizer.eos_token_id,
        firsts,
        "cpu",
        4,
        no_autocast,
    )
    # It learned the training records (a tiny random model starts near ln(vocab) and moves slowly;
    # the run is deterministic: fixed seeds, fp32, one thread).
    assert after["token_ce"] < before["token_ce"] - 0.1, (before, after)
    assert after["verdict_ce"] < before["verdict_ce"], (before, after)

    teacher = load_teacher(f"hf:{out}?threads=1")
    pair = load_bundled("train")[0]
    record = await teacher.judge(pair.query, pair.item.as_mapping(), mode="score")
    assert record.distribution_source == "logits" and record.parse_ok
    assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)

    # The bf16 adapter alone (what a GPU run brings back) rebuilds the merged model, up to its rounding.
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and all(t.dtype == torch.bfloat16 for t in adapter.values())
    rebuilt = load_file(merge_adapter(base, out / "adapter", tmp_path / "rebuilt") / "model.safetensors")
    assert rebuilt.keys() == tuned.keys()
    for name in changed:
        delta, error = tuned[name] - original[name], rebuilt[name] - tuned[name]
        assert error.abs().max() <= 0.02 * delta.abs().max() + 1e-6, name
    with pytest.raises(FileNotFoundError, match="no adapter there"):
        merge_adapter(base, tmp_path / "missing", tmp_path / "never")

    # A base not made by `relevance teacher convert-base` has no GGUF to copy: said, not faked.
    result = export_gguf(out, echo=lambda _: None)
    assert result["written"] is False and "source.json" in result["reason"]
    assert not (out / "model.gguf").exists()


def test_rope_permutation_is_what_transformers_gguf_loader_undoes() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    undo = LlamaTensorProcessor(config={})._reverse_permute_weights
    q = rng.normal(size=(9 * 64, 576))
    k = rng.normal(size=(3 * 64, 576))
    assert np.array_equal(undo(permute_for_rope(q, 9), 9, 9), q)
    assert np.array_equal(undo(permute_for_rope(k, 3), 9, 3), k)


def test_held_out_queries_are_evaluated_and_the_best_adapter_recorded(base, records, tmp_path) -> None:
    config = LoRAConfig(
        max_steps=2, batch_size=4, eval_fraction=0.5, eval_every=1, threads=1, precision="fp32"
    )
    report = run_lora_sft(records, tmp_path / "lora", config, base=base, progress=False)
    assert report["held_out_examples"] > 0 and report["held_out_queries"] > 0
    assert [h["step"] for h in report["eval_history"]] == [0, 1, 2]
    best = min(report["eval_history"], key=lambda h: h["verdict_ce"])
    assert report["best_step"] == best["step"]
    assert all(set(h) >= {"token_ce", "verdict_ce", "verdict_accuracy"} for h in report["eval_history"])
