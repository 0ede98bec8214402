"""/explain end to end: a real uvicorn server on loopback, real Redis, the real local teacher.

The teacher is SmolLM2 via llama.cpp (``load_teacher("llamacpp")``) in score mode (a handful of
tokens per call). Its backend is wrapped by ``ControlledBackend``, which counts calls and can add a
delay (a hung backend) or fail (a dead one) on demand.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from loadtest.reliability import start_redis_server
from loadtest.servers import free_port
from service.app import create_app
from service.explain.components import ExplainComponents
from service.explain.settings import ExplainSettings
from service.settings import Settings
from service.state import app_state
from teacher import Teacher, load_teacher
from teacher.backends.base import Backend, VerdictRequest, VerdictResult

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.llm]

BUNDLE = Path("models/minilm-zero-shot-bi")
KEY = "explain-test-key-0001"
OTHER_KEY = "explain-test-key-0002"
ITEM = {
    "id": "sofa-1",
    "title": "Three-seat red leather sofa",
    "attributes": {"color": "red", "material": "leather"},
}
QUERY = "red leather sofa"


class ControlledBackend(Backend):
    """The real llama.cpp backend, plus a call counter and switches for delay, blocking and failure."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.backend_id = inner.backend_id
        self.calls = 0
        self.delay_s = 0.0  # awaits: a slow or hung server
        self.block_s = 0.0  # blocks its thread: a teacher that computes on the event loop it is called from
        self.fail = False

    async def verdict(self, request: VerdictRequest) -> VerdictResult:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.block_s:
            time.sleep(self.block_s)
        if self.fail:
            raise ConnectionError("teacher backend unreachable")
        return await self.inner.verdict(request)


class LiveServer:
    """create_app() served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, explain: ExplainSettings, backend: Backend, **service: Any) -> None:
        settings = Settings(
            bundle=BUNDLE, ort_intra_op_threads=1, log_level="WARNING", explain=explain, **service
        )
        self.app = create_app(settings)
        self.state = app_state(self.app)
        self.state.explain_teacher = lambda: Teacher(backend)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def explain(self) -> ExplainComponents:
        return self.state.explain

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def wait_metric(self, name: str, at_least: float, timeout_s: float = 5.0, **labels: str) -> float:
        """Background work (write-behind, a flight finishing after its caller gave up) lands shortly after."""
        deadline = time.monotonic() + timeout_s
        while self.metric(name, **labels) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.metric(name, **labels)


def settings(prefix: str, **overrides: Any) -> ExplainSettings:
    values: dict[str, Any] = {
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis_prefix": prefix,
        "api_keys": f"{KEY},{OTHER_KEY}",
        "explain_mode": "score",
        "explain_timeout_s": 120.0,  # generous: a loaded CI machine is slow; timeouts are tested apart
        "explain_rate_per_s": 0.01,
        "explain_rate_burst": 100,
        "explain_breaker_failures": 3,
        "explain_breaker_reset_s": 1.0,
        "item_store_ttl_s": 120,
    }
    values.update(overrides)
    return ExplainSettings(**values)


@pytest.fixture(scope="module")
def llama_backend() -> Backend:
    return load_teacher("llamacpp").backend


@pytest.fixture
def prefix() -> Iterator[str]:
    ping = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, text=True, check=False)
    if ping.stdout.strip() != "PONG":
        pytest.fail(
            f"these tests need Redis on 127.0.0.1:6379 (redis-server --port 6379 --save ''): {ping.stderr}"
        )
    value = f"test-explain-{uuid.uuid4().hex[:10]}:"
    yield value
    subprocess.run(
        ["sh", "-c", f"redis-cli -p 6379 --scan --pattern '{value}*' | xargs -r redis-cli -p 6379 del"],
        check=False,
        capture_output=True,
    )


@pytest.fixture
def make_server(
    llama_backend: Backend, prefix: str
) -> Iterator[Callable[..., tuple[LiveServer, ControlledBackend]]]:
    started: list[LiveServer] = []

    def make(service: dict[str, Any] | None = None, **overrides: Any) -> tuple[LiveServer, ControlledBackend]:
        backend = ControlledBackend(llama_backend)
        server = LiveServer(settings(prefix, **overrides), backend, **(service or {})).__enter__()
        started.append(server)
        return server, backend

    yield make
    for server in started:
        server.__exit__()


def explain(
    client: httpx.Client, item: dict[str, Any] = ITEM, key: str = KEY, query: str = QUERY
) -> httpx.Response:
    return client.post("/explain", json={"query": query, "item": item}, headers={"X-API-Key": key})


def score(client: httpx.Client, items: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/score", json={"query": QUERY, "items": items})


def lookup(client: httpx.Client, ids: list[str], key: str = KEY, **body: Any) -> httpx.Response:
    return client.post("/explain/items", json={"ids": ids, **body}, headers={"X-API-Key": key})


def test_items_are_looked_up_by_id_in_order_once_each_and_bad_lookups_name_the_field(make_server) -> None:
    server, _ = make_server(service={"max_items": 4})
    other = {"id": "lamp-9", "title": "Brass desk lamp"}
    with httpx.Client(base_url=server.url, timeout=180) as client:
        assert score(client, [ITEM, other]).status_code == 200
        assert server.wait_metric("relevance_item_store_writes_total", 2) == 2
        found = lookup(client, ["lamp-9", "gone", "sofa-1", "lamp-9"])
        assert found.status_code == 200, found.text
        assert found.json() == {
            "items": [{**other, "attributes": {}}, ITEM],  # as the item store keeps them
            "missing": ["gone"],
            "ambiguous": {},
        }
        assert lookup(client, ["sofa-1"], key="wrong-key-0000").status_code == 401
        for body, status, field in (
            ({"ids": []}, 422, "ids"),
            ({"ids": ["sofa-1", ""]}, 422, "ids[1]"),
            ({"ids": "sofa-1"}, 422, "ids"),
            ({"ids": ["a"], "extra": 1}, 422, "extra"),
            ({"ids": list("abcde")}, 413, "ids"),
        ):
            bad = client.post("/explain/items", json=body, headers={"X-API-Key": KEY})
            assert bad.status_code == status, (body, bad.text)
            assert bad.json()["error"]["field"] == field, bad.text
        assert "RELEVANCE_MAX_ITEMS" in bad.json()["error"]["message"]  # the last one: too many ids
    server, _ = make_server(item_store_enabled=False)
    with httpx.Client(base_url=server.url, timeout=180) as client:
        disabled = lookup(client, ["sofa-1"])
        assert disabled.status_code == 404 and disabled.json()["error"]["code"] == "item_store_disabled"


def test_explain_is_cached_on_the_second_call_and_found_by_id_after_score(make_server) -> None:
    server, backend = make_server()
    with httpx.Client(base_url=server.url, timeout=180) as client:
        first = explain(client)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["cached"] is False
        record = body["explanation"]
        assert record["teacher_id"].startswith("llamacpp:")
        assert record["prompt_version"]
        assert record["grade"] in ("Irrelevant", "Partial", "Exact")
        assert sum(record["grade_distribution"].values()) == pytest.approx(1.0)
        assert body["student"]["bundle"].startswith("minilm-zero-shot")
        assert 0.0 <= body["student"]["score"] <= 1.0
        assert body["timings_ms"]["teacher_ms"] > 0 and body["timings_ms"]["student_ms"] > 0
        assert backend.calls == 1

        second = explain(client)
        assert second.status_code == 200
        assert second.json()["cached"] is True
        assert second.json()["explanation"] == record
        assert backend.calls == 1
        assert server.metric("relevance_explain_cache_hits_total") == 1

        # GET by id: unknown until /score has seen the item, then found in the item store.
        other = {"id": "lamp-9", "title": "Brass desk lamp", "attributes": {"color": "gold"}}
        missing = client.get(
            "/explain", params={"query": QUERY, "item_id": "lamp-9"}, headers={"X-API-Key": KEY}
        )
        assert missing.status_code == 404
        assert "POST /score" in missing.json()["error"]["message"]
        assert score(client, [other, ITEM]).status_code == 200
        assert server.wait_metric("relevance_item_store_writes_total", 2) == 2
        by_id = client.get(
            "/explain", params={"query": QUERY, "item_id": "sofa-1"}, headers={"X-API-Key": KEY}
        )
        assert by_id.status_code == 200, by_id.text
        assert by_id.json()["cached"] is True  # the same item content as the POST above
        assert by_id.json()["timings_ms"]["store_ms"] is not None
        metrics_text = client.get("/metrics").text
        assert (
            "relevance_explain_requests_total" in metrics_text
            and "relevance_item_store_writes_total" in metrics_text
        )


def test_twenty_concurrent_identical_requests_make_one_llm_call(make_server) -> None:
    server, backend = make_server()
    backend.delay_s = 0.5  # keep the call in flight while all twenty arrive

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
            return await asyncio.gather(
                *(
                    client.post("/explain", json={"query": QUERY, "item": ITEM}, headers={"X-API-Key": KEY})
                    for _ in range(20)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert backend.calls == 1
    assert server.metric("relevance_explain_llm_calls_total") == 1
    assert len({r.json()["explanation"]["grade"] for r in responses}) == 1
    assert sum(r.json()["shared"] for r in responses) + sum(r.json()["cached"] for r in responses) == 19


@pytest.mark.parametrize("hang", ["delay_s", "block_s"])
def test_hung_teacher_times_out_with_504_while_score_keeps_answering(make_server, hang: str) -> None:
    server, backend = make_server(explain_timeout_s=2.5)
    setattr(backend, hang, 5.0)  # far past the request timeout
    with httpx.Client(base_url=server.url, timeout=180) as client:
        result: dict[str, httpx.Response] = {}
        waiter = threading.Thread(target=lambda: result.setdefault("r", explain(client)))
        waiter.start()
        time.sleep(0.3)
        during = score(client, [ITEM])
        # /score was answered while /explain was still waiting on the hung teacher (which blocks its
        # own thread in the block_s case: that must not be the thread serving requests).
        assert waiter.is_alive()
        assert during.status_code == 200
        waiter.join()
        response = result["r"]
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "explain_timeout"
        assert "2.5s" in response.json()["error"]["message"]
        assert server.wait_metric("relevance_explain_llm_errors_total", 1, reason="timeout") == 1


def test_breaker_opens_after_repeated_failures_then_recovers_via_half_open(make_server) -> None:
    server, backend = make_server(explain_breaker_failures=3, explain_breaker_reset_s=1.0)
    backend.fail = True
    with httpx.Client(base_url=server.url, timeout=180) as client:
        for i in range(3):
            failed = explain(client, item={**ITEM, "id": f"broken-{i}"})
            assert failed.status_code == 502
            assert "teacher backend failed" in failed.json()["error"]["message"]
        assert server.metric("relevance_explain_breaker_state") == 2

        refused = explain(client, item={**ITEM, "id": "while-open"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "breaker_open"
        assert int(refused.headers["Retry-After"]) >= 1
        assert backend.calls == 3  # refused without calling the backend

        time.sleep(1.1)  # cool-down over: the next call is a half-open probe
        backend.fail = False
        probe = explain(client, item={**ITEM, "id": "probe"})
        assert probe.status_code == 200, probe.text
        assert server.metric("relevance_explain_breaker_state") == 0
        assert explain(client, item={**ITEM, "id": "after"}).status_code == 200


def test_api_key_is_required_and_rate_limited_per_key(make_server) -> None:
    server, _ = make_server(explain_rate_burst=3, explain_rate_per_s=0.01)
    with httpx.Client(base_url=server.url, timeout=180) as client:
        params = {"query": QUERY, "item_id": "not-stored"}
        assert client.get("/explain", params=params).status_code == 401
        wrong = client.get("/explain", params=params, headers={"Authorization": "Bearer not-a-valid-key"})
        assert (wrong.status_code, wrong.json()["error"]["message"]) == (401, "invalid API key")
        for _ in range(3):  # the bucket holds 3: these pass the limit (and find no item)
            assert (
                client.get("/explain", params=params, headers={"Authorization": f"Bearer {KEY}"}).status_code
                == 404
            )
        limited = client.get("/explain", params=params, headers={"X-API-Key": KEY})
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.get("/explain", params=params, headers={"X-API-Key": OTHER_KEY}).status_code == 404
        assert score(client, [ITEM]).status_code == 200  # /score stays open (no RELEVANCE_SCORE_API_KEYS)


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    try:
        proc = start_redis_server(port)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield port, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_redis_stopped_mid_test_explain_works_uncached_and_score_keeps_answering(
    make_server, private_redis
) -> None:
    port, redis_proc = private_redis
    server, backend = make_server(redis_url=f"redis://127.0.0.1:{port}/0", redis_retry_after_s=0.5)
    with httpx.Client(base_url=server.url, timeout=180) as client:
        assert explain(client).status_code == 200
        assert explain(client).json()["cached"] is True
        assert backend.calls == 1

        redis_proc.kill()
        redis_proc.wait()

        assert score(client, [ITEM]).status_code == 200  # write-behind fails in the background, not here
        first = explain(client)
        assert first.status_code == 200, first.text
        assert first.json()["cached"] is False  # no cache without Redis: the teacher is asked again
        assert explain(client).json()["cached"] is False
        assert backend.calls == 3
        by_id = client.get(
            "/explain", params={"query": QUERY, "item_id": "sofa-1"}, headers={"X-API-Key": KEY}
        )
        assert by_id.status_code == 503
        assert by_id.json()["error"]["code"] == "item_store_unavailable"
        assert lookup(client, ["sofa-1"]).json()["error"]["code"] == "item_store_unavailable"
        assert score(client, [ITEM]).status_code == 200
        assert server.metric("relevance_redis_unavailable_total", operation="explain_cache_get") >= 1
        assert server.wait_metric("relevance_item_store_failures_total", 1) >= 1


def test_cli_explain_prints_the_reasoning_and_clear_errors(make_server, tmp_path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    server, _ = make_server()
    runner = CliRunner()
    with httpx.Client(base_url=server.url, timeout=180) as client:
        assert score(client, [ITEM]).status_code == 200
    server.wait_metric("relevance_item_store_writes_total", 1)
    base = ["explain", "--url", server.url, "--query", QUERY]

    ok = runner.invoke(app, [*base, "--item-id", "sofa-1", "--api-key", KEY])
    assert ok.exit_code == 0, ok.output
    assert "llamacpp:" in ok.output and "grade" in ok.output and "minilm-zero-shot" in ok.output

    item_file = tmp_path / "item.json"
    item_file.write_text(json.dumps(ITEM), encoding="utf-8")
    posted = runner.invoke(app, [*base, "--item-file", str(item_file), "--api-key", KEY, "--json"])
    assert posted.exit_code == 0, posted.output
    assert json.loads(posted.output)["cached"] is True  # the same item as the GET above
    assert runner.invoke(app, [*base, "--api-key", KEY]).exit_code == 2  # neither --item-id nor --item-file

    wrong = runner.invoke(app, [*base, "--item-id", "sofa-1", "--api-key", "not-a-valid-key"])
    assert wrong.exit_code == 1 and "error 401" in wrong.output and "invalid API key" in wrong.output
    unknown = runner.invoke(app, [*base, "--item-id", "nope", "--api-key", KEY])
    assert unknown.exit_code == 1 and "error 404" in unknown.output
    down = runner.invoke(
        app,
        [
            "explain",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--query",
            QUERY,
            "--item-id",
            "x",
            "--api-key",
            KEY,
        ],
    )
    assert down.exit_code == 1 and "cannot reach" in down.output


SCORE_KEY_A, SCORE_KEY_B = "score-key-a-0001", "score-key-b-0002"


def test_items_are_stored_per_score_caller_so_one_cannot_overwrite_anothers(make_server) -> None:
    from service.auth import key_id

    server, _ = make_server(service={"score_api_keys": f"{SCORE_KEY_A},{SCORE_KEY_B}"})
    writer_a, writer_b = key_id(SCORE_KEY_A), key_id(SCORE_KEY_B)
    with httpx.Client(base_url=server.url, timeout=180) as client:
        for key, item in ((SCORE_KEY_A, ITEM), (SCORE_KEY_B, {**ITEM, "title": "Three-seat sofa POISONED"})):
            resp = client.post("/score", json={"query": QUERY, "items": [item]}, headers={"X-API-Key": key})
            assert resp.status_code == 200, resp.text
        assert server.wait_metric("relevance_item_store_writes_total", 2) == 2  # two copies, none replaced
        params = {"query": QUERY, "item_id": ITEM["id"]}
        ambiguous = client.get("/explain", params=params, headers={"X-API-Key": KEY})
        assert ambiguous.status_code == 409, ambiguous.text
        assert (
            writer_a in ambiguous.json()["error"]["message"]
            and writer_b in ambiguous.json()["error"]["message"]
        )
        assert explain(client).status_code == 200  # POST with A's item: cached under its content
        mine = client.get("/explain", params={**params, "writer": writer_a}, headers={"X-API-Key": KEY})
        assert mine.status_code == 200 and mine.json()["cached"] is True  # A's copy, untouched by B
        unknown = client.get("/explain", params={**params, "writer": "nobody"}, headers={"X-API-Key": KEY})
        assert unknown.status_code == 404
        # The console's lookup by id says the same per id: ambiguous, missing, or the writer's copy.
        looked_up = lookup(client, [ITEM["id"], "nope"])
        assert looked_up.status_code == 200, looked_up.text
        assert looked_up.json() == {
            "items": [],
            "missing": ["nope"],
            "ambiguous": {ITEM["id"]: sorted([writer_a, writer_b])},
        }
        mine = lookup(client, [ITEM["id"]], writer=writer_a).json()
        assert [item["title"] for item in mine["items"]] == [ITEM["title"]]


def test_item_store_bounds_each_item_and_can_refuse_unkeyed_writers(make_server) -> None:
    server, _ = make_server(item_store_unkeyed_writes=False)
    with httpx.Client(base_url=server.url, timeout=180) as client:
        assert score(client, [ITEM]).status_code == 200  # /score is open here: an unkeyed caller
        assert server.wait_metric("relevance_item_store_dropped_total", 1, reason="unkeyed") == 1
        missing = client.get(
            "/explain", params={"query": QUERY, "item_id": ITEM["id"]}, headers={"X-API-Key": KEY}
        )
        assert missing.status_code == 404
    server, _ = make_server(item_store_max_fields=10)
    wide = {"id": "wide-1", "title": "sofa", "attributes": {f"a{i}": "x" for i in range(60)}}
    with httpx.Client(base_url=server.url, timeout=180) as client:
        assert score(client, [wide, ITEM]).status_code == 200
        assert server.wait_metric("relevance_item_store_writes_total", 1) == 1  # ITEM only
        assert server.metric("relevance_item_store_dropped_total", reason="too_large") == 1
        gone = client.get(
            "/explain", params={"query": QUERY, "item_id": "wide-1"}, headers={"X-API-Key": KEY}
        )
        assert gone.status_code == 404 and "MAX_FIELDS" in gone.json()["error"]["message"]
