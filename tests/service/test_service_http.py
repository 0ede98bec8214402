"""The scoring service end to end: `relevance serve` in a subprocess on a loopback port, real HTTP,
on the tiny bundles of service_harness.py."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_harness import API_KEY, RELEVANCE, REPO, Server, items, metric

from core.bundle import (
    CosineGradeHeadScore,
    read_manifest,
)
from service.schemas import ScoreResponse

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(bundles, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    started: dict[str, Server] = {}
    try:
        # Waits long enough that concurrent requests share batches (asserted below).
        started["cross"] = Server(
            bundles["cross"], logs / "cross.log", batch_max_wait_ms=40, max_items=40, score_api_keys=API_KEY
        )
        started["bi"] = Server(
            bundles["bi"],
            logs / "bi.log",
            batch_max_wait_ms=40,
            max_items=40,
            max_field_chars=1000,
            max_body_bytes=60_000,
        )
        yield started
    finally:
        for server in started.values():
            server.stop()


def _post(server: Server, body, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    return httpx.post(f"{server.url}/score", json=body, headers=headers, timeout=30, **kw)


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _headers(kind: str) -> dict[str, str]:
    return AUTH if kind == "cross" else {}


# --- batching is invisible in the scores ---


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_batched_concurrent_scores_equal_scoring_each_pair_alone(servers, kind):
    server = servers[kind]
    queries = ["red leather sofa", "usb cable for phone charger", "waterproof hiking boots size 42 for men"]
    requests = [{"query": queries[s % 3], "items": items(s, 25)} for s in range(8)]

    before = httpx.get(f"{server.url}/metrics").text

    async def all_at_once():
        async with httpx.AsyncClient(base_url=server.url, headers=_headers(kind), timeout=60) as client:
            return await asyncio.gather(*(client.post("/score", json=r) for r in requests))

    responses = asyncio.run(all_at_once())
    after = httpx.get(f"{server.url}/metrics").text

    alone: dict[tuple[str, str], float] = {}
    with httpx.Client(base_url=server.url, headers=_headers(kind), timeout=30) as client:
        for r in requests[:4]:  # each pair in its own request, one at a time (bi: cache off by distinct ids)
            for item in r["items"]:
                solo = dict(item, id=item["id"] + "-solo")
                resp = client.post("/score", json={"query": r["query"], "items": [solo]})
                assert resp.status_code == 200, resp.text
                alone[(r["query"], item["id"])] = resp.json()["scores"][0]["score"]

    diffs, spread = [], []
    for r, resp in zip(requests, responses, strict=True):
        assert resp.status_code == 200, resp.text
        body = ScoreResponse.model_validate(resp.json())
        assert [s.id for s in body.scores] == [i["id"] for i in r["items"]]  # request order kept
        assert body.model.name == f"tiny-{kind}"
        for s in body.scores:
            assert 0.0 <= s.score <= 1.0
            assert s.grades is not None and abs(sum(s.grades.values()) - 1) < 1e-6
            if (r["query"], s.id) in alone:
                diffs.append(abs(s.score - alone[(r["query"], s.id)]))
        spread.append(np.ptp([s.score for s in body.scores]))
    assert len(diffs) == 100 and max(diffs) <= 1e-4
    assert min(spread) > 1e-2  # scores differ enough that mixed-up rows would be caught
    # Requests were batched together: fewer batches than requests for the concurrent round.
    batches = metric(after, "relevance_batch_size_pairs_count") - metric(
        before, "relevance_batch_size_pairs_count"
    )
    assert batches < len(requests)


def test_bi_item_embeddings_are_cached(servers):
    server = servers["bi"]
    body = {"query": "oak table", "items": items(99, 10)}
    first = _post(server, body).json()
    hits = metric(httpx.get(f"{server.url}/metrics").text, "relevance_embedding_cache_hits_total")
    second = _post(server, body).json()
    assert (
        metric(httpx.get(f"{server.url}/metrics").text, "relevance_embedding_cache_hits_total") == hits + 10
    )
    assert [s["score"] for s in first["scores"]] == [s["score"] for s in second["scores"]]
    changed = dict(body["items"][0], title="a completely different title")
    third = _post(server, {"query": "oak table", "items": [changed]}).json()  # same id, new text: recomputed
    assert third["scores"][0]["score"] != first["scores"][0]["score"]


def _server_timing(response: httpx.Response) -> dict[str, float]:
    parts = [part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(",")]
    return {name: float(ms) for name, ms in parts}


def test_server_timing_splits_the_request_into_tokenize_queue_and_infer(servers):
    body = {"query": "oak table", "items": items(31, 6)}
    response = _post(servers["cross"], body, headers=AUTH)
    timing = _server_timing(response)
    assert list(timing) == ["tokenize", "queue", "infer", "total"]
    assert timing["tokenize"] > 0 and timing["infer"] > 0 and timing["queue"] >= 0
    assert timing["total"] == pytest.approx(response.json()["took_ms"], abs=0.001)
    assert timing["tokenize"] + timing["queue"] + timing["infer"] <= timing["total"]
    # A bi bundle embeds the query even when every item comes from its embedding cache.
    bi = servers["bi"]
    for _ in range(2):
        timing = _server_timing(_post(bi, {"query": "walnut desk", "items": items(32, 5)}))
        assert timing["tokenize"] > 0 and timing["infer"] > 0


# --- reranker options: top_n, return_logits, truncated ---


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_every_item_says_its_position_and_whether_its_text_was_cut(servers, kind):
    many_tokens = " ".join(["x"] * 95)  # 189 characters, 95 tokens: beyond the tiny bundles' token limits
    many_chars = " ".join(["walnut"] * 43)  # 300 characters: beyond the template's 200 per field
    body = {
        "query": "oak table",
        "items": [
            {"id": "a", "title": "oak table"},
            {"id": "b", "title": many_tokens},
            {"id": "c", "title": "oak", "brand": many_chars},
        ],
    }
    for _ in range(2):  # the second time a bi bundle answers from its embedding cache
        scores = _post(servers[kind], body, headers=_headers(kind)).json()["scores"]
        got = [(s["index"], s["id"], s["truncated"]) for s in scores]
        assert got == [(0, "a", False), (1, "b", True), (2, "c", True)]


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_top_n_returns_the_best_first_with_their_request_positions(servers, kind):
    body = {"query": "oak table", "items": items(7, 12)}
    everything = _post(servers[kind], body, headers=_headers(kind)).json()["scores"]
    top = _post(servers[kind], {**body, "top_n": 3}, headers=_headers(kind)).json()["scores"]
    best = sorted(everything, key=lambda s: -s["score"])[:3]
    assert [(s["index"], s["id"], s["score"]) for s in top] == [
        (s["index"], s["id"], s["score"]) for s in best
    ]
    assert [s["index"] for s in everything] == list(range(12))  # without top_n: request order
    assert len(_post(servers[kind], {**body, "top_n": 50}, headers=_headers(kind)).json()["scores"]) == 12
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema's "integer" accepts it too).
    assert _post(servers[kind], {**body, "top_n": 3.0}, headers=_headers(kind)).json()["scores"] == top


def test_return_logits_gives_the_grade_logits_behind_the_probabilities(servers):
    body = {"query": "oak table", "items": items(8, 4), "return_logits": True}
    for s in _post(servers["cross"], body, headers=AUTH).json()["scores"]:
        logits = np.array(list(s["logits"].values()))
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert list(s["logits"]) == list(s["grades"])
        assert np.allclose(probs, list(s["grades"].values()), atol=1e-6)
    plain = _post(servers["cross"], {**body, "return_logits": False}, headers=AUTH).json()["scores"]
    assert all("logits" not in s for s in plain)


# --- bad input: status, code and field; never a 500 ---

GOOD_ITEM = {"id": "a", "title": "red sofa"}


@pytest.mark.parametrize(
    "payload,status,code,field",
    [
        ({"query": "   ", "items": [GOOD_ITEM]}, 422, "validation_error", "query"),
        ({"items": [GOOD_ITEM]}, 422, "validation_error", "query"),
        ({"query": "sofa", "items": []}, 422, "validation_error", "items"),
        ({"query": "sofa", "items": [GOOD_ITEM] * 41}, 413, "too_many_items", "items"),
        ({"query": "sofa", "items": [GOOD_ITEM], "top_n": 0}, 422, "validation_error", "top_n"),
        ({"query": "sofa", "items": [GOOD_ITEM], "top_n": "3"}, 422, "validation_error", "top_n"),
        ({"query": "sofa", "items": [GOOD_ITEM], "top_n": 2.5}, 422, "validation_error", "top_n"),
        ({"query": "sofa", "items": [GOOD_ITEM], "top_n": True}, 422, "validation_error", "top_n"),
        (
            {"query": "sofa", "items": [GOOD_ITEM], "return_logits": "yes"},
            422,
            "validation_error",
            "return_logits",
        ),
        (
            {"query": "sofa", "items": [GOOD_ITEM], "return_logits": True},
            422,
            "validation_error",
            "return_logits",
        ),
        (
            {"query": "sofa", "items": [GOOD_ITEM] * 3 + [{"id": "d", "title": "x" * 1001}]},
            422,
            "field_too_long",
            "items[3].title",
        ),
        ({"query": "x" * 1001, "items": [GOOD_ITEM]}, 422, "field_too_long", "query"),
        ({"query": "sofa", "items": [{"id": 12, "title": "t"}]}, 422, "validation_error", "items[0].id"),
        (
            {"query": "sofa", "items": [{"id": "a", "title": ["t"]}]},
            422,
            "validation_error",
            "items[0].title",
        ),
        (
            {"query": "sofa", "items": [{"id": "a", "title": "t", "attributes": {"color": [1]}}]},
            422,
            "validation_error",
            "items[0].attributes.color",
        ),
        (
            {"query": "sofa", "items": [{"id": "a", "title": "t", "attributes": "red"}]},
            422,
            "validation_error",
            "items[0].attributes",
        ),
        ({"query": 3, "items": [GOOD_ITEM]}, 422, "validation_error", "query"),
        ({"query": "sofa", "items": [GOOD_ITEM], "limit": 3}, 422, "validation_error", "limit"),
    ],
)
def test_bad_input_gets_status_and_field(servers, payload, status, code, field):
    resp = _post(servers["bi"], payload)
    assert resp.status_code == status, resp.text
    assert resp.json() == {
        "error": {"code": code, "message": resp.json()["error"]["message"], "field": field}
    }
    assert field in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "content,status,code,phrase",
    [
        (b'{"query": "sofa", "items": [', 400, "invalid_json", "not valid JSON"),
        (b'{"query": "caf\xe9", "items": []}', 400, "invalid_encoding", "UTF-8"),
        (b"", 400, "invalid_json", "not valid JSON"),
        (b"[1, 2]", 422, "validation_error", "JSON object"),
        (
            b'{"query": "sofa", "items": ['
            + b'{"id": "a", "title": "t"},' * 3000
            + b'{"id": "b", "title": "t"}]}',
            413,
            "payload_too_large",
            "RELEVANCE_MAX_BODY_BYTES",
        ),
    ],
)
def test_bad_bodies(servers, content, status, code, phrase):
    resp = httpx.post(
        f"{servers['bi'].url}/score", content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and phrase in resp.json()["error"]["message"]


def test_wrong_method_and_path(servers):
    assert httpx.get(f"{servers['bi'].url}/score").json()["error"]["code"] == "method_not_allowed"
    assert httpx.get(f"{servers['bi'].url}/nope").status_code == 404


def test_api_keys_when_configured(servers):
    server, body = servers["cross"], {"query": "sofa", "items": [GOOD_ITEM]}
    missing = _post(server, body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert _post(server, body, headers={"X-API-Key": "wrong-key-123"}).status_code == 401
    assert _post(server, body, headers={"X-API-Key": API_KEY}).status_code == 200
    assert _post(server, body, headers=AUTH).status_code == 200
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes stay open


def test_request_id_echoed_or_generated(servers):
    server, body = servers["bi"], {"query": "sofa", "items": [GOOD_ITEM]}
    assert _post(server, body, headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert _post(server, dict(body, request_id="from-body")).headers["X-Request-ID"] == "from-body"
    generated = _post(server, body).headers["X-Request-ID"]
    assert len(generated) == 32 and generated != _post(server, body).headers["X-Request-ID"]
    assert (
        _post(server, body, headers={"X-Request-ID": "bad id\twith spaces"}).headers["X-Request-ID"]
        != "bad id\twith spaces"
    )
    assert '"request_id":"abc-123"' in servers["bi"].log()  # one JSON log line per request


# --- probes and metrics ---


def test_readyz_and_metrics(servers):
    server = servers["cross"]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["status"] == "ready" and ready["provider"] == "CPUExecutionProvider"
    assert ready["bundle"]["name"] == "tiny-cross" and ready["bundle"]["kind"] == "cross"
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    _post(server, {"query": "sofa", "items": [GOOD_ITEM]}, headers=AUTH)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "relevance_requests_total",
        "relevance_request_duration_seconds_bucket",
        "relevance_queue_wait_seconds_bucket",
        "relevance_tokenization_seconds_bucket",
        "relevance_inference_seconds_bucket",
        "relevance_batch_size_pairs_bucket",
        "relevance_batch_tokens_bucket",
        "relevance_batch_padding_ratio_bucket",
        "relevance_queue_depth_pairs",
        "relevance_model_info",
        "relevance_dropped_pairs_total",
        "relevance_scored_pairs_total",
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert 'relevance_requests_total{route="/score",status="200"}' in text
    assert 'provider="CPUExecutionProvider"' in text
    assert metric(text, "relevance_queue_work_seconds") == 0.0  # idle: nothing admitted is left


# --- overload ---


def test_overload_gets_503_with_retry_after_fast(bundles, tmp_path):
    # The queue holds one 20-item request at a time, so concurrent requests must be refused, not queued.
    server = Server(
        bundles["cross"],
        tmp_path / "overload.log",
        max_items=20,
        queue_capacity_pairs=21,
        batch_max_wait_ms=20,
    )
    try:
        body = {"query": "red leather sofa", "items": items(5, 20)}

        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

                async def one():
                    start = time.perf_counter()
                    resp = await client.post("/score", json=body)
                    return resp, time.perf_counter() - start

                return await asyncio.gather(*(one() for _ in range(24)))

        results = asyncio.run(burst())
        refused = [(r, t) for r, t in results if r.status_code == 503]
        served = [r for r, _ in results if r.status_code == 200]
        assert refused and served and len(refused) + len(served) == 24
        for resp, _ in refused:
            assert resp.headers["Retry-After"] == "1" and resp.json()["error"]["code"] == "overloaded"
        # Refusals do not wait for the queue: each came back faster than the slowest served request.
        slowest_served = max(t for r, t in results if r.status_code == 200)
        assert min(t for _, t in refused) < slowest_served
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "relevance_rejected_requests_total") == len(refused)
        assert metric(text, "relevance_queue_depth_pairs") == 0
    finally:
        server.stop()


def test_disconnected_requests_are_dropped_not_computed_and_a_batch_never_waits_past_a_deadline(
    bundles, tmp_path
):
    # A batch waits up to 3 s to fill, so a lone request stays queued long enough to hang up on it
    # (after 0.3 s): it must not reach the model. The next one, with a 1 s deadline, must not wait the
    # 3 s: its batch closes when waiting longer would make it late. (Inputs that expire in the queue are
    # dropped, never computed: test_released_and_expired_inputs_are_never_computed.)
    server = Server(bundles["cross"], tmp_path / "drop.log", batch_max_wait_ms=3000, request_deadline_ms=1000)
    try:
        body = {"query": "red leather sofa", "items": items(7, 12)}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/score", json=body, timeout=httpx.Timeout(5, read=0.3))
        time.sleep(0.5)
        text = httpx.get(f"{server.url}/metrics").text
        assert 'relevance_dropped_pairs_total{reason="disconnected"} 12.0' in text
        assert metric(text, "relevance_batch_size_pairs_count") == 0  # the model never ran for it
        started = time.perf_counter()
        in_time = httpx.post(f"{server.url}/score", json=body, timeout=10)
        assert in_time.status_code == 200 and time.perf_counter() - started < 1.0, in_time.text
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "relevance_batch_size_pairs_count") == 1
        assert metric(text, "relevance_queue_depth_pairs") == 0
        assert '"status":499' in server.log(), server.log_tail()
    finally:
        server.stop()


def test_serve_refuses_a_missing_or_mismatched_bundle(bundles, tmp_path):
    missing = subprocess.run(
        [RELEVANCE, "serve", "--bundle", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "relevance student build-default" in missing.stderr

    from core.bundle import BundleError
    from service.onnx_model import OnnxModel

    # A cross model described as a bi bundle: the graph has `logits`, bundle.json promises `embedding`.
    wrong = read_manifest(bundles["cross"]).model_copy(
        update={
            "kind": "bi",
            "score": CosineGradeHeadScore(weights=[0, 0, 0], bias=[0, 0, 0]),
            "embedding_dim": 32,
        }
    )
    with pytest.raises(BundleError, match="needs output 'embedding'"):
        OnnxModel(bundles["cross"], wrong, provider="cpu")


# --- the default bundle (all-MiniLM-L6-v2) ---


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory) -> Path:
    built = REPO / "models" / "minilm-zero-shot-bi"
    try:
        read_manifest(built)
        return built
    except ValueError:  # not built yet (`make test` builds it first): build a private copy
        from distill.export.default_bundle import build_default_bundle

        out = tmp_path_factory.mktemp("default") / "minilm-zero-shot-bi"
        build_default_bundle(out)
        return out


def test_default_bundle_ranks_a_red_leather_sofa_above_a_usb_cable(default_bundle, tmp_path):
    manifest = read_manifest(default_bundle)
    assert manifest.kind == "bi" and manifest.embedding_dim == 384 and manifest.score.method == "cosine"
    assert manifest.metrics["export_checks"]["fp32_max_abs_diff_vs_pytorch"] <= 1e-4
    server = Server(default_bundle, tmp_path / "default.log")
    try:
        resp = _post(
            server,
            {
                "query": "red leather sofa",
                "items": [
                    {"id": "cable", "title": "USB-C to USB-A charging cable, 2 m, braided"},
                    {"id": "sofa", "title": "Three-seat sofa", "color": "red", "material": "leather"},
                    {"id": "lamp", "title": "Brass floor lamp"},
                ],
            },
        )
        assert resp.status_code == 200, resp.text
        scores = {s["id"]: s["score"] for s in resp.json()["scores"]}
        assert scores["sofa"] > scores["lamp"] and scores["sofa"] > scores["cable"]
        assert scores["sofa"] > 0.5 > scores["cable"]
        assert "grades" not in resp.json()["scores"][0]  # plain cosine: no grade head
    finally:
        server.stop()
