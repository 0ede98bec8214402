"""An OpenAI-compatible teacher that hangs or answers garbage: /explain fails cleanly (an error
naming the teacher, or a record marked unparsed), never a 500 or a hang, and /score is unaffected.
The faulty teacher is a real HTTP server on loopback that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from service_harness import Server, tiny_bundle
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from loadtest.servers import free_port

pytestmark = pytest.mark.redis

KEY = "faults-test-key-0001"
ITEM = {"id": "sofa", "title": "Three-seat red leather sofa"}


def _completion(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class FaultyTeacher:
    """/v1/chat/completions answering in the mode set by the test."""

    def __init__(self) -> None:
        self.mode = "html"
        self.port = free_port()

        async def chat(request: Request) -> Response:
            await request.body()
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "html":
                return PlainTextResponse("<html>502 upstream</html>", status_code=200, media_type="text/html")
            if self.mode == "wrong-shape":
                return JSONResponse({"id": "x", "object": "chat.completion"})
            return JSONResponse(_completion("I am a teapot; relevance is a social construct."))

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    teacher = FaultyTeacher()
    service = Server(
        tiny_bundle(root / "cross", "cross"),
        root / "faults.log",
        api_keys=KEY,
        explain_teacher=f"openai:stub@http://127.0.0.1:{teacher.port}/v1?api=chat",
        explain_mode="score",
        explain_timeout_s=2,
        explain_breaker_failures=100,
        redis_prefix=f"test-faults-{uuid.uuid4().hex[:8]}:",
    )
    yield teacher, service
    service.stop()
    teacher.stop()


def _explain(service: Server, item_id: str) -> httpx.Response:
    return httpx.post(
        f"{service.url}/explain",
        headers={"X-API-Key": KEY},
        timeout=30,
        json={"query": "red leather sofa", "item": dict(ITEM, id=item_id)},
    )


@pytest.mark.parametrize("mode", ["html", "wrong-shape"])
def test_garbage_http_answers_fail_explain_with_502_naming_the_teacher(faulty, mode):
    teacher, service = faulty
    teacher.mode = mode
    response = _explain(service, f"garbage-{mode}")
    assert response.status_code == 502, response.text
    assert "teacher backend failed" in response.json()["error"]["message"]
    assert (
        httpx.post(f"{service.url}/score", json={"query": "sofa", "items": [ITEM]}, timeout=30).status_code
        == 200
    )


def test_garbage_text_is_kept_as_an_unparsed_record_not_a_grade(faulty):
    teacher, service = faulty
    teacher.mode = "nonsense"
    response = _explain(service, "nonsense")
    assert response.status_code == 200, response.text
    record = response.json()["explanation"]
    assert record["parse_ok"] is False and record["parse_errors"]
    assert "teapot" in record["raw_output"]  # the raw output is kept for the ops person to read


def test_a_hung_teacher_gives_504_in_time_while_score_answers(faulty):
    teacher, service = faulty
    teacher.mode = "hang"
    started = time.monotonic()
    response = _explain(service, "hang")
    assert response.status_code == 504 and response.json()["error"]["code"] == "explain_timeout"
    assert time.monotonic() - started < 20  # bounded by RELEVANCE_EXPLAIN_TIMEOUT_S, not by the teacher
    assert (
        httpx.post(f"{service.url}/score", json={"query": "sofa", "items": [ITEM]}, timeout=30).status_code
        == 200
    )
