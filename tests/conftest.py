"""Shared fixtures, and the rule for tests whose Redis, LLM, browser or HAProxy is missing (tests/needs.py)."""

from __future__ import annotations

from pathlib import Path

import needs
import pytest
from service_harness import tiny_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The tiny random-weight bundles of both kinds (service_harness.tiny_bundle), built once per module."""
    root = tmp_path_factory.mktemp("bundles")
    return {kind: tiny_bundle(root / kind, kind) for kind in ("cross", "bi")}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, with RELEVANCE_TEST_STRICT=1, fail) a test whose ``redis`` / ``llm`` / ``browser`` / ``haproxy`` need is missing,
    before any of its fixtures start a server."""
    for marker, check in needs.CHECKS.items():
        if item.get_closest_marker(marker) and (reason := check()):
            if needs.STRICT:
                pytest.fail(f"RELEVANCE_TEST_STRICT=1 and this test {reason}", pytrace=False)
            pytest.skip(reason)
