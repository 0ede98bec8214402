"""Explain isolation: POST /score latency with and without /explain hammered against a hung LLM.

    python -m loadtest.explain_isolation [--mode open --rate 20 | --mode closed --concurrency 2]
        [--items fixed:20] [--duration 15] [--explain-clients 32] [--repeat 2]

Starts a "teacher" HTTP server that accepts connections and never answers, then `relevance serve`
(real uvicorn, default bundle) with ``RELEVANCE_EXPLAIN_TEACHER=openai:hung@<that server>``. It
measures /score under the same load alone, then while ``--explain-clients`` concurrent clients keep
POSTing /explain for distinct items (no cache or single-flight help), ``--repeat`` times in
alternation (so background noise on a shared machine hits both). By
default the breaker is kept closed (``--breaker-failures 1000000``), the worst case: every /explain
waits for an LLM slot and times out. Prints a Markdown table. Needs Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from loadtest.runner import LoadConfig, LoadMode, run_load
from loadtest.servers import free_port, managed_server, relevance_command, relevance_env
from loadtest.targets import Target
from loadtest.workload import SizeDistribution, Workload

DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")
API_KEY = "isolation-check-key"


class HungServer:
    """Accepts TCP connections and reads requests, but never answers (a hung LLM server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)  # kept open, never written to

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


async def hammer_explain(base_url: str, clients: int, seconds: float) -> Counter[str]:
    statuses: Counter[str] = Counter()
    stop_at = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        k = 0
        while time.monotonic() < stop_at:
            item = {"id": f"hammer-{n}-{k}", "title": f"Hammer item {n} {k}"}
            try:
                r = await client.post(
                    "/explain", json={"query": "hung backend", "item": item}, headers={"X-API-Key": API_KEY}
                )
                statuses[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            k += 1

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        await asyncio.gather(*(client_loop(client, n) for n in range(clients)))
    return statuses


def _hammer_process(base_url: str, clients: int, seconds: float, results: Any) -> None:
    results.put(dict(asyncio.run(hammer_explain(base_url, clients, seconds))))


def score_under_hammer(
    target: Target, requests: list[Any], config: LoadConfig, clients: int
) -> tuple[dict[str, Any], Counter[str]]:
    """/score load while /explain is hammered from another process: the hammering clients are other
    programs in a real deployment, and sharing the load generator's event loop with them would
    charge their work to /score's measured latency."""
    seconds = config.warmup_s + config.duration_s
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    hammer = context.Process(target=_hammer_process, args=(target.base_url, clients, seconds, results))
    hammer.start()
    time.sleep(1.0)  # the hammer's interpreter is up and sending before the measured window starts
    result = asyncio.run(run_load(target, requests, config))
    statuses = Counter(results.get(timeout=seconds + 120))
    hammer.join(30)
    return result.summary(), statuses


def _delete_keys(prefix: str) -> None:
    """Remove what the run left in Redis (the item store's copies of the /score workload)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
    except redis.RedisError:
        pass  # Redis down: nothing was written either
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--mode", choices=tuple(LoadMode), default=LoadMode.open)
    parser.add_argument("--rate", type=float, default=20.0, help="open loop: /score requests per second")
    parser.add_argument("--concurrency", type=int, default=2, help="closed loop: /score clients")
    parser.add_argument("--repeat", type=int, default=1, help="alone/hammered pairs to run")
    parser.add_argument("--ort-threads", type=int, default=None, help="RELEVANCE_ORT_INTRA_OP_THREADS")
    parser.add_argument("--items", default="fixed:20", help="items per /score request")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--explain-clients", type=int, default=32)
    parser.add_argument("--explain-timeout", type=float, default=2.0, help="RELEVANCE_EXPLAIN_TIMEOUT_S")
    parser.add_argument("--breaker-failures", type=int, default=1_000_000)
    parser.add_argument(
        "--server-cpus",
        default=None,
        help="pin the service to these CPUs (taskset list, e.g. 0); run this script under "
        "`taskset -c 1` so clients and service do not share cores",
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="keep the per-key rate limit at its default (1/s, burst 10) instead of off",
    )
    parser.add_argument("--log", type=Path, default=Path("reports/explain-isolation/server.log"))
    args = parser.parse_args(argv)

    hung = HungServer()
    port = free_port()
    prefix = f"isolation-{uuid.uuid4().hex[:8]}:"
    env = relevance_env(
        args.bundle,
        port,
        {
            "RELEVANCE_EXPLAIN_TEACHER": f"openai:hung@http://127.0.0.1:{hung.port}/v1",
            "RELEVANCE_API_KEYS": API_KEY,
            "RELEVANCE_EXPLAIN_TIMEOUT_S": str(args.explain_timeout),
            "RELEVANCE_EXPLAIN_BREAKER_FAILURES": str(args.breaker_failures),
            **({} if args.rate_limit else {"RELEVANCE_EXPLAIN_RATE_BURST": "1000000"}),
            "RELEVANCE_REDIS_PREFIX": prefix,
            **({"RELEVANCE_ORT_INTRA_OP_THREADS": str(args.ort_threads)} if args.ort_threads else {}),
        },
    )
    config = LoadConfig(
        mode=args.mode,
        rate=args.rate,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    requests = Workload.from_bundled(SizeDistribution.parse(args.items)).take(400)
    try:
        with managed_server(
            "relevance",
            (["taskset", "-c", args.server_cpus] if args.server_cpus else []) + relevance_command(),
            port=port,
            ready_path="/readyz",
            log_path=args.log,
            env=env,
        ) as server:
            target = Target("relevance", server.base_url)
            runs: list[tuple[str, dict[str, Any]]] = []
            explain_statuses: Counter[str] = Counter()
            # One discarded run first: it fills the item-embedding cache, which would otherwise make the
            # first measured run slower than the rest whatever the hammer does.
            asyncio.run(run_load(target, requests, config))
            for _ in range(args.repeat):
                runs.append(("/score alone", asyncio.run(run_load(target, requests, config)).summary()))
                hammered, statuses = score_under_hammer(target, requests, config, args.explain_clients)
                runs.append(("/score + /explain hammer", hammered))
                explain_statuses.update(statuses)
    finally:
        hung.close()
        _delete_keys(prefix)

    print(
        f"POST /score, {config.describe()}, items {args.items}, {args.duration:g} s measured per run; "
        f"/explain: {args.explain_clients} clients against a hung LLM, timeout {args.explain_timeout:g} s, "
        f"breaker threshold {args.breaker_failures}, rate limit {'default' if args.rate_limit else 'off'}; "
        "the hammer runs in its own process\n"
    )
    print("| run | /score requests | statuses | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for name, s in runs:
        lat = s["latency_ms"]
        print(
            f"| {name} | {s['requests']} | {s['status_counts']} | {lat['p50']:.1f} | {lat['p95']:.1f} "
            f"| {lat['p99']:.1f} | {lat['max']:.1f} |"
        )
    print(f"\n/explain answers during the hammers: {dict(sorted(explain_statuses.items()))}")
    for label in ("/score alone", "/score + /explain hammer"):
        p99s = sorted(s["latency_ms"]["p99"] for name, s in runs if name == label)
        print(
            f"{label}: p99 over {len(p99s)} runs: median {statistics.median(p99s):.1f} ms, "
            f"range {p99s[0]:.1f}–{p99s[-1]:.1f} ms"
        )


if __name__ == "__main__":
    main()
