"""transformers backend on a real (tiny, randomly initialised) Llama checkpoint with SmolLM2's tokenizer.

The weights are random, so the judgements are meaningless; what is checked is the protocol: the
tokenizer's chat template, the verdict position, and a distribution read from the model's logits.
"""

from __future__ import annotations

import math

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
