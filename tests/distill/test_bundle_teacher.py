"""A model bundle as teacher (``--teacher bundle:PATH``): records as an LLM teacher writes them in
score mode, with the bundle's served grade distribution, readable by training and eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from core.cot import grade_distribution, read_records
from core.grades import GRADE_LEVELS
from distill.baselines.bundle import score_bundle
from distill.cli import app
from distill.data.bundled import load_bundled

# Builds a bundle and scores through the service's Scorer: not part of make test-fast.
pytestmark = pytest.mark.slow


def test_a_cross_bundle_annotates_with_its_served_distribution_and_resumes(tmp_path, bundles):
    out, summary = tmp_path / "teacher.jsonl", tmp_path / "summary.json"
    args = ["teacher", "annotate", "-i", "bundled:dev", "--limit", "20", "-o", str(out),
            "--teacher", f"bundle:{bundles['cross']}", "--concurrency", "8", "--summary", str(summary)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records, _ = read_records(out)
    pairs = load_bundled("dev")[:20]
    assert [r.pair_id for r in records] != [] and {r.pair_id for r in records} == {p.pair_id for p in pairs}
    _, served, _ = score_bundle(bundles["cross"], pairs)
    by_id = {r.pair_id: r for r in records}
    for pair, probs in zip(pairs, served, strict=True):
        record = by_id[pair.pair_id]
        assert record.teacher_id == "bundle:tiny-cross@0" and record.distribution_source == "logits"
        np.testing.assert_allclose(grade_distribution(record, GRADE_LEVELS), probs, atol=1e-9)
        assert record.label == pair.label and record.query_id == pair.query_id
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads(summary.read_text())["already_done"] == 20


def test_a_bundle_without_a_grade_head_or_asked_for_reasoning_is_refused(tmp_path, bundles):
    from service.settings import DEFAULT_BUNDLE

    base = ["teacher", "annotate", "-i", "bundled:dev", "--limit", "2", "-o", str(tmp_path / "t.jsonl")]
    cot = CliRunner().invoke(app, [*base, "--teacher", f"bundle:{bundles['cross']}", "--mode", "cot"])
    assert cot.exit_code == 2 and "score mode only" in cot.output
    if (DEFAULT_BUNDLE / "bundle.json").is_file():
        cosine = CliRunner().invoke(app, [*base, "--teacher", f"bundle:{DEFAULT_BUNDLE}"])
        assert cosine.exit_code == 2 and "needs a grade head" in cosine.output
