"""`relevance frontier`: joins eval reports (quality) and bench reports (speed) by bundle, refuses
mixed machines and data sets by name, leaves unevaluated cells empty, and draws the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app
from loadtest.frontier import FrontierError, frontier_rows


def _metric(value: float) -> dict:
    return {"value": value, "ci95": [value - 0.01, value + 0.01]}


def _eval(path: Path, data: str, systems: dict[str, float]) -> Path:
    section = {
        "systems": {
            name: {
                "metrics": {"ndcg@10": _metric(0.9), "auc_exact": _metric(auc), "auc_relevant": _metric(0.8)}
            }
            for name, auc in systems.items()
        }
    }
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"data": data, "sections": {"All queries": section}}))
    return path / "metrics.json"


def _level(pairs: float, load: str, error_rate: float = 0.0) -> dict:
    return {"pairs_per_s": pairs, "load": load, "error_rate": error_rate}


def _bench(path: Path, cpu: str, bundles: dict[str, dict]) -> Path:
    path.mkdir(parents=True)
    report = {"machine": {"cpu": cpu, "cores": 2, "date_utc": "2026-12-03 15:00"}, "bundles": bundles}
    (path / "report.json").write_text(json.dumps(report))
    return path / "report.json"


def _entry(precision: str, http: list[dict], raw: float, peer: dict | None) -> dict:
    entry = {"kind": "cross", "precision": precision, "sweep": http,
             "efficiency": {"n_layers": 2, "raw_onnx": {"pairs_per_s": raw}}}  # fmt: skip
    return entry | ({"infinity": peer} if peer is not None else {})


def test_rows_join_quality_and_speed_by_bundle_folder(tmp_path):
    quality = _eval(tmp_path / "eval", "home-depot:dev", {"bundle:s-fp32": 0.68, "bm25": 0.6})
    bench = _bench(tmp_path / "bench", "EPYC", {
        "models/students/s-fp32": _entry("fp32", [_level(150, "1 clients"), _level(180, "8 clients")], 170,
                                         {"engine": "optimum", "sweep": [_level(90, "1 clients")]}),
        "models/students/s-int8": _entry("int8", [_level(400, "1 clients"), _level(999, "8 clients", 0.5)], 380,
                                         {"skipped": "no run\nmore"}),
    })  # fmt: skip
    rows, meta = frontier_rows([quality], [bench])
    assert meta["data"] == "home-depot:dev" and meta["machine"] == {"cpu": "EPYC", "cores": 2}
    fp32, int8 = rows
    assert fp32.quality["auc_exact"] == (0.68, (0.68 - 0.01, 0.68 + 0.01))
    assert (fp32.http_pairs_per_s, fp32.http_load, fp32.raw_pairs_per_s) == (180, "8 clients", 170)
    assert (fp32.peer_pairs_per_s, fp32.peer) == (90, "Infinity optimum")
    # A level with errors is not a throughput; an unevaluated bundle keeps empty quality cells.
    assert int8.http_pairs_per_s == 400 and int8.quality["auc_exact"] is None
    assert int8.peer_pairs_per_s is None and int8.peer == "not run: no run"

    out = tmp_path / "frontier"
    result = CliRunner().invoke(
        app, ["frontier", "--eval", str(quality), "--bench", str(bench), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = (out / "frontier.md").read_text()
    assert "| s-fp32 | cross | 2 | fp32 | 0.900 [0.890, 0.910] | 0.680 [0.670, 0.690] |" in table
    assert "| s-int8 | cross | 2 | int8 | not evaluated |" in table
    assert "180 (8 clients)" in table and "90 (Infinity optimum)" in table
    assert (out / "frontier.png").stat().st_size > 1000
    assert json.loads((out / "frontier.json").read_text())["rows"][0]["peer"] == "Infinity optimum"


def test_mixed_machines_data_sets_and_missing_files_are_refused_by_name(tmp_path):
    a = _bench(tmp_path / "a", "EPYC", {})
    b = _bench(tmp_path / "b", "Xeon", {})
    with pytest.raises(FrontierError, match=r"b/report.json: measured on .*Xeon"):
        frontier_rows([], [a, b])
    one = _eval(tmp_path / "e1", "home-depot:dev", {})
    two = _eval(tmp_path / "e2", "crowdflower:dev", {})
    with pytest.raises(FrontierError, match=r"e2/metrics.json: evaluated on 'crowdflower:dev'"):
        frontier_rows([one, two], [a])
    result = CliRunner().invoke(app, ["frontier", "--eval", str(tmp_path / "none.json"), "--bench", str(a)])
    assert result.exit_code == 2 and "none.json: no such eval report" in result.output


def test_the_bench_and_the_frontier_report_the_same_best_level():
    from loadtest.bench import efficiency_summary
    from loadtest.efficiency import ModelFlops

    # The fastest level dropped requests: neither report may call it the service's capacity.
    sweep = [
        {**_level(200, "closed loop, 1 clients"), "peak_rss_mib": 300.0},
        {**_level(350, "closed loop, 8 clients"), "peak_rss_mib": 310.0},
        {**_level(500, "closed loop, 32 clients", error_rate=0.2), "peak_rss_mib": 320.0},
    ]
    raw = {"pairs_per_s": 300.0, "flops_per_pair": 1e9, "padded_flops_per_s": 3e11}
    eff = efficiency_summary(ModelFlops(10**7, 6, 384), raw, sweep, 1e12, 1.0)
    assert (eff["http_best_load"], eff["http_pairs_per_s"]) == ("closed loop, 8 clients", 350)
    failing = [{**level, "error_rate": 0.5} for level in sweep]
    eff = efficiency_summary(ModelFlops(10**7, 6, 384), raw, failing, 1e12, 1.0)
    assert eff["http_best_load"] == "no error-free level" and math.isnan(eff["http_pairs_per_s"])
