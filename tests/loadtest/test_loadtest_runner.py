"""The load generator against a small real server (uvicorn on loopback) whose behaviour we control."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loadtest.runner import LoadConfig, run_load
from loadtest.servers import free_port
from loadtest.targets import Target
from loadtest.workload import SizeDistribution, Workload

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

SERVICE_S = 0.02  # the fake scorer's time per request


def _fake_app() -> Starlette:
    """POST /score: serialised (one at a time, like a single model worker), SERVICE_S each;
    answers 503 to queries starting with 'fail', and 503 with Retry-After 0.2 s to 'busy'. /metrics: a batch-size histogram and a queue gauge."""
    registry = CollectorRegistry()
    batch = Histogram("relevance_batch_size_pairs", "rows", buckets=(1, 10, 100, 1000), registry=registry)
    depth = Gauge("relevance_queue_depth_pairs", "rows", registry=registry)
    lock = asyncio.Lock()

    async def score(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body["query"].startswith("fail"):
            return Response(b'{"error":"overloaded"}', status_code=503)
        if body["query"].startswith("busy"):
            return Response(b'{"error":"queue full"}', status_code=503, headers={"Retry-After": "0.2"})
        depth.inc(len(body["items"]))
        async with lock:
            await asyncio.sleep(SERVICE_S)
        depth.dec(len(body["items"]))
        batch.observe(len(body["items"]))
        return Response(orjson.dumps({"scores": [0.5] * len(body["items"])}), media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain")

    return Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/metrics", metrics)])


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_fake_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _requests(n_items: int = 5, count: int = 20, fail_every: int = 0):
    groups = {f"query {k}": [{"id": f"i{k}", "title": f"item {k}"}] for k in range(10)}
    if fail_every:
        groups["fail query"] = [{"id": "f", "title": "x"}]
    workload = Workload(groups, [{"id": "c", "title": "catalogue item"}], SizeDistribution(n_items, n_items))
    return workload.take(count)


async def test_closed_loop_counts_pairs_latency_and_server_histograms(server_url):
    config = LoadConfig(mode="closed", concurrency=4, duration_s=1.5, warmup_s=0.3)
    result = await run_load(
        Target("fake", server_url),
        _requests(n_items=7),
        config,
        server_pid=os.getpid(),
        sample_gauges=("relevance_queue_depth_pairs",),
        gauge_interval_s=0.25,
    )
    s = result.summary()
    assert s["error_rate"] == 0.0
    assert s["status_counts"] == {"200": s["ok"]}
    # The server handles one request at a time: throughput cannot beat 1 / SERVICE_S.
    assert 0 < s["requests_per_s"] <= 1 / SERVICE_S * 1.05
    assert s["pairs_per_s"] == pytest.approx(7 * s["requests_per_s"])
    # Four clients queue behind one worker: the median waits for about three others.
    assert s["latency_ms"]["p50"] >= 2.5 * SERVICE_S * 1000
    assert s["latency_ms"]["max"] >= s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
    before, after = result.scrape_before, result.scrape_after
    assert before is not None and after is not None
    delta = after.histogram("relevance_batch_size_pairs").minus(
        before.histogram("relevance_batch_size_pairs")
    )
    # Server-side count over the window matches the client's (± the requests straddling its edges).
    assert abs(delta.count - s["ok"]) <= 2 * config.concurrency
    assert delta.mean() == pytest.approx(7.0)
    queue = s["gauges"]["relevance_queue_depth_pairs"]
    assert queue["samples"] >= 3 and queue["max"] <= 4 * 7
    assert s["peak_rss_mib"] > 10  # this test process hosts the server


async def test_error_statuses_are_counted_not_dropped(server_url):
    config = LoadConfig(mode="closed", concurrency=2, duration_s=1.0, warmup_s=0.0)
    requests = [r for r in _requests(count=40, fail_every=1)]
    failing = [r for r in requests if r.query.startswith("fail")]
    assert failing, "workload should contain the failing query"
    result = await run_load(Target("fake", server_url), failing + requests[:3], config)
    s = result.summary()
    assert s["status_counts"].get("503", 0) > 0
    assert s["status_counts"]["503"] + s["status_counts"].get("200", 0) == s["requests"]
    assert s["error_rate"] == pytest.approx(s["status_counts"]["503"] / s["requests"])


async def test_open_loop_measures_from_intended_send_time(server_url):
    """Coordinated omission: with one connection the client itself must queue; latencies still
    count from when each request was due, so they grow with the backlog instead of staying at the
    server's service time."""
    rate = 3 / SERVICE_S  # three times what the server can take
    config = LoadConfig(mode="open", rate=rate, duration_s=1.0, warmup_s=0.0, max_connections=1, timeout_s=20)
    result = await run_load(Target("fake", server_url), _requests(), config)
    s = result.summary()
    due = s["requests"]
    assert due == pytest.approx(rate * config.duration_s, rel=0.35)  # arrivals follow the schedule
    assert s["error_rate"] == 0.0
    # The last of ~150 due requests waits for ~100 earlier ones to be served.
    assert s["latency_ms"]["max"] > 0.5 * due * SERVICE_S * 1000
    assert s["latency_ms"]["p50"] > 5 * SERVICE_S * 1000


async def test_unreachable_server_is_reported_as_client_errors():
    config = LoadConfig(mode="closed", concurrency=1, duration_s=0.3, warmup_s=0.0)
    result = await run_load(Target("nothing", f"http://127.0.0.1:{free_port()}"), _requests(), config)
    s = result.summary()
    assert s["ok"] == 0 and s["requests"] > 0
    assert s["error_rate"] == 1.0
    assert "ConnectError" in s["status_counts"]
    assert result.scrape_before is None


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        LoadConfig(mode="sideways")
    with pytest.raises(ValueError, match="concurrency"):
        LoadConfig(concurrency=0)
    with pytest.raises(ValueError, match="one hour"):
        LoadConfig(duration_s=3600, warmup_s=10)


async def test_closed_loop_window_opens_once_the_queue_has_turned_over(server_url):
    """8 clients on a one-at-a-time server: the first answers take up to 8 service times; the window
    must not open before every client has had one, even with no warm-up."""
    config = LoadConfig(mode="closed", concurrency=8, duration_s=0.5, warmup_s=0.0)
    result = await run_load(Target("fake", server_url), _requests(), config)
    first_send = min(o.intended for o in result.outcomes)
    assert result.measure_from - first_send >= 0.9 * 8 * SERVICE_S
    s = result.summary()
    # Steady state: each answer waited for the seven other clients' requests.
    assert s["latency_ms"]["p50"] >= 0.8 * 8 * SERVICE_S * 1000


async def test_closed_loop_clients_honour_retry_after(server_url):
    busy = Workload(
        {"busy query": [{"id": "b", "title": "x"}]}, [{"id": "c", "title": "y"}], SizeDistribution(1, 1)
    ).take(1)
    config = LoadConfig(mode="closed", concurrency=1, duration_s=1.0, warmup_s=0.0)
    s = (await run_load(Target("fake", server_url), busy, config)).summary()
    # Told to wait 0.2 s each time: about five tries in one second, not hundreds.
    assert 3 <= s["status_counts"]["503"] <= 7
