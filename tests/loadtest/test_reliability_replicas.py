"""`relevance reliability replicas`, shortened: two real `relevance serve` replicas behind a real HAProxy
on loopback, under load, through a rolling restart, a broken bundle's hot reload and both replicas
restarting at once. No admitted request may be lost; every refusal must carry Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.replicas import haproxy_config, replicas

pytestmark = [pytest.mark.slow, pytest.mark.haproxy]


def test_no_admitted_request_is_lost_across_restarts_and_a_broken_reload(bundles, tmp_path) -> None:
    result = asyncio.run(replicas(bundles["cross"], duration_s=15, clients=3, items=8, log_dir=tmp_path))
    assert result["counts"]["ok"] > 100
    assert result["failed_admitted"] == 0, result["failures"]
    assert result["refused_without_retry_after"] == 0
    restarts = [e for e in result["events"] if e["event"].startswith("rolling restart")]
    assert [e["exit_code"] for e in restarts] == [0, 0]  # each replica drained and exited cleanly
    assert all(e["back_in_haproxy_s"] > e["new_process_ready_s"] for e in restarts)
    [broken] = [e for e in result["events"] if e["event"].startswith("broken bundle")]
    assert (broken["status"], broken["error"], broken["then_valid_reload_status"]) == (
        422,
        "bundle_invalid",
        200,
    )
    assert "SHA-256" in broken["message"] and broken["reloads_refused_total"] == 1
    # With no replica ready, HAProxy itself refused, in the service's error shape with Retry-After.
    [outage] = [e for e in result["events"] if e["event"] == "both replicas restarted at once"]
    assert outage["refused_meanwhile"] > 0
    assert result["counts"]["refused: 503 no_replica"] > 0
    refusals = {k for k in result["counts"] if k.startswith("refused")}
    assert refusals <= {"refused: 503 no_replica", "refused: 503 shutting_down", "refused: 503 not_ready"}, (
        refusals
    )
    # Both replicas served (the balancer really balanced).
    assert all(n > 0 for n in result["served_200_by_last_processes"].values())


def test_haproxy_config_health_checks_readyz_and_retries_only_unanswered_requests() -> None:
    config = haproxy_config(8000, 8001, [9000, 9001])
    assert "option httpchk GET /readyz" in config and "http-check expect status 200" in config
    # Retried only where no replica answered; never on 504 or 500 (those may be admitted), nor on 503
    # (see loadtest/replicas.py: HAProxy then sometimes answered nothing at all).
    assert "retry-on conn-failure empty-response\n" in config
    assert "hdr Retry-After 1" in config
    assert "server r1 127.0.0.1:9001 check" in config
