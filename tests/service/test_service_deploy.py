"""docker-compose.yml, Prometheus and Grafana wiring: every referenced file exists and the names agree."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


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


def test_compose_gives_the_drain_time_to_finish_before_a_kill():
    from service.settings import Settings

    grace = _compose()["services"]["relevance"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > Settings.model_fields["shutdown_grace_s"].default
    assert "STOPSIGNAL SIGTERM" in (REPO / "Dockerfile").read_text()
