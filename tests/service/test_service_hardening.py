"""What a probe of the running service found (issue 14), one test per defect, each against a real
`relevance serve` on loopback: cost-aware admission, JSON-lines shutdown logs, slow clients (header
and body read timeouts, cut short at drain), the JSON content type, blank-looking text."""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_harness import Server, items

from service.settings import DEFAULT_BUNDLE

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

BODY = {"query": "red leather sofa", "items": items(3, 6)}


@pytest.fixture(scope="module")
def tiny(bundles, tmp_path_factory):
    server = Server(
        bundles["cross"], tmp_path_factory.mktemp("logs") / "tiny.log", header_timeout_s=1, body_timeout_s=1
    )
    try:
        yield server
    finally:
        server.stop()


def _json_lines(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    parsed = []
    for ln in lines:
        try:
            parsed.append(json.loads(ln))
        except json.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {ln!r}\n--- whole log ---\n{text}")
    return parsed


def _raw_connection(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_all(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


# --- 1. a request too large for its deadline cannot starve the others ---


def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once_and_small_ones_keep_their_deadline(
    tmp_path,
):
    # The real default bundle (MiniLM, 6 layers): 500 items of ~128 tokens take far longer than 5 s here.
    server = Server(DEFAULT_BUNDLE, tmp_path / "large.log", ort_intra_op_threads=2)
    words = (
        "sofa leather red oak table lamp cable charger steel boots cotton shirt mouse mug hose bike helmet"
    ).split()
    long_title = " ".join(words[i % len(words)] for i in range(120))
    large = {
        "query": "red leather sofa",
        "items": [{"id": f"big-{i}", "title": f"{i} {long_title}"} for i in range(500)],
    }
    small = {"query": "red leather sofa", "items": [{"id": "one", "title": "red leather sofa"}]}
    try:
        with ThreadPoolExecutor(13) as pool:
            big = pool.submit(httpx.post, f"{server.url}/score", json=large, timeout=60)
            time.sleep(0.2)
            smalls = [
                pool.submit(
                    httpx.post,
                    f"{server.url}/score",
                    json=small,
                    timeout=30,
                    headers={"X-Deadline-Ms": "1000"},
                )
                for _ in range(12)
            ]
            refused = big.result()
            answers = [f.result() for f in smalls]
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "request_too_costly" and error["field"] == "items"
        assert "tokens/s" in error["message"] and "X-Deadline-Ms" in error["message"]
        assert refused.elapsed.total_seconds() < 5  # refused at once, not after its deadline
        assert [r.status_code for r in answers] == [200] * 12, [
            r.text for r in answers if r.status_code != 200
        ]
        # With a deadline it can meet, the same request is admitted and scored.
        ok = httpx.post(
            f"{server.url}/score",
            json={**large, "items": large["items"][:20]},
            timeout=60,
            headers={"X-Deadline-Ms": "60000"},
        )
        assert ok.status_code == 200 and len(ok.json()["scores"]) == 20
        text = httpx.get(f"{server.url}/metrics").text
        assert 'relevance_rejected_requests_total{reason="too_costly"} 1.0' in text
        assert "relevance_model_seconds_per_token" in text
    finally:
        server.stop()


def test_stage_histograms_reach_the_largest_deadline():
    from service.metrics import Metrics
    from service.settings import Settings

    largest = Settings.model_fields["max_request_deadline_ms"].default / 1000
    m = Metrics()
    for histogram in (m.queue_wait_seconds, m.inference_seconds, m.tokenize_seconds):
        assert max(histogram._upper_bounds[:-1]) >= largest  # the last bound is +Inf


# --- 3. a clean shutdown writes JSON lines only ---


def test_a_clean_sigterm_writes_only_json_log_lines(bundles, tmp_path):
    server = Server(bundles["cross"], tmp_path / "clean.log")
    try:
        assert httpx.post(f"{server.url}/score", json=BODY, timeout=30).status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        lines = _json_lines(server.log())
        assert any(ln["msg"] == "drained" for ln in lines)
        assert not any("Logging error" in ln.get("msg", "") for ln in lines)
    finally:
        server.stop()


# --- 4. slow clients ---


def test_a_connection_that_never_finishes_its_headers_gets_408_and_is_closed(tiny):
    sock = _raw_connection(tiny)
    try:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-")  # and then nothing
        started = time.monotonic()
        raw = _read_all(sock, timeout_s=5)
        assert time.monotonic() - started < 4
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw
    assert json.loads(body)["error"]["code"] == "header_timeout"
    # A connection that opens and sends nothing at all is closed too.
    idle = _raw_connection(tiny)
    try:
        assert _read_all(idle, timeout_s=5).startswith(b"HTTP/1.1 408")
    finally:
        idle.close()
    assert httpx.post(f"{tiny.url}/score", json=BODY, timeout=30).status_code == 200  # others are unaffected


def test_a_stalled_body_gets_a_json_408_and_the_connection_is_closed(tiny):
    sock = _raw_connection(tiny)
    try:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"query":'
        )
        raw = _read_all(sock, timeout_s=5)
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "body_timeout"


def test_at_sigterm_a_stalled_upload_is_cut_short_with_json_503_and_the_process_exits_at_once(
    bundles, tmp_path
):
    server = Server(bundles["cross"], tmp_path / "slow-upload.log", shutdown_grace_s=20, body_timeout_s=60)
    sock = _raw_connection(server)
    try:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n0123456789"
        )
        time.sleep(0.3)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        raw = _read_all(sock, timeout_s=10)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - signalled < 5  # not the 20 s grace period
    finally:
        sock.close()
        server.stop()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), raw
    assert b"application/json" in head and json.loads(body)["error"]["code"] == "shutting_down"
    lines = _json_lines(server.log_path.read_text(errors="replace"))
    assert not any("Traceback" in ln.get("msg", "") + ln.get("exc", "") for ln in lines)


# --- 8. content type and blank-looking text ---


def test_bodies_must_be_sent_as_json(tiny):
    raw = json.dumps(BODY).encode()
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        resp = httpx.post(f"{tiny.url}/score", content=raw, headers=headers, timeout=30)
        assert resp.status_code == 415, (headers, resp.text)
        assert resp.json()["error"]["field"] == "header.Content-Type"
    ok = httpx.post(
        f"{tiny.url}/score",
        content=raw,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert ok.status_code == 200


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200d\ufeff", "\x00\x07", " \u2060\u00ad "])
def test_text_of_only_invisible_characters_is_blank(tiny, text):
    for body, field in (
        ({"query": "sofa", "items": [{"id": "a", "title": text}]}, "items[0].title"),
        ({"query": text, "items": [{"id": "a", "title": "sofa"}]}, "query"),
    ):
        resp = httpx.post(f"{tiny.url}/score", json=body, timeout=30)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text


def test_concurrent_small_requests_all_finish(tiny):
    # A guard against the scheduler losing a ticket: many concurrent requests all get their own scores.
    def one(i: int) -> int:
        body = {"query": "sofa", "items": items(i, 3)}
        return httpx.post(f"{tiny.url}/score", json=body, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(64))) == [200] * 64


# --- 8. one error shape on every route, startup errors in one line ---

ADMIN_KEY = "admin-key-0123456789"


@pytest.fixture(scope="module")
def keyed(bundles, tmp_path_factory):
    server = Server(bundles["cross"], tmp_path_factory.mktemp("logs") / "keyed.log", api_keys=ADMIN_KEY)
    try:
        yield server
    finally:
        server.stop()


def test_reload_and_explain_name_bad_input_as_score_does(keyed):
    admin = {"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"}
    bad_json = httpx.post(f"{keyed.url}/admin/reload", content=b'{"bundle": ', headers=admin, timeout=30)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json", bad_json.text
    score_bad_json = httpx.post(f"{keyed.url}/score", content=b'{"query": ', headers=admin, timeout=30)
    assert score_bad_json.json()["error"]["code"] == "invalid_json"
    wrong_type = httpx.post(f"{keyed.url}/admin/reload", json={"bundle": 5}, headers=admin, timeout=30)
    error = wrong_type.json()["error"]
    assert wrong_type.status_code == 422 and error["field"] == "bundle", wrong_type.text
    assert "<class" not in error["message"] and "Path" not in error["message"]
    missing = httpx.get(
        f"{keyed.url}/explain", params={"item_id": "x"}, headers={"X-API-Key": ADMIN_KEY}, timeout=30
    )
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "query", missing.text
    blank = httpx.post(
        f"{keyed.url}/explain",
        json={"query": "sofa", "item": {"id": "a", "title": "\u200b"}},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    )
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "item.title", blank.text


def test_a_corrupted_model_at_startup_is_reported_in_one_line_without_a_traceback(bundles, tmp_path):
    import shutil
    import subprocess

    from service_harness import RELEVANCE, REPO

    from core.bundle import MODEL_FILE, read_manifest, write_manifest

    corrupted = tmp_path / "corrupted"
    shutil.copytree(bundles["cross"], corrupted)
    (corrupted / MODEL_FILE).write_bytes(b"\x08\x07garbage" * 100)
    manifest = read_manifest(
        corrupted
    )  # re-record the checksums: the file is intact, its content is not ONNX
    write_manifest(corrupted, manifest.model_copy(update={"files": {}}))
    out = subprocess.run(
        [RELEVANCE, "serve", "--bundle", str(corrupted), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 3, out.stderr
    assert str(corrupted / MODEL_FILE) in out.stderr


def test_a_bad_environment_variable_is_named_as_the_user_set_it(bundles):
    import subprocess

    from service_harness import RELEVANCE, REPO

    out = subprocess.run(
        [RELEVANCE, "serve", "--bundle", str(bundles["bi"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "RELEVANCE_MAX_ITEMS": "lots"},
    )
    assert out.returncode == 2 and "RELEVANCE_MAX_ITEMS='lots'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# --- 8. metrics, paths, OpenAPI and /docs ---


def test_counters_exist_before_their_first_event_and_docs_has_its_own_route_label(tiny):
    text = httpx.get(f"{tiny.url}/metrics").text
    for sample in (
        'relevance_rejected_requests_total{reason="shutting_down"} 0.0',
        'relevance_dropped_pairs_total{reason="deadline"} 0.0',
        'relevance_model_reloads_total{result="refused"} 0.0',
    ):
        assert sample in text
    assert httpx.get(f"{tiny.url}/docs").status_code == 200
    text = httpx.get(f"{tiny.url}/metrics").text
    assert 'relevance_requests_total{route="/docs",status="200"}' in text


def test_readyz_and_model_info_show_the_bundle_name_not_its_path(tiny, bundles):
    ready = httpx.get(f"{tiny.url}/readyz").json()
    assert ready["bundle"]["dir"] == bundles["cross"].name
    assert str(bundles["cross"].parent) not in httpx.get(f"{tiny.url}/readyz").text
    assert str(bundles["cross"].parent) not in httpx.get(f"{tiny.url}/metrics").text


def test_docs_work_offline_and_openapi_documents_keys_headers_and_readyz(tiny):
    page = httpx.get(f"{tiny.url}/docs").text
    assert "https://" not in page and "http://" not in page  # no CDN: every asset from this server
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/assets/{asset}" in page
        assert httpx.get(f"{tiny.url}/docs/assets/{asset}").status_code == 200
    spec = httpx.get(f"{tiny.url}/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerKey"}
    score = spec["paths"]["/score"]["post"]
    assert {p["name"] for p in score["parameters"]} >= {"X-Deadline-Ms", "X-Request-ID"}
    assert {} in score["security"]  # open unless RELEVANCE_SCORE_API_KEYS is set
    assert "Retry-After" in score["responses"]["503"]["headers"]
    assert "X-Request-ID" in score["responses"]["200"]["headers"]
    assert {} not in spec["paths"]["/explain"]["get"]["security"]
    assert spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
