"""The embedded teacher on the real local model (SmolLM2-135M-Instruct GGUF via llama.cpp)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.cot import CoTRecord
from core.grades import GRADE_LEVELS
from core.item import pair_hash
from core.text_template import DEFAULT_TEMPLATE
from teacher import Teacher, TeacherSpecError, load_teacher
from teacher.backends.llamacpp import default_gguf_path
from teacher.prompt import SCORE_PREFILL, build_messages

pytestmark = pytest.mark.llm

QUERY = "110cfm bathroom exhaust fan without light"
ITEM = {
    "id": "B076Q7V5WX",
    "title": "Panasonic FV-0511VQ1 WhisperCeiling DC Ventilation Fan, Quiet",
    "color": "White",
}


# One thread: the tests run beside other jobs, and llama.cpp's threads wait on each other when starved.
SPEC = "llamacpp?threads=1"


@pytest.fixture(scope="module")
def teacher():
    return load_teacher(SPEC)


def _check_distribution(record: CoTRecord) -> None:
    assert list(record.grade_distribution) == list(GRADE_LEVELS)
    assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in record.grade_distribution.values())
    assert record.grade == max(record.grade_distribution, key=record.grade_distribution.__getitem__)


def test_chat_template_of_the_gguf_is_applied(teacher) -> None:
    prompt = teacher.backend.render_prompt(build_messages("q", "i", "score", GRADE_LEVELS))
    assert prompt.startswith("<|im_start|>system\nYou judge")
    assert prompt.endswith("<|im_start|>user\nQuery: q\nItem: i<|im_end|>\n<|im_start|>assistant\n")


async def test_score_mode_reads_the_verdict_logits(teacher) -> None:
    record = await teacher.judge(QUERY, ITEM, label="Exact", mode="score")
    assert record.parse_ok, record.parse_errors
    assert record.mode == "score" and record.distribution_source == "logits"
    assert record.raw_output.startswith(SCORE_PREFILL)
    assert record.item_text == DEFAULT_TEMPLATE.item_text(ITEM)
    assert record.pair_id == pair_hash(QUERY, ITEM) and record.label == "Exact"
    _check_distribution(record)


async def test_cot_mode_returns_a_well_formed_record(teacher) -> None:
    record = await Teacher(teacher.backend, max_tokens=160).judge(QUERY, ITEM, mode="cot")
    # A 135M model's reasoning may or may not parse; the record must be well formed either way.
    assert record.mode == "cot" and record.raw_output.startswith('{"dimensions": [')
    assert record.distribution_source == "logits"
    assert record.parse_ok == (not record.parse_errors)
    _check_distribution(record)
    for dim in record.dimensions:
        for span in dim.evidence:
            text = record.query if span.source == "query" else record.item_text
            assert (text[span.start : span.end] == span.text) if span.verified else span.start is None


async def test_truncated_cot_keeps_raw_output_and_falls_back_to_score_mode(teacher) -> None:
    short = load_teacher(SPEC, max_tokens=6)
    assert short.backend is teacher.backend  # one model instance per GGUF
    record = await short.judge(QUERY, ITEM, mode="cot")
    assert not record.parse_ok
    assert "output ended before the grade (max_tokens reached)" in record.parse_errors
    assert "grade distribution read in score mode (no CoT)" in record.parse_errors
    assert record.raw_output.startswith('{"dimensions": [')
    _check_distribution(record)


def test_verdict_logits_equal_a_logits_all_evaluation(teacher) -> None:
    """The cheap last-token logits read equals llama.cpp's full per-position scores."""
    from llama_cpp import Llama

    backend = teacher.backend
    text = backend.render_prompt(build_messages(QUERY, ITEM["title"], "score", GRADE_LEVELS)) + SCORE_PREFILL
    tokens = backend.tokenize(text)
    reference = Llama(
        model_path=str(default_gguf_path()), logits_all=True, n_ctx=1024, n_threads=1, verbose=False
    )
    try:
        reference.eval(tokens)
        ref = reference.scores[len(tokens) - 1].astype(np.float64)
    finally:
        reference.close()
    ref = ref - ref.max() - np.log(np.exp(ref - ref.max()).sum())
    assert np.abs(backend._eval(tokens) - ref).max() < 1e-3
    # The levels' first tokens are distinct for this tokenizer, so one evaluation reads all of them.
    firsts = {backend._continuation(tokens, text, level)[0] for level in GRADE_LEVELS}
    assert len(firsts) == len(GRADE_LEVELS)


def test_bad_specs_are_clear_errors() -> None:
    with pytest.raises(TeacherSpecError, match="unknown teacher spec"):
        load_teacher("gpt9")
    with pytest.raises(TeacherSpecError, match="unknown option 'temp'"):
        load_teacher("llamacpp?temp=1")
    with pytest.raises(TeacherSpecError, match="openai:MODEL@http"):
        load_teacher("openai:model-without-url")
