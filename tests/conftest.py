"""Fixtures shared by the service tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_harness import tiny_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The tiny random-weight bundles of both kinds (service_harness.tiny_bundle), built once per module."""
    root = tmp_path_factory.mktemp("bundles")
    return {kind: tiny_bundle(root / kind, kind) for kind in ("cross", "bi")}
