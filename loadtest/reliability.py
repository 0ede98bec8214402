"""Reliability scenarios against a real `relevance serve` on loopback (figures in docs/RELIABILITY.md).

* ``overload``: measure the sustainable rate (closed loop), then send an open-loop Poisson stream at
  ``factor`` times that rate: refusals must be fast 503s with Retry-After, admitted requests must be
  answered within their deadline, RSS must stay bounded; then drop to half the sustainable rate and
  check the service is back to normal at once.
* ``restart``: closed-loop clients while the server gets SIGTERM and a new one starts on the same
  port. A request is *refused* when it got a 503 or could not connect (nothing was admitted; the
  client retries), *failed* when it was sent on a live connection and got neither a score nor a
  refusal. Failed must be 0.
* ``burst``: many closed-loop clients of mid-size requests, plus one very large long-text request every
  few seconds: no admitted request may miss its deadline (504), the small requests' p99 must stay
  within their deadline, and the large ones must be refused at once (413) when they cannot meet theirs.
* ``memory``: RSS of a fresh server, then 0.5 s and 3.5 s after each of a few long-text 500-item
  requests (new items each time, so the embedding cache saves nothing), with or without the LLM.
* ``redis``: /score and /explain load while a private redis-server is killed and later restarted.
  /score must keep answering, /explain must degrade (uncached) and recover (cached again), and no
  request may hang.
* ``replicas`` (loadtest/replicas.py): two replicas behind HAProxy through a rolling restart and a
  broken bundle's hot reload: no admitted request may be lost, every refusal carries Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtest.procstats import RssSampler
from loadtest.runner import LoadConfig, Outcome, run_load
from loadtest.servers import free_port, managed_server, relevance_command, relevance_env
from loadtest.targets import Target
from loadtest.workload import SizeDistribution, Workload, score_body


class Scenario(StrEnum):
    """The scenarios above (`relevance reliability SCENARIO`)."""

    overload = "overload"
    burst = "burst"
    memory = "memory"
    restart = "restart"
    redis = "redis"
    replicas = "replicas"


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else math.nan


def _latencies_ms(outcomes: list[Outcome], status: str) -> list[float]:
    return [o.latency_s * 1000 for o in outcomes if o.status == status]


def _server_env(bundle: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    threads = {"RELEVANCE_ORT_INTRA_OP_THREADS": str(max(1, (os.cpu_count() or 2) - 1))}
    return relevance_env(bundle, port, {**threads, **(extra or {})})


# --- overload ---


async def overload(
    bundle: Path,
    *,
    factor: float = 5.0,
    duration_s: float = 60.0,
    items: int = 10,
    deadline_ms: float = 1000.0,
    log_dir: Path = Path("reports/reliability"),
) -> dict[str, Any]:
    port = free_port()
    requests = Workload.from_bundled(SizeDistribution(items, items)).take(200)
    # No embedding cache: the workload repeats items, and cached items would make "5x" cheap.
    env = _server_env(
        bundle,
        port,
        {"RELEVANCE_REQUEST_DEADLINE_MS": str(deadline_ms), "RELEVANCE_EMBEDDING_CACHE_SIZE": "0"},
    )
    with managed_server(
        "relevance",
        relevance_command(),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / "overload-server.log",
        env=env,
    ) as server:
        target = Target("relevance", server.base_url)
        sustained = await run_load(
            target,
            requests,
            LoadConfig(mode="closed", concurrency=4, duration_s=10, warmup_s=2),
            server_pid=server.pid,
        )
        rate = sustained.summary()["requests_per_s"]
        calm = await run_load(
            target,
            requests,
            LoadConfig(mode="open", rate=rate / 2, duration_s=10, warmup_s=0),
            server_pid=server.pid,
        )
        over = await run_load(
            target,
            requests,
            LoadConfig(mode="open", rate=rate * factor, duration_s=duration_s, warmup_s=0, timeout_s=30),
            server_pid=server.pid,
        )
        after = await run_load(
            target,
            requests,
            LoadConfig(mode="open", rate=rate / 2, duration_s=10, warmup_s=0),
            server_pid=server.pid,
        )
    o = over.outcomes
    statuses = Counter(x.status for x in o)
    refused = [x for x in o if x.status == "503"]
    return {
        "scenario": "overload",
        "bundle": str(bundle),
        "items_per_request": items,
        "deadline_ms": deadline_ms,
        "sustainable_requests_per_s": round(rate, 1),
        "offered_requests_per_s": round(rate * factor, 1),
        "duration_s": duration_s,
        "overload": {
            "sent": len(o),
            "status_counts": dict(statuses),
            "unfinished": over.unfinished,
            "served_per_s": round(statuses["200"] / over.measured_s, 1),
            "refusal_ms": {
                "p50": percentile(_latencies_ms(o, "503"), 50),
                "p99": percentile(_latencies_ms(o, "503"), 99),
                "max": percentile(_latencies_ms(o, "503"), 100),
            },
            "refusals_with_retry_after": sum(1 for x in refused if x.retry_after_s is not None),
            "admitted_ms": {
                "p50": percentile(_latencies_ms(o, "200"), 50),
                "p99": percentile(_latencies_ms(o, "200"), 99),
                "max": percentile(_latencies_ms(o, "200"), 100),
            },
            "admitted_past_deadline_504": statuses["504"],
            "peak_rss_mib": over.peak_rss_mib,
        },
        "rss_mib_before": calm.peak_rss_mib,
        "half_rate_before": _phase(calm),
        "half_rate_after": _phase(after),
    }


def _phase(result) -> dict[str, Any]:
    ok = _latencies_ms(result.outcomes, "200")
    return {
        "sent": len(result.outcomes),
        "ok": len(ok),
        "status_counts": dict(Counter(x.status for x in result.outcomes)),
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
    }


# --- burst: many clients, and now and then one request far too large for its deadline ---


def long_text_request(n_items: int = 500, words: int = 120, prefix: str = "long") -> bytes:
    """A /score body of ``n_items`` items with ~``words``-word titles (each about 128 tokens or more);
    another ``prefix`` gives other items (other ids and texts)."""
    vocab = (
        "sofa leather red oak table lamp cable charger steel boots cotton shirt mouse mug hose bike "
        "helmet waterproof ceramic garden wireless kids"
    ).split()
    title = " ".join(vocab[i % len(vocab)] for i in range(words))
    return score_body(
        "red leather sofa",
        [{"id": f"{prefix}-{i}", "title": f"{prefix} {i} {title}"} for i in range(n_items)],
    )


async def burst(
    bundle: Path,
    *,
    duration_s: float = 30.0,
    clients: int = 64,
    items: int = 50,
    large_every_s: float = 3.0,
    large_items: int = 500,
    deadline_ms: float = 5000.0,
    log_dir: Path = Path("reports/reliability"),
) -> dict[str, Any]:
    port = free_port()
    requests = Workload.from_bundled(SizeDistribution(items, items)).take(200)
    # No embedding cache (the workload repeats items: no cheap cache hits); the service's default deadline.
    env = _server_env(
        bundle,
        port,
        {"RELEVANCE_EMBEDDING_CACHE_SIZE": "0", "RELEVANCE_REQUEST_DEADLINE_MS": str(deadline_ms)},
    )
    large_body = long_text_request(large_items)
    large: list[tuple[str, float, str]] = []  # (status, seconds, error code)

    async def large_sender(url: str, stop_at: float) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            while time.monotonic() < stop_at:
                await asyncio.sleep(large_every_s)
                started = time.monotonic()
                try:
                    r = await client.post(
                        "/score", content=large_body, headers={"content-type": "application/json"}
                    )
                    code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else ""
                    large.append((str(r.status_code), time.monotonic() - started, code))
                except httpx.HTTPError as exc:
                    large.append((type(exc).__name__, time.monotonic() - started, ""))

    with managed_server(
        "relevance",
        relevance_command(),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / "burst-server.log",
        env=env,
    ) as server:
        target = Target("relevance", server.base_url)
        config = LoadConfig(
            mode="closed", concurrency=clients, duration_s=duration_s, warmup_s=2, timeout_s=60
        )
        stop_at = time.monotonic() + config.warmup_s + duration_s
        small, _ = await asyncio.gather(
            run_load(target, requests, config, server_pid=server.pid), large_sender(server.base_url, stop_at)
        )
    summary = small.summary()
    ok_ms = _latencies_ms([o for o in small.outcomes if o.done >= small.measure_from], "200")
    statuses = Counter(o.status for o in small.outcomes if o.done >= small.measure_from)
    large_statuses = Counter(status for status, _, _ in large)
    return {
        "scenario": "burst",
        "bundle": str(bundle),
        "clients": clients,
        "items_per_request": items,
        "deadline_ms": deadline_ms,
        "duration_s": duration_s,
        "small": {
            "status_counts": dict(statuses),
            "served_per_s": round(statuses["200"] / small.measured_s, 1),
            "pairs_per_s": round(summary["pairs_per_s"], 1),
            "latency_ms": {
                "p50": percentile(ok_ms, 50),
                "p99": percentile(ok_ms, 99),
                "max": percentile(ok_ms, 100),
            },
            "admitted_past_deadline_504": statuses["504"],
        },
        "large": {
            "items": large_items,
            "sent": len(large),
            "status_counts": dict(large_statuses),
            "codes": dict(Counter(code for _, _, code in large if code)),
            "answer_ms": {
                "p50": percentile([t * 1000 for _, t, _ in large], 50),
                "max": percentile([t * 1000 for _, t, _ in large], 100),
            },
            "admitted_past_deadline_504": large_statuses["504"],
        },
        "admitted_past_deadline_504": statuses["504"] + large_statuses["504"],
        "peak_rss_mib": small.peak_rss_mib,
    }


# --- memory: what a server holds after long requests ---


def _vm_mib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024)
    return fields


async def memory(
    bundle: Path, *, requests: int = 5, llm: bool = False, log_dir: Path = Path("reports/reliability")
) -> dict[str, Any]:
    port = free_port()
    key = "memory-scenario-key-0001"
    env = _server_env(bundle, port, {"RELEVANCE_API_KEYS": key} if llm else {})
    after: list[dict[str, Any]] = []
    with managed_server(
        "relevance",
        relevance_command(),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / "memory-server.log",
        env=env,
    ) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
            if llm:  # load the teacher and run it once
                r = await client.post(
                    "/explain",
                    headers={"X-API-Key": key},
                    json={"query": "red sofa", "item": {"id": "a", "title": "red leather sofa"}},
                )
                r.raise_for_status()
            await asyncio.sleep(4)  # past the idle release of the warm-up
            fresh = _vm_mib(server.pid)
            for n in range(requests):
                body = long_text_request(500, prefix=f"r{n}")
                started = time.perf_counter()
                r = await client.post(
                    "/score",
                    content=body,
                    headers={"content-type": "application/json", "X-Deadline-Ms": "60000"},
                )
                r.raise_for_status()
                seconds = time.perf_counter() - started
                await asyncio.sleep(0.5)
                soon = _vm_mib(server.pid)["VmRSS"]
                await asyncio.sleep(3.0)
                later = _vm_mib(server.pid)
                after.append(
                    {
                        "request_s": round(seconds, 2),
                        "rss_0_5s": soon,
                        "rss_3_5s": later["VmRSS"],
                        "peak": later["VmHWM"],
                    }
                )
    return {
        "scenario": "memory",
        "bundle": str(bundle),
        "llm": llm,
        "fresh_mib": fresh["VmRSS"],
        "after_each_request_mib": after,
    }


# --- restart ---


class ServeProcess:
    """`relevance serve` on a fixed port, started and signalled by hand (the restart needs both)."""

    def __init__(self, bundle: Path, port: int, log: Path, extra: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            relevance_command(),
            env={**os.environ, **_server_env(bundle, port, extra)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"

    async def ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"relevance serve exited with {self.proc.returncode}")
                try:
                    if (await client.get(self.url + "/readyz", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("relevance serve not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def restart(
    bundle: Path,
    *,
    duration_s: float = 30.0,
    clients: int = 4,
    items: int = 10,
    grace_s: float = 20.0,
    log_dir: Path = Path("reports/reliability"),
) -> dict[str, Any]:
    port = free_port()
    bodies = [r.body for r in Workload.from_bundled(SizeDistribution(items, items)).take(50)]
    extra = {"RELEVANCE_SHUTDOWN_GRACE_S": str(grace_s)}
    counts: Counter[str] = Counter()
    failures: list[str] = []
    first = ServeProcess(bundle, port, log_dir / "restart-server-1.log", extra)
    second: ServeProcess | None = None
    await first.ready()
    stop_at = time.monotonic() + duration_s

    async def client_loop(k: int) -> None:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            n = k
            while time.monotonic() < stop_at:
                n += 1
                try:
                    response = await client.post(
                        "/score",
                        content=bodies[n % len(bodies)],
                        headers={"content-type": "application/json"},
                    )
                except httpx.ConnectError:
                    counts["refused: no listener"] += 1
                    await asyncio.sleep(0.05)
                    continue
                except httpx.HTTPError as exc:
                    counts["failed"] += 1
                    failures.append(type(exc).__name__)
                    continue
                if response.status_code == 200:
                    counts["ok"] += 1
                elif response.status_code == 503:
                    counts[f"refused: 503 {response.json()['error']['code']}"] += 1
                    await asyncio.sleep(0.05)
                else:
                    counts["failed"] += 1
                    failures.append(str(response.status_code))

    async def restart_midway() -> dict[str, float | int | None]:
        nonlocal second
        await asyncio.sleep(duration_s / 3)
        signalled = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        while first.proc.poll() is None:
            await asyncio.sleep(0.01)
        exited = time.monotonic()
        second = ServeProcess(bundle, port, log_dir / "restart-server-2.log", extra)
        await second.ready()
        return {
            "drain_and_exit_s": round(exited - signalled, 2),
            "exit_code": first.proc.returncode,
            "unavailable_s": round(time.monotonic() - signalled, 2),
        }

    try:
        timeline, *_ = await asyncio.gather(restart_midway(), *(client_loop(k) for k in range(clients)))
    finally:
        first.stop()
        if second is not None:
            second.stop()
    return {
        "scenario": "restart",
        "bundle": str(bundle),
        "clients": clients,
        "duration_s": duration_s,
        "counts": dict(counts),
        "failed_admitted": counts["failed"],
        "failures": Counter(failures),
        **timeline,
    }


# --- redis killed and restarted ---


def start_redis_server(port: int) -> subprocess.Popen:
    """A private, non-persistent redis-server on loopback ``port``, answering PING (else RuntimeError)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG"
    ):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return proc


async def redis_fault(
    bundle: Path,
    *,
    phase_s: float = 10.0,
    log_dir: Path = Path("reports/reliability"),
    teacher: str = "llamacpp",
) -> dict[str, Any]:
    redis_port, port = free_port(), free_port()
    key = "reliability-scenario-key"
    store = start_redis_server(redis_port)
    env = _server_env(
        bundle,
        port,
        {
            "RELEVANCE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RELEVANCE_API_KEYS": key,
            "RELEVANCE_EXPLAIN_TEACHER": teacher,
            "RELEVANCE_EXPLAIN_MODE": "score",
            "RELEVANCE_EXPLAIN_TIMEOUT_S": "30",
            "RELEVANCE_EXPLAIN_RATE_PER_S": "1000",
            "RELEVANCE_EXPLAIN_RATE_BURST": "1000",
            "RELEVANCE_REDIS_RETRY_AFTER_S": "1",
        },
    )
    requests = Workload.from_bundled(SizeDistribution(10, 10)).take(50)
    explain_items = [dict(requests[i].items[0], id=f"explain-{i}") for i in range(4)]
    phases: dict[str, dict[str, Counter[str]]] = {}
    worst_ms: dict[str, float] = {"score": 0.0, "explain": 0.0}
    current = "redis up"
    try:
        with managed_server(
            "relevance",
            relevance_command(),
            port=port,
            ready_path="/readyz",
            log_path=log_dir / "redis-server.log",
            env=env,
        ) as server:
            stop_at = math.inf

            def note(route: str, outcome: str, started: float, phase: str) -> None:
                phases.setdefault(phase, {}).setdefault(route, Counter())[outcome] += 1
                worst_ms[route] = max(worst_ms[route], (time.monotonic() - started) * 1000)

            def explain(client: httpx.AsyncClient, item: dict[str, Any]):
                return client.post(
                    "/explain", headers={"X-API-Key": key}, json={"query": requests[0].query, "item": item}
                )

            async def score_loop(client: httpx.AsyncClient, k: int) -> None:
                n = k
                while time.monotonic() < stop_at:
                    n += 1
                    started, phase = time.monotonic(), current
                    try:
                        r = await client.post(
                            "/score",
                            content=requests[n % len(requests)].body,
                            headers={"content-type": "application/json"},
                        )
                        note("score", str(r.status_code), started, phase)
                    except httpx.HTTPError as exc:
                        note("score", type(exc).__name__, started, phase)

            async def explain_loop(client: httpx.AsyncClient) -> None:
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    started, phase = time.monotonic(), current
                    try:
                        # Each item twice in a row: the second is a cache hit exactly when the cache works.
                        r = await explain(client, explain_items[n // 2 % len(explain_items)])
                        outcome = (
                            ("200 cached" if r.json()["cached"] else "200 uncached")
                            if r.status_code == 200
                            else f"{r.status_code} {r.json()['error']['code']}"
                        )
                        note("explain", outcome, started, phase)
                    except httpx.HTTPError as exc:
                        note("explain", type(exc).__name__, started, phase)

            async def faults() -> None:
                nonlocal current, store
                await asyncio.sleep(phase_s)
                store.kill()
                store.wait()
                current = "redis killed"
                await asyncio.sleep(phase_s)
                store = start_redis_server(redis_port)
                current = "redis restarted"

            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
                RssSampler(server.pid) as rss,
            ):
                for item in explain_items:  # waits for the teacher to load, and fills the cache
                    (await explain(client, item)).raise_for_status()
                stop_at = time.monotonic() + 3 * phase_s
                await asyncio.gather(
                    faults(), explain_loop(client), *(score_loop(client, k) for k in range(2))
                )
                peak = rss.peak_mib()
    finally:
        store.kill()
        store.wait()
    return {
        "scenario": "redis",
        "bundle": str(bundle),
        "phase_s": phase_s,
        "teacher": teacher,
        "phases": {name: {route: dict(c) for route, c in routes.items()} for name, routes in phases.items()},
        "slowest_ms": {k: round(v, 1) for k, v in worst_ms.items()},
        "peak_rss_mib": peak,
    }
