"""docker-compose.yml, Prometheus and Grafana wiring: every referenced file exists and the names agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The top-level packages pyproject.toml installs ("core*" → core).
PROJECT_PACKAGES = {
    pattern.rstrip("*")
    for pattern in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
}


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_ports_and_mounted_files():
    services = _compose()["services"]
    assert set(services) >= {"relevance", "redis", "prometheus", "grafana"}
    assert services["relevance"]["build"] == "." and (REPO / "Dockerfile").is_file()
    assert "8080:8080" in services["relevance"]["ports"]
    assert services["relevance"]["environment"]["RELEVANCE_HOST"] == "0.0.0.0"
    assert services["relevance"]["environment"]["RELEVANCE_REDIS_URL"].startswith("redis://redis:6379")
    assert "6379:6379" in services["redis"]["ports"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if name == "relevance":  # an optional trained bundle; absent is fine (default bundle served)
                assert source == "./models/student"
                continue
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_the_compose_service():
    config = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["relevance:8080"]
    mount = next(v for v in _compose()["services"]["prometheus"]["volumes"] if "prometheus.yml" in v)
    assert mount.split(":")[1] == "/etc/prometheus/prometheus.yml"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards():
    root = REPO / "deploy/grafana/provisioning"
    [source] = yaml.safe_load((root / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((root / "dashboards/relevance.yml").read_text())["providers"]
    volumes = _compose()["services"]["grafana"]["volumes"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    dashboards = REPO / mounted[provider["options"]["path"]]
    files = list(dashboards.glob("*.json"))
    assert files, "no dashboard JSON to provision"
    for f in files:
        json.loads(f.read_text())
    assert mounted["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


def test_dockerfile_serves_with_the_cli_on_all_interfaces():
    text = (REPO / "Dockerfile").read_text()
    assert "FROM ${BASE}" in text and "ARG BASE=python:3.11-slim" in text
    assert 'ENTRYPOINT ["relevance"]' in text and 'CMD ["serve"]' in text
    assert "RELEVANCE_HOST=0.0.0.0" in text
    assert "relevance student build-default --out /bundles/minilm-zero-shot-bi" in text
    assert "download.pytorch.org/whl/cpu" in text  # never the multi-GB CUDA torch


INSTALLS_PROJECT = re.compile(r"pip install\b.*(\s\.(\s|$)|\s\"\.\[)")


def _stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's stages, each a list of its instructions (continuation lines joined)."""
    stages: list[list[str]] = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


@pytest.mark.slow
def test_every_image_stage_that_installs_the_project_copies_all_of_it(tmp_path):
    """No Docker engine here: build the wheel from exactly what each stage that installs the project
    COPYs, and check that it holds every package and the console's static files."""
    stages = [
        s for s in _stages((REPO / "Dockerfile").read_text()) if any(INSTALLS_PROJECT.search(i) for i in s)
    ]
    assert len(stages) == 2, "expected the bundle stage and the service stage to install the project"
    for number, stage in enumerate(stages):
        src = tmp_path / f"stage{number}"
        src.mkdir()
        for instruction in stage:
            if instruction.startswith("COPY ") and "--from=" not in instruction:
                *sources, _dest = instruction.split()[1:]
                for name in sources:
                    (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
        wheels = tmp_path / f"wheels{number}"
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                wheels,
                src,
            ],
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, built.stderr[-2000:]
        [wheel] = wheels.glob("*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        assert PROJECT_PACKAGES <= {n.split("/")[0] for n in names}, f"stage {number} misses a package"
        assert {"service/console/static/index.html", "service/console/static/console.js"} <= set(names)


def test_compose_gives_the_drain_time_to_finish_before_a_kill():
    from service.settings import Settings

    grace = _compose()["services"]["relevance"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > Settings.model_fields["shutdown_grace_s"].default
    assert "STOPSIGNAL SIGTERM" in (REPO / "Dockerfile").read_text()
