"""The Grafana dashboard only queries metrics the real service exports (scraped from a live server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from loadtest.prom import parse_metrics
from loadtest.servers import free_port, managed_server, relevance_command, relevance_env
from loadtest.workload import SizeDistribution, Workload

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

DASHBOARD = Path("deploy/grafana/dashboards/relevance.json")
DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or ranges."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, legend text)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, incl. $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", expr):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_extractor_finds_metric_names_and_nothing_else():
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(relevance_request_duration_seconds_bucket"
        '{route="/score", status=~"5.."}[$__rate_interval]))) / ignoring(x) up offset 5m'
    )
    assert promql_metric_names(expr) == {"relevance_request_duration_seconds_bucket", "up"}
    assert promql_metric_names("sum(rate(foo_total[1m])) / sum(rate(bar_total[1m])) > bool 0") == {
        "foo_total",
        "bar_total",
    }


def test_dashboard_has_the_operational_panels():
    exprs = _dashboard_exprs()
    assert exprs and all(e.strip() for _, e in exprs)
    text = " ".join(e for _, e in exprs)
    for needed in (
        "relevance_requests_total",
        "relevance_request_duration_seconds_bucket",
        "relevance_batch_size_pairs",
        "relevance_queue_depth_pairs",
        "relevance_batch_padding_ratio",
        "relevance_explain_cache_hits_total",
    ):
        assert needed in text, f"dashboard lacks a panel on {needed}"
    assert 'status!~"2.."' in text  # errors by status


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make default-bundle; make test builds it first)")
    port = free_port()
    with managed_server(
        "relevance",
        relevance_command(),
        port=port,
        ready_path="/readyz",
        log_path=Path("reports/test-dashboard-server.log"),
        env=relevance_env(DEFAULT_BUNDLE, port),
    ) as server:
        request = Workload.from_bundled(SizeDistribution(3, 3)).next()
        response = httpx.post(
            server.base_url + "/score",
            content=request.body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return parse_metrics(httpx.get(server.base_url + "/metrics", timeout=10).text).names


def test_every_dashboard_query_names_only_exported_metrics(exported_names):
    assert "relevance_batch_size_pairs_bucket" in exported_names  # the scrape really parsed histograms
    unknown = {
        (title, name)
        for title, expr in _dashboard_exprs()
        for name in promql_metric_names(expr)
        if name not in exported_names
    }
    assert not unknown, f"dashboard panels query metrics the service does not export: {sorted(unknown)}"
