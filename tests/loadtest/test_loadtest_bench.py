"""`relevance bench` end to end on the default bundle: real `relevance serve` subprocess, real load, reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtest.bench import BenchOptions, run_bench
from loadtest.servers import INFINITY_VENV

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")


@pytest.fixture(scope="module")
def bundle() -> Path:
    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make default-bundle; make test builds it first)")
    return DEFAULT_BUNDLE


def test_bench_sweeps_the_real_service_and_writes_reports(bundle, tmp_path):
    opts = BenchOptions(
        bundles=[bundle],
        clients=[1, 2],
        items="fixed:8",
        duration_s=2.0,
        warmup_s=0.5,
        infinity=False,
        raw_onnx_seconds=0.5,
        prepared_requests=20,
        out_dir=tmp_path,
    )
    results, markdown = run_bench(opts, log=lambda _: None)
    entry = results["bundles"][str(bundle)]
    one, two = entry["sweep"]
    for record in (one, two):
        assert record["error_rate"] == 0.0 and record["ok"] > 0
        assert record["pairs_per_s"] > 0 and record["peak_rss_mib"] > 50
        assert record["latency_ms"]["p50"] <= record["latency_ms"]["p99"]
    # A lone client's batch is exactly its own request: 8 items + the query (bi bundle).
    assert one["server_histograms"]["relevance_batch_size_pairs"]["mean"] == 9
    assert one["gauges"]["relevance_queue_depth_pairs"]["max"] <= 9
    eff = entry["efficiency"]
    assert (eff["n_layers"], eff["hidden_d"]) == (6, 384)
    assert 0 < eff["raw_fraction_of_peak"] < 1.5 and 0 < eff["http_fraction_of_peak"] < 1.5
    assert math.isfinite(eff["http_mean_padded_length"])
    assert results["machine"]["matmul_peak_gflops"] > 0

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["bundles"][str(bundle)]["sweep"][0]["ok"] == one["ok"]
    assert (tmp_path / "report.md").read_text() == markdown
    for heading in ("Serving (make bench)", "Efficiency vs matmul peak"):
        assert heading in markdown
    assert (tmp_path / f"server-{bundle.name}.log").is_file()


@pytest.mark.parametrize("engine", ["optimum", "torch"])
def test_infinity_side_by_side_serves_the_same_requests(bundle, tmp_path, engine):
    """Needs Infinity's own venv (make infinity-venv); the bench itself creates it via `make bench`."""
    if not (INFINITY_VENV / "bin" / "infinity_emb").exists():
        pytest.skip(f"{INFINITY_VENV} not created (make infinity-venv)")
    opts = BenchOptions(
        bundles=[bundle],
        clients=[1],
        items="fixed:8",
        duration_s=2.0,
        warmup_s=0.5,
        efficiency=False,
        prepared_requests=10,
        out_dir=tmp_path,
        infinity_engine=engine,
    )
    results, markdown = run_bench(opts, log=lambda _: None)
    inf = results["bundles"][str(bundle)]["infinity"]
    assert "skipped" not in inf, inf.get("skipped")
    assert (inf["api"], inf["engine"]) == ("infinity-embeddings", engine)
    onnx = sorted(p.name for p in Path(inf["model_dir"]).glob("*.onnx"))
    # optimum: the bundle's weights as one fp32 graph in the report folder; torch: the packaged model.
    assert onnx == (["model.onnx"] if engine == "optimum" else [])
    (record,) = inf["sweep"]
    assert record["error_rate"] == 0.0 and record["ok"] > 0, record["status_counts"]
    (row,) = inf["comparison"]
    assert row["theirs_pairs_per_s"] == record["pairs_per_s"]
    assert f"(engine {engine})" in markdown and "Infinity side-by-side" in markdown
