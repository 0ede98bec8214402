"""transformers backend on a real (tiny, randomly initialised) Llama checkpoint with SmolLM2's tokenizer.

The weights are random, so the judgements are meaningless; what is checked is the protocol: the
tokenizer's chat template, the verdict position, and a distribution read from the model's logits.
"""

from __future__ import annotations

import math
import threading

import pytest
from tiny_llama import save_tiny_llama

from core.grades import GRADE_LEVELS
from teacher import Teacher, load_teacher
from teacher.prompt import SCORE_PREFILL, build_messages

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

ITEM = {"id": "m1", "title": "Logitech M185 Wireless Mouse", "color": "Grey"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


async def test_score_mode_reads_logits_at_the_verdict_position(checkpoint) -> None:
    import torch

    teacher = load_teacher(f"hf:{checkpoint}")
    record = await teacher.judge("wireless mouse", ITEM, mode="score")
    assert record.distribution_source == "logits" and record.raw_output.startswith(SCORE_PREFILL)
    assert list(record.grade_distribution) == list(GRADE_LEVELS)
    assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)

    # Same numbers as a direct forward pass over the chat-templated prompt + prefill.
    backend = teacher.backend
    prompt = backend.render_prompt(build_messages(record.query, record.item_text, "score", GRADE_LEVELS))
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = backend.tokenize(prompt + SCORE_PREFILL)
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids])).logits[0, -1]
    firsts = [backend.tokenize(prompt + SCORE_PREFILL + level)[len(ids)] for level in GRADE_LEVELS]
    expected = torch.softmax(logits[firsts].double(), dim=0).tolist()
    assert [record.grade_distribution[level] for level in GRADE_LEVELS] == pytest.approx(expected, rel=1e-5)


async def test_cot_mode_record_is_well_formed(checkpoint) -> None:
    teacher = Teacher(load_teacher(f"hf:{checkpoint}").backend, max_tokens=12)
    record = await teacher.judge("wireless mouse", ITEM, mode="cot")
    # Random weights never reach the grade key within 12 tokens: partial output kept, score-mode verdict.
    assert record.raw_output.startswith('{"dimensions": [')
    assert not record.parse_ok and record.distribution_source == "logits"
    assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)


async def test_a_cancelled_generation_stops_within_a_token(checkpoint) -> None:
    import asyncio
    import time

    from core.grades import GRADE_LEVELS as LEVELS
    from teacher.backends.base import VerdictRequest
    from teacher.prompt import COT_PREFILL

    backend = load_teacher(f"hf:{checkpoint}").backend
    # Random weights never write the grade key: this generation would run all 3000 tokens.
    request = VerdictRequest(
        messages=build_messages("wireless mouse", "Logitech M185", "cot", LEVELS),
        prefill=COT_PREFILL,
        mode="cot",
        levels=LEVELS,
        max_tokens=3000,
    )
    task = asyncio.ensure_future(backend.verdict(request))
    await asyncio.sleep(0.5)
    assert not task.done()
    cancelled = time.monotonic()
    task.cancel()
    while backend._lock.locked() and time.monotonic() - cancelled < 5:
        await asyncio.sleep(0.01)
    assert not backend._lock.locked(), "the generation went on after its caller was cancelled"
    assert time.monotonic() - cancelled < 1.0


async def test_batched_verdicts_are_the_one_by_one_verdicts(checkpoint) -> None:
    """verdict_batch (the GPU labelling path) pads rows of different lengths together; each row's
    text and distribution must be what ``verdict`` gives for it alone."""
    teacher = Teacher(load_teacher(f"hf:{checkpoint}").backend, max_tokens=10)
    backend = teacher.backend
    items = [
        ITEM,
        {"id": "m2", "title": "Mouse"},
        {"id": "m3", "title": "Cordless optical mouse with a long description " * 4, "brand": "Acme"},
    ]
    requests = [
        teacher.prepare(query, item, mode).request
        for query in ("wireless mouse", "m")
        for item in items
        for mode in ("score", "cot")
    ]
    done: list[int] = []
    # A budget that puts two or three rows of unequal length in a batch: padding is exercised.
    width = max(len(backend.tokenize(backend.render_prompt(r.messages))) for r in requests)
    batched = backend.verdict_batch(requests, batch_tokens=3 * (width + 10), progress=done.append)
    assert sum(done) == len(requests)
    for request, got in zip(requests, batched, strict=True):
        alone = backend._verdict_blocking(request, threading.Event())
        assert got.text == alone.text and got.reached_verdict == alone.reached_verdict
        if alone.distribution is None:
            assert got.distribution is None  # a CoT that never reached the grade (random weights)
        else:
            assert got.distribution.keys() == alone.distribution.keys()
            for level, p in alone.distribution.items():
                assert got.distribution[level] == pytest.approx(p, abs=1e-5)
    assert any(r.reached_verdict for r in batched) and any(not r.reached_verdict for r in batched)


def test_batched_verdicts_refuse_sampling(checkpoint) -> None:
    from dataclasses import replace

    teacher = Teacher(load_teacher(f"hf:{checkpoint}").backend)
    request = replace(teacher.prepare("mouse", ITEM, "score").request, temperature=0.7)
    with pytest.raises(ValueError, match="request 0: verdict_batch is greedy only"):
        teacher.backend.verdict_batch([request])


async def test_a_batched_teacher_gives_the_records_judge_gives(checkpoint) -> None:
    """`hf:…?batch_tokens=N` loads a BatchedTeacher: its judge_many (what `relevance teacher annotate`
    calls) makes the records judge makes, the score-mode fallback of a cut-off CoT included."""
    from types import SimpleNamespace

    from core.item import Item
    from teacher.runtime import BatchedTeacher

    batched = load_teacher(f"hf:{checkpoint}?batch_tokens=2048&max_tokens=10")
    assert isinstance(batched, BatchedTeacher) and batched.batch_tokens == 2048
    single = Teacher(batched.backend, max_tokens=10)
    pairs = [
        SimpleNamespace(query=q, item=Item.model_validate(item), label=label)
        for q, item, label in (
            ("wireless mouse", ITEM, "Exact"),
            ("usb mouse", {"id": "m2", "title": "Mouse"}, None),
        )
    ]
    for mode in ("score", "cot"):
        got = await batched.judge_many(pairs, mode=mode)
        for pair, record in zip(pairs, got, strict=True):
            expected = await single.judge(pair.query, pair.item.as_mapping(), label=pair.label, mode=mode)
            assert record.label == pair.label and record.raw_output == expected.raw_output
            assert record.parse_errors == expected.parse_errors
            assert record.distribution_source == expected.distribution_source == "logits"
            assert record.grade == expected.grade
            for level, p in expected.grade_distribution.items():
                assert record.grade_distribution[level] == pytest.approx(p, abs=1e-5)
    # cut off before the grade (random weights): the verdict was read in score mode, as judge does
    assert "grade distribution read in score mode (no CoT)" in got[0].parse_errors


def test_batch_options_are_checked_in_the_spec(checkpoint) -> None:
    from teacher.specs import TeacherSpecError

    with pytest.raises(TeacherSpecError, match="apply to hf specs only"):
        load_teacher("llamacpp?batch_tokens=100")
    with pytest.raises(TeacherSpecError, match="dtype must be one of"):
        load_teacher(f"hf:{checkpoint}?dtype=int8")
    with pytest.raises(TeacherSpecError, match="greedy: temperature must be 0"):
        load_teacher(f"hf:{checkpoint}?batch_tokens=100&temperature=0.5")
