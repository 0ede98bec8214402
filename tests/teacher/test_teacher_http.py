"""OpenAI-compatible HTTP teacher: against llama.cpp's real server (``llama_server``, tests/conftest.py), and a
real tiny server for failures."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections import Counter

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from core.grades import GRADE_LEVELS
from teacher import Teacher, load_teacher
from teacher.backends.openai_http import OpenAIBackend, TeacherHTTPError

pytestmark = pytest.mark.llm

QUERY = "wireless mouse"
ITEM = {"id": "m1", "title": "Logitech M185 Wireless Mouse, 2.4GHz with USB Mini Receiver", "color": "Grey"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_score_mode_distribution_from_server_logprobs(llama_server: str) -> None:
    # The completions API with the prefilled ChatML prompt: the tiny model need not follow JSON rules.
    teacher = load_teacher(f"openai:smollm2@{llama_server}?api=completions")
    try:
        record = await teacher.judge(QUERY, ITEM, mode="score")
    finally:
        await teacher.aclose()
    assert record.teacher_id == "openai:smollm2"
    assert record.raw_output.startswith('{"grade": "') and record.parse_ok, record.parse_errors
    assert record.distribution_source == "logprobs"
    assert list(record.grade_distribution) == list(GRADE_LEVELS)
    assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)


async def test_without_logprobs_the_record_is_still_well_formed(llama_server: str) -> None:
    backend = OpenAIBackend(base_url=llama_server, model="smollm2", top_logprobs=0, api="completions")
    teacher = Teacher(backend, votes=2)
    try:
        record = await teacher.judge(QUERY, ITEM, mode="score")
    finally:
        await teacher.aclose()
    # The 135M model often samples no level name at all ("1.5"): then there is no vote to count.
    assert record.distribution_source in ("votes", "none")
    if record.distribution_source == "votes":
        assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)
    else:
        assert record.grade_distribution == {} and record.votes == 0 and not record.parse_ok


# --- failure handling against a real tiny server on loopback -----------------------------------

_COMPLETION = {
    "choices": [
        {
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": '{"grade": "Exact"}'},
            "logprobs": {
                "content": [
                    {"token": '{"', "logprob": 0.0, "top_logprobs": []},
                    {"token": "grade", "logprob": 0.0, "top_logprobs": []},
                    {"token": '":', "logprob": 0.0, "top_logprobs": []},
                    {"token": ' "', "logprob": 0.0, "top_logprobs": []},
                    {
                        "token": "Ex",
                        "logprob": -0.1,
                        "top_logprobs": [
                            {"token": "Ex", "logprob": -0.1},
                            {"token": "Part", "logprob": -2.5},
                            {"token": "I", "logprob": -4.0},
                            {"token": "{", "logprob": -6.0},
                        ],
                    },
                    {"token": 'act"}', "logprob": 0.0, "top_logprobs": []},
                ]
            },
        }
    ]
}


@pytest.fixture(scope="module")
def tiny_server():
    """Real uvicorn server: /fail500 fails twice then answers, /slow sleeps, /bad is a 400, /busy a 429,
    /votes/completions samples grades from a fixed sequence."""
    calls: Counter[str] = Counter()
    app = FastAPI()
    samples = iter(["Exact", "Exact", "1.5", "Partial", "Exact"])

    @app.post("/votes/completions")
    async def votes() -> JSONResponse:
        calls["votes"] += 1
        return JSONResponse({"choices": [{"text": next(samples), "finish_reason": "stop"}]})

    @app.post("/{kind}/chat/completions")
    async def completions(kind: str) -> JSONResponse:
        calls[kind] += 1
        if kind == "fail500" and calls[kind] <= 2:
            return JSONResponse({"error": "overloaded"}, status_code=500)
        if kind == "slow":
            await asyncio.sleep(2.0)
        if kind == "bad":
            return JSONResponse({"error": "unknown model"}, status_code=400)
        if kind == "busy":
            return JSONResponse({"error": "rate limited"}, status_code=429)
        return JSONResponse(_COMPLETION)

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", calls
    server.should_exit = True
    thread.join(timeout=10)


async def test_5xx_is_retried_with_backoff_then_succeeds(tiny_server) -> None:
    base, calls = tiny_server
    teacher = Teacher(OpenAIBackend(base_url=f"{base}/fail500", model="m", backoff_s=0.05, max_retries=3))
    record = await teacher.judge(QUERY, ITEM, mode="score")
    await teacher.aclose()
    assert calls["fail500"] == 3
    expected = {"Irrelevant": -4.0, "Partial": -2.5, "Exact": -0.1}
    total = sum(math.exp(v) for v in expected.values())
    for level, logprob in expected.items():
        assert math.isclose(record.grade_distribution[level], math.exp(logprob) / total)
    assert record.distribution_source == "logprobs" and record.grade == "Exact" and record.parse_ok


async def test_timeouts_are_retried_then_reported(tiny_server) -> None:
    base, calls = tiny_server
    backend = OpenAIBackend(base_url=f"{base}/slow", model="m", timeout_s=0.3, backoff_s=0.01, max_retries=1)
    with pytest.raises(TeacherHTTPError, match="ReadTimeout after 2 attempts"):
        await Teacher(backend).judge(QUERY, ITEM, mode="score")
    await backend.aclose()
    assert calls["slow"] == 2


async def test_4xx_is_not_retried_but_429_is(tiny_server) -> None:
    base, calls = tiny_server
    bad = OpenAIBackend(base_url=f"{base}/bad", model="m", backoff_s=0.01)
    with pytest.raises(TeacherHTTPError, match="HTTP 400 after 1 attempt"):
        await Teacher(bad).judge(QUERY, ITEM, mode="score")
    busy = OpenAIBackend(base_url=f"{base}/busy", model="m", backoff_s=0.01, max_retries=2)
    with pytest.raises(TeacherHTTPError, match="HTTP 429 after 3 attempt"):
        await Teacher(busy).judge(QUERY, ITEM, mode="score")
    await bad.aclose()
    await busy.aclose()
    assert calls["bad"] == 1 and calls["busy"] == 3


async def test_votes_count_only_samples_that_name_a_grade(tiny_server) -> None:
    base, calls = tiny_server
    backend = OpenAIBackend(base_url=f"{base}/votes", model="m", top_logprobs=0, api="completions")
    record = await Teacher(backend, votes=4).judge(QUERY, ITEM, mode="score")
    await backend.aclose()
    # One greedy answer, then 4 samples at the vote temperature; "1.5" names no grade.
    assert calls["votes"] == 5
    assert record.distribution_source == "votes" and record.votes == 3
    assert record.grade_distribution == pytest.approx({"Irrelevant": 0.0, "Partial": 1 / 3, "Exact": 2 / 3})
    assert record.grade == "Exact"


async def test_api_key_is_sent_from_the_environment(tiny_server, monkeypatch) -> None:
    base, _ = tiny_server
    monkeypatch.setenv("RELEVANCE_TEACHER_API_KEY", "sk-test-123")
    backend = OpenAIBackend(base_url=f"{base}/ok", model="m")
    assert backend._client.headers["Authorization"] == "Bearer sk-test-123"
    await backend.aclose()
