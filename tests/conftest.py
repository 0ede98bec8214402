"""Shared fixtures (tiny bundles, llama.cpp's OpenAI-compatible server), and the rule for tests whose Redis, LLM, browser or HAProxy is missing (tests/needs.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import needs
import pytest
from service_harness import tiny_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The tiny random-weight bundles of both kinds (service_harness.tiny_bundle), built once per module."""
    root = tmp_path_factory.mktemp("bundles")
    return {kind: tiny_bundle(root / kind, kind) for kind in ("cross", "bi")}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) with the embedded SmolLM2
    GGUF as model ``smollm2``, one thread; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    from teacher.backends.llamacpp import default_gguf_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "1", "--n_ctx", "2048", "--model_alias", "smollm2"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama_cpp.server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("llama_cpp.server did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, with RELEVANCE_TEST_STRICT=1, fail) a test whose ``redis`` / ``llm`` / ``browser`` / ``haproxy`` need is missing,
    before any of its fixtures start a server."""
    for marker, check in needs.CHECKS.items():
        if item.get_closest_marker(marker) and (reason := check()):
            if needs.STRICT:
                pytest.fail(f"RELEVANCE_TEST_STRICT=1 and this test {reason}", pytrace=False)
            pytest.skip(reason)
