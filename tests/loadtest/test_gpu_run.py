"""The one-shot GPU script in --dry-run (CPU provider) end to end, and its small parts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from loadtest.gpu import run as gpu_run
from loadtest.gpu.payload import Payload, build_models

DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")


def test_setting_env_knows_the_service_settings_and_refuses_others():
    env = gpu_run.setting_env({"batch_max_pairs": 4096, "batch_max_wait_ms": 0.5, "provider_strict": True})
    assert env == {
        "RELEVANCE_BATCH_MAX_PAIRS": "4096",
        "RELEVANCE_BATCH_MAX_WAIT_MS": "0.5",
        "RELEVANCE_PROVIDER_STRICT": "true",
    }
    with pytest.raises(KeyError, match="max_batch_pairs"):
        gpu_run.setting_env({"max_batch_pairs": 1})


def test_every_sweep_entry_names_real_settings():
    for plan in (gpu_run.GPU_PLAN, gpu_run.DRY_PLAN):
        for entry in plan.sweep:
            gpu_run.setting_env(entry)
    pairs = [e["batch_max_pairs"] for e in gpu_run.GPU_PLAN.sweep]
    waits = [e["batch_max_wait_ms"] for e in gpu_run.GPU_PLAN.sweep]
    assert min(pairs) == 256 and max(pairs) == 4096 and min(waits) == 0.5 and max(waits) == 5


def test_dmon_summary_splits_samples_by_stage(tmp_path):
    dmon = tmp_path / "dmon.txt"
    dmon.write_text(
        "#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk\n"
        "#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz\n"
        " 20261202   10:00:01      0    100     30     30     10      5      0      0   3201   1980\n"
        " 20261202   10:00:02      0    300     31     31     90     40      0      0   3201   1980\n"
        " 20261202   10:00:05      0    200     31     31     50     20      0      0   3201   1980\n"
    )
    stages = {
        "a": {"window": ["2026-12-02T10:00:00", "2026-12-02T10:00:02"]},
        "b": {"window": ["2026-12-02T10:00:04", "2026-12-02T10:00:06"]},
    }
    summary = gpu_run.dmon_summary(dmon, stages)
    assert summary["samples"] == 3
    assert summary["a"]["sm"] == {"mean": 50.0, "max": 90.0} and summary["a"]["pwr"]["max"] == 300.0
    assert summary["b"]["mem"] == {"mean": 20.0, "max": 20.0}


@pytest.mark.slow
def test_dry_run_starts_and_loads_the_real_server_and_writes_results(tmp_path):
    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make default-bundle)")
    import torch

    from distill.data.bundled import load_bundled
    from distill.students.backbone import tokenizer_file
    from distill.students.config import TrainConfig
    from distill.students.run_folder import save_run

    torch.manual_seed(0)
    config = TrainConfig(name="tiny-cross", kind="cross", layers=2, max_tokens=32)
    run_dir = tmp_path / "runs" / config.name
    save_run(run_dir, config.student_kind.build(2), config, tokenizer_file())
    payload = Payload(tmp_path / "payload")
    build_models(
        payload,
        DEFAULT_BUNDLE,
        run_dir,
        load_bundled("dev")[:12],
        "bundled:dev",
        tmp_path / "work",
        log=print,
    )
    payload.check()
    assert json.loads((payload.bundle("bi") / "bundle.json").read_text())["provenance"]["precision"] == "fp16"
    assert not list(payload.hf_cross.glob("*.safetensors"))  # config and tokenizer only

    plan = dataclasses.replace(
        gpu_run.DRY_PLAN,
        clients=(1,),
        duration_s=1.0,
        open_duration_s=1.0,
        sweep=gpu_run.DRY_PLAN.sweep[:1],
        raw_requests_per_batch=(2,),
        peer_levels=(1,),
        prepared_requests=6,
        time_limit_s=240,
    )
    out = tmp_path / "results"
    results = gpu_run.run(payload.root, out, dry_run=True, plan=plan)

    stages = results["stages"]
    assert [n for n, e in stages.items() if "error" in e] == []
    assert stages["parity"]["cross"]["passed"] and stages["parity"]["bi"]["passed"]
    assert stages["parity"]["bi"]["pairs"] == 12
    for kind in ("cross", "bi"):
        served = stages[f"serve_{kind}"]
        assert served["readyz"]["provider"] == "CPUExecutionProvider"
        assert served["sweep"][0]["ok"] > 0 and served["sweep"][0]["error_rate"] == 0
    assert stages["serve_cross"]["open_loop"]["ok"] > 0
    assert stages["batch_sweep"]["rows"][0]["ok"] > 0
    assert stages["raw"]["cross"]["runs"][0]["pairs"] > 0
    peer = stages["peer"]
    assert peer.get("sweep") or "sentence-transformers" in peer["skipped"]
    assert "no nvidia-smi" in results["dmon"]["skipped"] and "dry-run" in stages["peak"]["what"]
    assert results["summary"]["efficiency_cross"]["http_pairs_per_s"] > 0
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["stages"].keys() == stages.keys()
    markdown = (out / "results.md").read_text()
    assert "DRY RUN on CPU" in markdown and "#### Service, cross fp16 bundle" in markdown
    assert "===== server-cross-defaults.log" in (out / "servers.log").read_text()
