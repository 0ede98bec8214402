"""``relevance reliability replicas``: two `relevance serve` replicas behind a real HAProxy on loopback,
under closed-loop load, through a rolling restart (SIGTERM, then a new process, one replica at a time),
a broken bundle hot-reloaded into one replica, and both replicas restarted at once (figures in docs/RELIABILITY.md).

HAProxy is configured the way docs/DEPLOY.md recommends in front of this service: it health-checks
``/readyz`` (which answers 503 from the moment a replica starts draining) and takes a replica out at
the first failed check, and it retries a request on the other replica when the connection to a
replica fails. A draining replica's own 503 (``shutting_down``, not admitted, with ``Retry-After``)
reaches the client, which may retry. When no replica is ready HAProxy answers 503 itself, in the
service's error shape and with ``Retry-After``.

Why not retry on 503 too (a 503 from this service is never admitted, so it would be safe, and no
client would see a refusal in a rolling restart)? With ``retry-on ... 503``, HAProxy 2.6.12 sometimes
closed the client's connection without any response when the retry failed as well (logged as ``503``
with 0 bytes, ``SC--``): 2 requests in each of 2 of 5 runs of 40 s, during the outage below. A
closed connection is a refusal without ``Retry-After`` that the client cannot tell from a lost
request, so the scenario leaves the 503 to the client.

Last, both replicas restart at once, so that for a moment no replica is ready and HAProxy refuses.

A client's request is *ok* (200), *refused* (503 or 429 with ``Retry-After``: nothing was admitted, the
client may retry), *refused without Retry-After* (a defect) or *failed* (any other status, or the
connection broke: possibly an admitted request lost). Failed must be 0.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from core.bundle import MODEL_FILE
from loadtest.reliability import ServeProcess, percentile
from loadtest.servers import free_port
from loadtest.workload import SizeDistribution, Workload

ADMIN_KEY = "replicas-admin-key-0001"
# Health checks every 200 ms; one failed check takes a replica out, two good ones put it back.
CHECK_INTER_MS = 200
CHECK_RISE = 2


class HAProxyMissing(RuntimeError):
    """HAProxy is not installed; the message says how to install it."""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        raise HAProxyMissing("needs HAProxy (Debian: apt-get install haproxy; make system-deps installs it)")
    return found


def haproxy_config(front_port: int, stats_port: int, backend_ports: list[int]) -> str:
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{port} check inter {CHECK_INTER_MS}ms fall 1 rise {CHECK_RISE}"
        for i, port in enumerate(backend_ports)
    )
    no_replica = '{"error":{"code":"no_replica","message":"no replica is ready; retry shortly","field":null}}'
    return f"""global
    maxconn 2048
    log stdout format raw local0

defaults
    mode http
    # One line per request with its termination state (haproxy.log next to the config).
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # A failed connection goes to the other replica; a 503 (not admitted) goes back to the client,
    # with its Retry-After (why not retried: the module's docstring).
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
    # Retrying a POST needs its body kept.
    option http-buffer-request
    # HAProxy's own 503 (no replica ready) in the service's error shape, with Retry-After.
    http-error status 503 content-type application/json hdr Retry-After 1 string '{no_replica}'

frontend score
    bind 127.0.0.1:{front_port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class LoadBalancer:
    """HAProxy in the foreground (``-db``) with the config above, written next to its log."""

    def __init__(self, backend_ports: list[int], log_dir: Path) -> None:
        self.port, self.stats_port = free_port(), free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        config = log_dir / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.stats_port, backend_ports))
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused {config}: {check.stdout}{check.stderr}")
        self._log = open(log_dir / "haproxy.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def server_states(self) -> dict[str, str]:
        """{server name: UP / DOWN / ...} from the stats page."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            r["svname"]: r["status"]
            for r in rows
            if r["pxname"] == "replicas" and r["svname"].startswith("r")
        }

    async def wait_state(self, server: str, state: str, timeout_s: float = 30.0) -> float:
        """Seconds until HAProxy sees ``server`` in ``state``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                if (await self.server_states()).get(server, "").startswith(state):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"haproxy did not see {server} {state} within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def broken_copy(bundle: Path, out: Path) -> Path:
    """A copy of ``bundle`` whose model file no longer matches its recorded checksum."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    (out / MODEL_FILE).write_bytes(b"not an onnx model")
    return out


async def replicas(
    bundle: Path,
    *,
    duration_s: float = 40.0,
    clients: int = 4,
    items: int = 10,
    grace_s: float = 5.0,
    log_dir: Path = Path("reports/reliability"),
) -> dict[str, Any]:
    haproxy_binary()  # fail before starting anything
    ports = [free_port(), free_port()]
    extra = {
        "RELEVANCE_SHUTDOWN_GRACE_S": str(grace_s),
        "RELEVANCE_ORT_INTRA_OP_THREADS": "1",
        # POST /admin/reload needs a key; no /explain traffic here, so a teacher that is never called.
        "RELEVANCE_API_KEYS": ADMIN_KEY,
        "RELEVANCE_EXPLAIN_TEACHER": "openai:unused@http://127.0.0.1:9/v1",
    }
    bodies = [r.body for r in Workload.from_bundled(SizeDistribution(items, items)).take(50)]
    started = [
        ServeProcess(bundle, port, log_dir / f"replica-{i}-1.log", extra) for i, port in enumerate(ports)
    ]
    processes = list(started)
    everyone = list(started)
    balancer: LoadBalancer | None = None
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    events: list[dict[str, Any]] = []
    stop = asyncio.Event()
    failed_at: list[float] = []  # seconds into the run, to set against the events' times

    async def client_loop(k: int) -> None:
        assert balancer is not None
        n = k
        async with httpx.AsyncClient(base_url=balancer.url, timeout=30) as client:
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    response = await client.post(
                        "/score",
                        content=bodies[n % len(bodies)],
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    counts["failed"] += 1
                    failures[type(exc).__name__] += 1
                    failed_at.append(round(time.monotonic() - began, 2))
                    continue
                if response.status_code == 200:
                    counts["ok"] += 1
                    latencies.append((time.monotonic() - sent) * 1000)
                elif response.status_code in (429, 503):
                    code = response.json()["error"]["code"]
                    if "Retry-After" in response.headers:
                        counts[f"refused: {response.status_code} {code}"] += 1
                    else:
                        counts["refused without Retry-After"] += 1
                    await asyncio.sleep(0.05)
                else:
                    counts["failed"] += 1
                    failures[str(response.status_code)] += 1
                    failed_at.append(round(time.monotonic() - began, 2))

    async def restart(i: int, generation: int, what: str = "rolling restart") -> None:
        assert balancer is not None
        old = processes[i]
        signalled = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        at_s = signalled - began
        marked_down_s = await balancer.wait_state(f"r{i}", "DOWN")
        while old.proc.poll() is None:
            await asyncio.sleep(0.01)
        exited_s = time.monotonic() - signalled
        new = ServeProcess(bundle, ports[i], log_dir / f"replica-{i}-{generation}.log", extra)
        processes[i] = new
        everyone.append(new)
        await new.ready()
        ready_s = time.monotonic() - signalled
        back_s = ready_s + await balancer.wait_state(f"r{i}", "UP")
        events.append(
            {
                "event": f"{what} of replica {i}",
                "at_s": round(at_s, 2),
                "exit_code": old.proc.returncode,
                "marked_down_by_haproxy_s": round(marked_down_s, 2),
                "drained_and_exited_s": round(exited_s, 2),
                "new_process_ready_s": round(ready_s, 2),
                "back_in_haproxy_s": round(back_s, 2),
            }
        )

    async def reload(i: int, path: Path | None) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=processes[i].url, timeout=120) as client:
            body = {"bundle": str(path)} if path else {}
            answer = await client.post("/admin/reload", json=body, headers={"X-API-Key": ADMIN_KEY})
            metrics = (await client.get("/metrics")).text
        refused = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('relevance_model_reloads_total{result="refused"}')
        )
        return {"status": answer.status_code, "body": answer.json(), "refused_total": refused}

    async def timeline() -> None:
        finish = time.monotonic() + duration_s
        step = duration_s / 8
        await asyncio.sleep(step)
        await restart(0, 2)
        await asyncio.sleep(step)
        await restart(1, 2)
        await asyncio.sleep(step)
        broken = await reload(0, broken_copy(bundle, log_dir / "broken-bundle"))
        good = await reload(0, None)
        events.append(
            {
                "event": "broken bundle hot-reloaded into replica 0",
                "status": broken["status"],
                "error": broken["body"].get("error", {}).get("code"),
                "message": broken["body"].get("error", {}).get("message", "")[:200],
                "reloads_refused_total": broken["refused_total"],
                "then_valid_reload_status": good["status"],
            }
        )
        await asyncio.sleep(step / 2)
        # Both replicas at once (a bad rollout, a node lost): HAProxy has no replica for a while and
        # refuses, with Retry-After; requests the replicas had admitted still finish (the drain).
        refused_before = sum(v for k, v in counts.items() if k.startswith("refused"))
        await asyncio.gather(restart(0, 3, "outage restart"), restart(1, 3, "outage restart"))
        events.append(
            {
                "event": "both replicas restarted at once",
                "refused_meanwhile": sum(v for k, v in counts.items() if k.startswith("refused"))
                - refused_before,
            }
        )
        await asyncio.sleep(max(step / 2, finish - time.monotonic()))  # the rest of the run: steady state
        stop.set()

    try:
        await asyncio.gather(*(p.ready() for p in processes))
        balancer = LoadBalancer(ports, log_dir)
        for i in range(len(ports)):
            await balancer.wait_state(f"r{i}", "UP")
        began = time.monotonic()
        await asyncio.gather(timeline(), *(client_loop(k) for k in range(clients)))
        elapsed = time.monotonic() - began
        served = {}
        async with httpx.AsyncClient() as client:
            for i, p in enumerate(processes):
                text = (await client.get(p.url + "/metrics", timeout=5)).text
                served[f"replica {i} (last process)"] = sum(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith('relevance_requests_total{route="/score",status="200"}')
                )
    finally:
        if balancer is not None:
            balancer.stop()
        for p in everyone:
            p.stop()
    refused = sum(v for k, v in counts.items() if k.startswith("refused: "))
    return {
        "scenario": "replicas",
        "bundle": str(bundle),
        "replicas": len(ports),
        "load_balancer": "haproxy (health check /readyz every "
        f"{CHECK_INTER_MS} ms; retry-on conn-failure empty-response)",
        "clients": clients,
        "items_per_request": items,
        "duration_s": round(elapsed, 1),
        "counts": dict(counts),
        "ok_per_s": round(counts["ok"] / elapsed, 1),
        "ok_latency_ms": {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": percentile(latencies, 100),
        },
        "failed_admitted": counts["failed"],
        "failures": dict(failures),
        "failed_at_s": failed_at,
        "refused_with_retry_after": refused,
        "refused_without_retry_after": counts["refused without Retry-After"],
        "served_200_by_last_processes": served,
        "events": events,
    }
