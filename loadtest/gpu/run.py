"""The one-shot GPU check (issue 15): `python -m loadtest.gpu.run --payload DIR --out DIR [--dry-run]`.

Stages, in this order, inside one time limit (8 minutes, enforced: a level that would end past it is
skipped and says so, and a watchdog stops the servers and exits if a stage overruns):

1. machine: GPU, driver, onnxruntime and its providers; ``nvidia-smi dmon`` recorded for the whole run;
   the bf16 matrix peak (torch, 8192³, CUDA events), what every throughput is a share of.
2. parity: each fp16 bundle scored on CUDA through the service's Scorer against the CPU fp32 scores
   prepare.py stored, with the export gates (distill/export/checks.py: ``check_reduced``).
3. the real service (`relevance serve`, RELEVANCE_PROVIDER=cuda, RELEVANCE_PROVIDER_STRICT=true) under
   the project's load generator: closed loop at 1, 8, 32, 64, 128 clients with 50-item requests, then
   open loop at 90 % of the best closed-loop rate; cross student first, then the bi bundle.
4. batch settings sweep on the cross student: RELEVANCE_BATCH_MAX_PAIRS 256–4096, _MAX_TOKENS, _MAX_WAIT_MS.
5. raw session (service.onnx_model.OnnxModel, IO binding on CUDA) at 1, 8 and 32 requests per batch.
6. the peer: sentence-transformers CrossEncoder.predict in fp16 on the same GPU, side by side.
7. efficiency (loadtest/efficiency.py FLOPs) as a share of the bf16 peak; the issue's targets.

Writes results.json (after every stage, so a cut-off run still leaves its figures), results.md,
nvidia-smi-dmon.txt and servers.log into --out. ``--dry-run`` runs every stage on the CPU provider with
tiny client counts and durations of a second or two, starts and loads the real server, and skips what
needs a GPU (nvidia-smi, the CUDA provider, the bf16 peak: the numpy fp32 peak stands in), saying so.
Its figures are not benchmark figures.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

TIME_LIMIT_S = 480.0  # the issue: everything inside one run of at most 8 minutes
WATCHDOG_GRACE_S = 20.0
LIBS_MARKER = "RELEVANCE_GPU_LIBRARY_PATH_SET"
READY_PATH = "/readyz"
# Issue 15's targets (benchmark figures, not tests).
TARGET_PAIRS_PER_S = 50_000
TARGET_P99_MS = 25.0
TARGET_HTTP_OVER_RAW = 0.70
TARGET_OVER_PEER = 3.0
TARGET_SCALING_32_OVER_1 = 3.0


@dataclass(frozen=True)
class Plan:
    """Sizes of every stage: ``GPU_PLAN`` on the H200, ``DRY_PLAN`` for the CPU dry run."""

    provider: str
    clients: tuple[int, ...]
    bi_clients: tuple[int, ...]
    items: str
    warmup_s: float
    duration_s: float
    bi_duration_s: float
    open_loop_share: float  # open-loop rate as a share of the best closed-loop requests/s
    open_duration_s: float
    sweep_clients: int
    sweep_duration_s: float
    # Each entry: Settings fields (service/settings.py) -> value, on top of the run's base settings.
    sweep: tuple[dict[str, float], ...]
    raw_seconds: float
    raw_requests_per_batch: tuple[int, ...]
    peer_levels: tuple[int, ...]  # k concurrent 50-item requests scored in one predict call
    peer_seconds: float
    prepared_requests: int
    peak_n: int
    timeout_s: float
    queue_capacity_pairs: int
    time_limit_s: float = TIME_LIMIT_S


GPU_PLAN = Plan(
    provider="cuda",
    clients=(1, 8, 32, 64, 128),
    bi_clients=(1, 32, 128),
    items="fixed:50",
    warmup_s=2.0,
    duration_s=8.0,
    bi_duration_s=5.0,
    open_loop_share=0.9,
    open_duration_s=10.0,
    sweep_clients=64,
    sweep_duration_s=5.0,
    sweep=(
        {"batch_max_pairs": 256, "batch_max_tokens": 16384, "batch_max_wait_ms": 2},  # the defaults
        {"batch_max_pairs": 1024, "batch_max_tokens": 65536, "batch_max_wait_ms": 2},
        {"batch_max_pairs": 2048, "batch_max_tokens": 131072, "batch_max_wait_ms": 2},
        {"batch_max_pairs": 4096, "batch_max_tokens": 262144, "batch_max_wait_ms": 2},
        {"batch_max_pairs": 4096, "batch_max_tokens": 16384, "batch_max_wait_ms": 2},  # tokens bind
        {"batch_max_pairs": 1024, "batch_max_tokens": 65536, "batch_max_wait_ms": 0.5},
        {"batch_max_pairs": 1024, "batch_max_tokens": 65536, "batch_max_wait_ms": 5},
    ),
    raw_seconds=5.0,
    raw_requests_per_batch=(1, 8, 32),
    peer_levels=(1, 8, 32, 64, 128),
    peer_seconds=3.0,
    prepared_requests=400,
    peak_n=8192,
    timeout_s=30.0,
    queue_capacity_pairs=65536,  # 128 clients × 50 items queued at once must not be refused
)

DRY_PLAN = Plan(
    provider="cpu",
    clients=(1, 2),
    bi_clients=(1,),
    items="fixed:8",
    warmup_s=0.3,
    duration_s=1.5,
    bi_duration_s=1.0,
    open_loop_share=0.9,
    open_duration_s=1.5,
    sweep_clients=2,
    sweep_duration_s=1.0,
    sweep=(
        {"batch_max_pairs": 256, "batch_max_tokens": 16384, "batch_max_wait_ms": 2},
        {"batch_max_pairs": 512, "batch_max_tokens": 8192, "batch_max_wait_ms": 0.5},
    ),
    raw_seconds=0.5,
    raw_requests_per_batch=(1, 4),
    peer_levels=(1, 2),
    peer_seconds=0.5,
    prepared_requests=16,
    peak_n=1024,
    timeout_s=30.0,
    queue_capacity_pairs=4096,
)


def setting_env(fields: dict[str, Any]) -> dict[str, str]:
    """RELEVANCE_* variables for ``Settings`` fields; a name that is not a field is refused."""
    from service.settings import Settings

    unknown = sorted(set(fields) - set(Settings.model_fields))
    if unknown:
        raise KeyError(f"not fields of service/settings.py Settings: {', '.join(unknown)}")
    return {
        f"RELEVANCE_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in fields.items()
    }


class Deadline:
    def __init__(self, limit_s: float) -> None:
        self.started = time.monotonic()
        self.limit_s = limit_s

    def left(self) -> float:
        return self.limit_s - (time.monotonic() - self.started)

    def allows(self, cost_s: float) -> bool:
        return self.left() >= cost_s


@dataclass
class Context:
    plan: Plan
    dry_run: bool
    payload: Any  # loadtest.gpu.payload.Payload
    out: Path
    work: Path
    deadline: Deadline
    results: dict[str, Any] = field(default_factory=dict)
    servers: dict[int, str] = field(default_factory=dict)  # pid -> name, for the watchdog
    requests: list = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.deadline.started:6.1f} s] {message}", flush=True)

    def write(self) -> None:
        from loadtest.bench import _jsonable

        (self.out / "results.json").write_text(json.dumps(_jsonable(self.results), indent=2) + "\n")


# --- stage runner -----------------------------------------------------------------------------------


def run_stage(ctx: Context, name: str, fn: Callable[[Context], dict[str, Any]], min_s: float = 1.0) -> None:
    """Run one stage; its figures, its error or why it was skipped go to results["stages"][name]."""
    stages = ctx.results.setdefault("stages", {})
    started_wall = datetime.now()
    if not ctx.deadline.allows(min_s):
        stages[name] = {
            "skipped": f"time limit: {ctx.deadline.left():.0f} s left, stage needs ≥ {min_s:.0f} s"
        }
        ctx.log(f"stage {name}: skipped ({stages[name]['skipped']})")
        ctx.write()
        return
    ctx.log(f"stage {name}: start")
    t0 = time.monotonic()
    try:
        entry = fn(ctx)
    except Exception as exc:  # noqa: BLE001 - one failed stage must not cost the other stages' figures
        entry = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        ctx.log(f"stage {name}: FAILED: {type(exc).__name__}: {exc}")
    entry["elapsed_s"] = time.monotonic() - t0
    entry["window"] = [
        started_wall.isoformat(timespec="seconds"),
        datetime.now().isoformat(timespec="seconds"),
    ]
    stages[name] = entry
    ctx.log(f"stage {name}: done in {entry['elapsed_s']:.1f} s")
    ctx.write()


def start_watchdog(ctx: Context) -> threading.Timer:
    def fire() -> None:
        ctx.log(f"watchdog: past the {ctx.plan.time_limit_s:.0f} s limit; stopping servers and exiting")
        for pid in list(ctx.servers):
            try:
                os.killpg(pid, signal.SIGKILL)  # servers run in their own session (loadtest/servers.py)
            except ProcessLookupError:
                pass
        ctx.results["aborted"] = f"watchdog after {ctx.plan.time_limit_s + WATCHDOG_GRACE_S:.0f} s"
        try:
            ctx.write()
            write_markdown(ctx)
        finally:
            os._exit(124)

    timer = threading.Timer(ctx.plan.time_limit_s + WATCHDOG_GRACE_S, fire)
    timer.daemon = True
    timer.start()
    return timer


# --- stage 1: machine, dmon, peak ----------------------------------------------------------------------


def cuda_library_dirs() -> list[str]:
    """The CUDA and cuDNN libraries of the image's nvidia-* wheels (onnxruntime-gpu installed in another
    folder cannot find them through its own relative search path)."""
    dirs: list[str] = []
    for entry in sys.path:
        dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib")))
        dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "cu13", "lib")))
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def machine_stage(ctx: Context) -> dict[str, Any]:
    import onnxruntime as ort

    from loadtest import report

    entry: dict[str, Any] = {"host": report.machine_info(), "onnxruntime": ort.__version__}
    entry["onnxruntime_providers"] = ort.get_available_providers()
    entry["onnxruntime_file"] = ort.__file__
    if ctx.dry_run:
        entry["gpu"] = "skipped in --dry-run: no nvidia-smi, CPU provider"
        return entry
    query = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit"
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    entry["gpu"] = done.stdout.strip() or done.stderr.strip()
    entry["cuda_library_dirs"] = os.environ.get("LD_LIBRARY_PATH", "")
    if "CUDAExecutionProvider" not in entry["onnxruntime_providers"]:
        raise RuntimeError(
            f"onnxruntime at {ort.__file__} offers {entry['onnxruntime_providers']}: the carried "
            "onnxruntime-gpu is not first on PYTHONPATH (see loadtest/gpu/on_device.sh)"
        )
    return entry


def start_dmon(ctx: Context) -> subprocess.Popen | None:
    if ctx.dry_run:
        ctx.results["dmon"] = {"skipped": "--dry-run: no nvidia-smi on the CPU machine"}
        return None
    log = open(ctx.out / "nvidia-smi-dmon.txt", "w")  # noqa: SIM115 - closed when dmon is stopped
    return subprocess.Popen(
        ["nvidia-smi", "dmon", "-s", "pucm", "-d", "1", "-o", "DT"], stdout=log, stderr=subprocess.STDOUT
    )


def dmon_summary(path: Path, stages: dict[str, Any]) -> dict[str, Any]:
    """Mean and max SM %, memory-controller % and power per stage, from ``nvidia-smi dmon -o DT`` lines."""
    if not path.is_file():
        return {"skipped": f"{path} not written"}
    header: list[str] = []
    rows: list[tuple[datetime, dict[str, float]]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            if not header:
                header = line.lstrip("#").split()
            continue
        fields = line.split()
        if not header or len(fields) != len(header):
            continue
        try:
            when = datetime.strptime(fields[0] + fields[1], "%Y%m%d%H:%M:%S")
        except ValueError:
            continue
        values = {}
        for name, value in zip(header[2:], fields[2:], strict=True):
            try:
                values[name] = float(value)
            except ValueError:
                pass
        rows.append((when, values))
    out: dict[str, Any] = {"samples": len(rows), "columns": header}
    for name, entry in stages.items():
        window = entry.get("window")
        if not window:
            continue
        start, end = (datetime.fromisoformat(t) for t in window)
        inside = [v for when, v in rows if start <= when <= end]
        out[name] = {
            column: {
                "mean": sum(v[column] for v in inside) / len(inside),
                "max": max(v[column] for v in inside),
            }
            for column in ("sm", "mem", "pwr")
            if inside and all(column in v for v in inside)
        }
    return out


def peak_stage(ctx: Context) -> dict[str, Any]:
    """Dense matrix peak: bf16 on the GPU (torch, CUDA events, median of 10 after 3 warm-ups, random
    data); in the dry run numpy's fp32 peak stands in (loadtest/efficiency.py)."""
    from loadtest.efficiency import matmul_peak_flops

    n = ctx.plan.peak_n
    if ctx.dry_run:
        return {
            "what": f"CPU fp32 numpy {n}² (dry-run stand-in for the bf16 GPU peak)",
            "flops": matmul_peak_flops(n=n),
        }
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    del a, b
    torch.cuda.empty_cache()
    return {
        "what": f"bf16 torch {n}³ on {torch.cuda.get_device_name()}",
        "flops": 2.0 * n**3 / times[len(times) // 2],
    }


# --- stage 2: parity -----------------------------------------------------------------------------------


def parity_stage(ctx: Context) -> dict[str, Any]:
    from distill.baselines.bundle import score_bundle
    from distill.export.checks import ExportCheckError, check_reduced
    from distill.students.predict import ranking_metrics
    from loadtest.gpu.payload import BUNDLES, Reference

    entry: dict[str, Any] = {
        "against": "CPU fp32 scores stored by make gpu-prepare",
        "provider": ctx.plan.provider,
        "note": "--dry-run: CPU fp16 against CPU fp32 (the CUDA parity needs the GPU)" if ctx.dry_run else "",
    }
    for kind in BUNDLES:
        reference = Reference.read(ctx.payload.reference(kind))
        pairs = reference.pairs()
        scores, _, _ = score_bundle(
            ctx.payload.bundle(kind), pairs, provider=ctx.plan.provider, provider_strict=True
        )
        import numpy as np

        ref = np.asarray(reference.scores)
        ndcg = ranking_metrics(pairs, scores)["ndcg@10"]
        label = f"fp16 on {ctx.plan.provider}"
        try:
            figures = check_reduced(label, ref, scores, reference.ndcg_at_10, ndcg)
            entry[kind] = {"passed": True, **figures}
        except ExportCheckError as exc:
            entry[kind] = {"passed": False, "reason": str(exc)}
        entry[kind].update(
            pairs=len(pairs), reference=reference.bundle, max_abs_diff=float(np.max(np.abs(ref - scores)))
        )
        ctx.log(
            f"  parity {kind}: {'passed' if entry[kind]['passed'] else 'FAILED'} (max |Δ| {entry[kind]['max_abs_diff']:.2e})"
        )
    return entry


# --- stages 3–4: the service under load ----------------------------------------------------------------


def base_settings(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return {
        "provider": plan.provider,
        "provider_strict": True,
        "request_deadline_ms": int(plan.timeout_s * 1000),  # queue rather than shed, as in make bench
        "embedding_cache_size": 0,  # every request computes its items (docs/BENCHMARKS.md)
        "queue_capacity_pairs": plan.queue_capacity_pairs,
    }


def serve(ctx: Context, kind: str, label: str, overrides: dict[str, Any] | None = None):
    """The real `relevance serve` on the payload's ``kind`` bundle: a context manager of RunningServer."""
    from contextlib import contextmanager

    from loadtest.servers import free_port, managed_server, relevance_command, relevance_env

    @contextmanager
    def started():
        port = free_port()
        env = relevance_env(
            ctx.payload.bundle(kind), port, setting_env({**base_settings(ctx), **(overrides or {})})
        )
        with managed_server(
            f"relevance {label}",
            relevance_command(),
            port=port,
            ready_path=READY_PATH,
            log_path=ctx.work / f"server-{label}.log",
            env=env,
            startup_timeout_s=min(180.0, max(30.0, ctx.deadline.left())),
        ) as server:
            ctx.servers[server.pid] = label
            try:
                import httpx

                ready = httpx.get(server.base_url + READY_PATH, timeout=5).json()
                provider = ready.get("provider")
                expected = "CUDAExecutionProvider" if ctx.plan.provider == "cuda" else "CPUExecutionProvider"
                if provider != expected:
                    raise RuntimeError(f"{label}: /readyz says provider {provider!r}, expected {expected}")
                yield server, ready
            finally:
                ctx.servers.pop(server.pid, None)

    return started()


def level_cost(plan: Plan, duration_s: float) -> float:
    return plan.warmup_s + duration_s + 2.0


def sweep_levels(ctx: Context, server, label: str, clients: tuple[int, ...], duration_s: float) -> list[dict]:
    from loadtest.bench import BenchOptions, measure_level
    from loadtest.targets import Target

    opts = BenchOptions(
        bundles=[], duration_s=duration_s, warmup_s=ctx.plan.warmup_s, timeout_s=ctx.plan.timeout_s
    )
    target = Target(f"relevance {label}", server.base_url)
    records = []
    for c in clients:
        if not ctx.deadline.allows(level_cost(ctx.plan, duration_s)):
            ctx.log(f"  {label}: {c} clients skipped (time limit)")
            records.append({"load": f"closed loop, {c} clients", "skipped": "time limit"})
            continue
        records.append(measure_level(target, ctx.requests, c, opts, server.pid, ctx.log))
    return records


def measured(records: list[dict]) -> list[dict]:
    return [r for r in records if "skipped" not in r]


def open_loop(ctx: Context, server, label: str, rate: float) -> dict[str, Any]:
    from loadtest import report
    from loadtest.bench import QUEUE_DEPTH_GAUGE
    from loadtest.runner import LoadConfig, run_load
    from loadtest.targets import Target

    config = LoadConfig(
        mode="open",
        rate=rate,
        duration_s=ctx.plan.open_duration_s,
        warmup_s=ctx.plan.warmup_s,
        timeout_s=ctx.plan.timeout_s,
        max_connections=1024,
    )
    result = asyncio.run(
        run_load(
            Target(f"relevance {label}", server.base_url),
            ctx.requests,
            config,
            server_pid=server.pid,
            sample_gauges=(QUEUE_DEPTH_GAUGE,),
        )
    )
    record = report.result_record(result)
    ctx.log(
        f"  {label} open loop {rate:.1f} req/s: {record['pairs_per_s']:.1f} pairs/s, p99 {record['latency_ms']['p99']:.1f} ms"
    )
    return record


def service_stage(
    kind: str,
    clients_of: Callable[[Plan], tuple[int, ...]],
    duration_of: Callable[[Plan], float],
    with_open_loop: bool,
):
    def stage(ctx: Context) -> dict[str, Any]:
        with serve(ctx, kind, f"{kind}-defaults") as (server, ready):
            entry: dict[str, Any] = {"readyz": ready, "settings": base_settings(ctx)}
            entry["sweep"] = sweep_levels(ctx, server, kind, clients_of(ctx.plan), duration_of(ctx.plan))
            done = measured(entry["sweep"])
            if with_open_loop and done:
                best = max(done, key=lambda r: r["requests_per_s"])
                rate = max(0.5, ctx.plan.open_loop_share * best["requests_per_s"])
                if ctx.deadline.allows(
                    level_cost(ctx.plan, ctx.plan.open_duration_s) + ctx.plan.timeout_s / 3
                ):
                    entry["open_loop"] = open_loop(ctx, server, kind, rate)
                else:
                    entry["open_loop"] = {"skipped": "time limit"}
        return entry

    return stage


def batch_sweep_stage(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    rows = []
    for k, overrides in enumerate(plan.sweep):
        label = "cross-" + "-".join(f"{v:g}" for v in overrides.values())
        if not ctx.deadline.allows(level_cost(plan, plan.sweep_duration_s) + 15):
            rows.append({"settings": overrides, "skipped": "time limit"})
            continue
        with serve(ctx, "cross", label, overrides) as (server, _):
            ctx.log(f"  batch settings {k + 1}/{len(plan.sweep)}: {overrides}")
            record = sweep_levels(ctx, server, label, (plan.sweep_clients,), plan.sweep_duration_s)[0]
        rows.append({"settings": overrides, **record})
    return {"clients": plan.sweep_clients, "rows": rows}


# --- stage 5: raw session ------------------------------------------------------------------------------


def raw_stage(ctx: Context) -> dict[str, Any]:
    from core.bundle import MODEL_FILE
    from loadtest.efficiency import ModelFlops, raw_onnx_throughput
    from loadtest.gpu.payload import BUNDLES

    entry: dict[str, Any] = {}
    for kind in BUNDLES:
        bundle = ctx.payload.bundle(kind)
        flops = ModelFlops.from_onnx(bundle / MODEL_FILE)
        entry[kind] = {"flops": asdict(flops), "runs": []}
        for per_batch in ctx.plan.raw_requests_per_batch:
            if not ctx.deadline.allows(ctx.plan.raw_seconds + 5):
                entry[kind]["runs"].append({"requests_per_batch": per_batch, "skipped": "time limit"})
                continue
            raw = raw_onnx_throughput(
                bundle,
                ctx.requests,
                flops=flops,
                max_seconds=ctx.plan.raw_seconds,
                provider=ctx.plan.provider,
                strict=True,
                requests_per_batch=per_batch,
            ).as_dict()
            entry[kind]["runs"].append({"requests_per_batch": per_batch, **raw})
            ctx.log(
                f"  raw {kind} {per_batch} req/batch on {raw['provider']}: {raw['pairs_per_s']:.1f} pairs/s ({raw['pairs_per_s_model_only']:.1f} model only)"
            )
    return entry


# --- stage 6: the sentence-transformers peer -----------------------------------------------------------


def peer_stage(ctx: Context) -> dict[str, Any]:
    """CrossEncoder.predict on the student's architecture (random weights: speed does not depend on
    them; payload.py says why they are not carried). k concurrent requests are served the way a
    CrossEncoder server would serve them best: all k·50 pairs in one predict call (batch_size k·50),
    each request's latency being that call's; pairs/s = pairs / total time."""
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        # The GPU image has it (KINDS.md); the project's .venv need not.
        return {"skipped": "sentence-transformers is not installed in this environment"}
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from core.bundle import read_manifest

    device = "cuda" if ctx.plan.provider == "cuda" else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32  # CPU fp16 matmuls are no reference
    hf = ctx.payload.hf_cross
    full = ctx.work / "hf-cross-random"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig.from_pretrained(hf)).to(dtype).save_pretrained(full)
    AutoTokenizer.from_pretrained(hf).save_pretrained(full)
    manifest = read_manifest(ctx.payload.bundle("cross"))
    model = CrossEncoder(str(full), device=device, max_length=manifest.max_pair_tokens)
    model.to(dtype)
    template = manifest.template
    requests = [
        [(template.query_text(r.query), template.item_text(i)) for i in r.items] for r in ctx.requests
    ]
    records = []
    for k in ctx.plan.peer_levels:
        if not ctx.deadline.allows(ctx.plan.peer_seconds + 3):
            records.append({"load": f"closed loop, {k} clients", "skipped": "time limit"})
            continue
        batches = [
            sum((requests[(s + j) % len(requests)] for j in range(k)), []) for s in range(0, len(requests), k)
        ]
        model.predict(batches[0], batch_size=len(batches[0]), show_progress_bar=False)  # warm-up
        latencies, pairs, t0 = [], 0, time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < ctx.plan.peer_seconds or not latencies:
            batch = batches[n % len(batches)]
            start = time.perf_counter()
            model.predict(batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True)
            latencies.append((time.perf_counter() - start) * 1000)
            pairs += len(batch)
            n += 1
        elapsed = time.perf_counter() - t0
        lat = np.array(latencies)
        records.append(
            {
                "target": f"sentence-transformers CrossEncoder {str(dtype).removeprefix('torch.')} ({device})",
                "load": f"closed loop, {k} clients",
                "requests": len(latencies) * k,
                "ok": len(latencies) * k,
                "error_rate": 0.0,
                "requests_per_s": len(latencies) * k / elapsed,
                "pairs_per_s": pairs / elapsed,
                "latency_ms": {
                    q: float(np.percentile(lat, p)) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
                }
                | {"max": float(lat.max())},
                "peak_rss_mib": None,
            }
        )
        ctx.log(
            f"  CrossEncoder {k} requests/call: {records[-1]['pairs_per_s']:.1f} pairs/s, p99 {records[-1]['latency_ms']['p99']:.1f} ms"
        )
    return {
        "sweep": records,
        "weights": "random (same architecture and max_length as the student)",
        "dtype": str(dtype),
    }


# --- stage 7: efficiency and targets -------------------------------------------------------------------


def summarise(ctx: Context) -> dict[str, Any]:
    from loadtest import compare
    from loadtest.bench import efficiency_summary
    from loadtest.efficiency import ModelFlops

    stages = ctx.results.get("stages", {})
    peak = stages.get("peak", {}).get("flops")
    out: dict[str, Any] = {"peak": stages.get("peak", {}).get("what"), "dry_run": ctx.dry_run}
    cross_sweep = measured(stages.get("serve_cross", {}).get("sweep", []))
    peer_sweep = measured(stages.get("peer", {}).get("sweep", []))
    if cross_sweep and peer_sweep:
        out["peer_comparison"] = compare.compare_sweeps(cross_sweep, peer_sweep)
    for kind, stage in (("cross", "serve_cross"), ("bi", "serve_bi")):
        sweep = measured(stages.get(stage, {}).get("sweep", []))
        raw_runs = [r for r in stages.get("raw", {}).get(kind, {}).get("runs", []) if "skipped" not in r]
        if not (sweep and raw_runs and peak):
            continue
        raw = max(raw_runs, key=lambda r: r["pairs_per_s"])  # HTTP against the best raw batching
        flops = ModelFlops(**stages["raw"][kind]["flops"])
        items = ctx.requests[0].n_items
        rows_per_pair = 1.0 if kind == "cross" else (items + 1) / items
        out[f"efficiency_{kind}"] = efficiency_summary(flops, raw, sweep, peak, rows_per_pair) | {
            "raw_requests_per_batch": raw["requests_per_batch"]
        }
    targets = []
    if cross_sweep:
        within = [r["pairs_per_s"] for r in cross_sweep if r["latency_ms"]["p99"] <= TARGET_P99_MS]
        best = max(within, default=0.0)
        targets.append(
            (
                f"≥ {TARGET_PAIRS_PER_S:,} pairs/s through HTTP with p99 ≤ {TARGET_P99_MS:g} ms",
                f"{best:,.0f} pairs/s",
                best >= TARGET_PAIRS_PER_S,
            )
        )
    eff = out.get("efficiency_cross")
    if eff:
        targets.append(
            (
                f"HTTP ≥ {TARGET_HTTP_OVER_RAW:.0%} of the raw session's pairs/s",
                f"{eff['http_over_raw_pairs_per_s']:.2f}",
                eff["http_over_raw_pairs_per_s"] >= TARGET_HTTP_OVER_RAW,
            )
        )
        s = eff["scaling_32_over_1"]
        targets.append(
            (
                f"32 clients ≥ {TARGET_SCALING_32_OVER_1:g}× the pairs/s of 1",
                f"{s:.2f}×",
                bool(s >= TARGET_SCALING_32_OVER_1),
            )
        )
    if out.get("peer_comparison"):
        ratios = [
            r["throughput_ratio_at_equal_p99"]
            for r in out["peer_comparison"]
            if not math.isnan(r.get("throughput_ratio_at_equal_p99", math.nan))
        ]
        if ratios:
            targets.append(
                (
                    f"≥ {TARGET_OVER_PEER:g}× CrossEncoder fp16 at equal latency",
                    f"{min(ratios):.2f}–{max(ratios):.2f}×",
                    min(ratios) >= TARGET_OVER_PEER,
                )
            )
    parity = stages.get("parity", {})
    for kind in ("cross", "bi"):
        if kind in parity:
            targets.append(
                (
                    f"{kind} fp16 vs CPU fp32 within the export gates",
                    f"Spearman {parity[kind].get(f'fp16 on {ctx.plan.provider}_spearman_vs_fp32', math.nan):.4f}",
                    parity[kind]["passed"],
                )
            )
    out["targets"] = [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in targets]
    return out


# --- Markdown ------------------------------------------------------------------------------------------


def write_markdown(ctx: Context) -> str:
    from loadtest import compare, report

    res, stages = ctx.results, ctx.results.get("stages", {})
    host = stages.get("machine", {}).get("host", {})
    lines = [
        f"### GPU check {'(DRY RUN on CPU: not benchmark figures) ' if ctx.dry_run else ''}{host.get('date_utc', '')}",
        "",
        f"Machine: {stages.get('machine', {}).get('gpu', '?')}; host {host.get('cpu', '?')}, {host.get('cores', '?')} cores; "
        f"onnxruntime {stages.get('machine', {}).get('onnxruntime', '?')}; commit {host.get('git_commit') or '?'}; "
        f"total {res.get('elapsed_s', math.nan):.0f} s of a {ctx.plan.time_limit_s:.0f} s limit.",
        "",
    ]
    if res.get("aborted"):
        lines += [f"**Aborted**: {res['aborted']}", ""]
    summary = res.get("summary", {})
    if summary.get("targets"):
        lines += ["| target | measured | met? |", "|---|---|---|"]
        lines += [
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            for t in summary["targets"]
        ]
        lines.append("")
    for name, entry in stages.items():
        if "skipped" in entry or "error" in entry:
            lines += [f"- stage `{name}`: {entry.get('skipped') or entry.get('error')}"]
    lines.append("")
    parity = stages.get("parity", {})
    if any(k in parity for k in ("cross", "bi")):
        lines += [f"#### Parity: fp16 on {ctx.plan.provider} vs CPU fp32 {parity.get('note', '')}", ""]
        lines += ["| bundle | pairs | passed | max abs diff | detail |", "|---|---:|---|---:|---|"]
        for kind in ("cross", "bi"):
            if kind in parity:
                p = parity[kind]
                detail = p.get("reason") or ", ".join(
                    f"{k} {v:.4g}" for k, v in p.items() if isinstance(v, float) and k != "max_abs_diff"
                )
                lines.append(
                    f"| {kind} | {p['pairs']} | {p['passed']} | {p['max_abs_diff']:.2e} | {detail} |"
                )
        lines.append("")
    for kind in ("cross", "bi"):
        entry = stages.get(f"serve_{kind}", {})
        sweep = measured(entry.get("sweep", []))
        if sweep:
            lines += [
                f"#### Service, {kind} fp16 bundle, default batch settings",
                "",
                report.sweep_table(
                    sweep + ([entry["open_loop"]] if "latency_ms" in entry.get("open_loop", {}) else [])
                ),
                "",
            ]
            heaviest = max(sweep, key=lambda r: r["pairs_per_s"])
            lines += [
                f"Server-side histograms at {heaviest['load']}:",
                "",
                report.histogram_table(heaviest),
                "",
            ]
    sweep = stages.get("batch_sweep", {}).get("rows", [])
    if sweep:
        lines += [
            f"#### Batch settings, cross, {stages['batch_sweep']['clients']} clients",
            "",
            "| max pairs | max tokens | max wait ms | pairs/s | p99 ms | mean batch |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sweep:
            s = row["settings"]
            if "latency_ms" not in row:
                lines.append(
                    f"| {s['batch_max_pairs']} | {s['batch_max_tokens']} | {s['batch_max_wait_ms']} | {row.get('skipped', '–')} | | |"
                )
                continue
            batch = row.get("server_histograms", {}).get("relevance_batch_size_pairs", {}).get("mean")
            lines.append(
                f"| {s['batch_max_pairs']} | {s['batch_max_tokens']} | {s['batch_max_wait_ms']} | {report.fmt(row['pairs_per_s'])} | {report.fmt(row['latency_ms']['p99'])} | {report.fmt(batch)} |"
            )
        lines.append("")
    raw = stages.get("raw", {})
    if any(k in raw for k in ("cross", "bi")):
        lines += [
            "#### Raw session (OnnxModel, IO binding on CUDA)",
            "",
            "| bundle | requests per batch | provider | pairs/s | model-only pairs/s | mean padded length |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for kind in ("cross", "bi"):
            for r in raw.get(kind, {}).get("runs", []):
                if "skipped" in r:
                    continue
                lines.append(
                    f"| {kind} | {r['requests_per_batch']} | {r['provider']} | {report.fmt(r['pairs_per_s'])} | {report.fmt(r['pairs_per_s_model_only'])} | {report.fmt(r['mean_padded_length'])} |"
                )
        lines.append("")
    peer = measured(stages.get("peer", {}).get("sweep", []))
    if peer:
        lines += [
            "#### sentence-transformers CrossEncoder, same device, same requests",
            "",
            "k clients = k requests scored in one predict call.",
            "",
            report.sweep_table(peer),
            "",
        ]
        if summary.get("peer_comparison"):
            lines += [compare.comparison_table(summary["peer_comparison"], "relevance", "CrossEncoder"), ""]
    for kind in ("cross", "bi"):
        eff = summary.get(f"efficiency_{kind}")
        if eff:
            lines += [
                f"Efficiency, {kind}: peak {summary['peak']} = {stages['peak']['flops'] / 1e12:.3g} TFLOP/s; "
                f"raw ({eff['raw_requests_per_batch']} requests/batch) {100 * eff['raw_fraction_of_peak']:.2f} % of it, "
                f"HTTP ({eff['http_best_load']}) {100 * eff['http_fraction_of_peak']:.2f} %; HTTP/raw {eff['http_over_raw_pairs_per_s']:.2f}; "
                f"32/1 clients {eff['scaling_32_over_1']:.2f}×; peak RSS {eff['peak_rss_mib']:.0f} MiB.",
                "",
            ]
    dmon = res.get("dmon", {})
    if "skipped" in dmon:
        lines += [f"GPU utilisation: not recorded ({dmon['skipped']}).", ""]
    elif dmon:
        lines += [
            "| stage | SM % mean / max | memory % mean / max | power W mean / max |",
            "|---|---:|---:|---:|",
        ]
        for name, cols in dmon.items():
            if isinstance(cols, dict) and cols:
                cells = [
                    f"{cols[c]['mean']:.0f} / {cols[c]['max']:.0f}" if c in cols else "–"
                    for c in ("sm", "mem", "pwr")
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines) + "\n"
    (ctx.out / "results.md").write_text(text)
    return text


# --- main ----------------------------------------------------------------------------------------------


def ensure_cuda_library_path(dry_run: bool) -> None:
    """On the GPU machine, re-run this process once with the nvidia-* libraries on LD_LIBRARY_PATH (the
    dynamic loader reads it only at start); the servers inherit it."""
    if dry_run or os.environ.get(LIBS_MARKER):
        return
    dirs = cuda_library_dirs()
    os.environ[LIBS_MARKER] = "1"
    if dirs:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*dirs, os.environ.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
        os.execv(sys.executable, [sys.executable, "-m", "loadtest.gpu.run", *sys.argv[1:]])


def run(payload_dir: Path, out: Path, *, dry_run: bool, plan: Plan | None = None) -> dict[str, Any]:
    from loadtest.gpu.payload import Payload
    from loadtest.workload import SizeDistribution, Workload

    plan = plan or (DRY_PLAN if dry_run else GPU_PLAN)
    payload = Payload(payload_dir)
    payload.check()
    out.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}-work"  # server logs and the peer's model: not carried back
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(plan, dry_run, payload, out, work, Deadline(plan.time_limit_s))
    ctx.results = {"dry_run": dry_run, "plan": asdict(plan), "payload": str(payload_dir)}
    if dry_run:
        ctx.log(
            "DRY RUN: CPU provider, tiny loads; skipped: nvidia-smi and dmon, the CUDA provider, the bf16 peak"
        )
    watchdog = start_watchdog(ctx)
    dmon = None
    try:
        ctx.requests = Workload.from_bundled(SizeDistribution.parse(plan.items), seed=0).take(
            plan.prepared_requests
        )
        run_stage(ctx, "machine", machine_stage)
        if "error" in ctx.results["stages"]["machine"]:
            return ctx.results  # no CUDA provider: every other figure would be a CPU one
        dmon = start_dmon(ctx)
        run_stage(ctx, "peak", peak_stage)
        run_stage(ctx, "parity", parity_stage, min_s=10)
        run_stage(
            ctx,
            "serve_cross",
            service_stage("cross", lambda p: p.clients, lambda p: p.duration_s, True),
            min_s=30,
        )
        run_stage(
            ctx,
            "serve_bi",
            service_stage("bi", lambda p: p.bi_clients, lambda p: p.bi_duration_s, False),
            min_s=20,
        )
        run_stage(ctx, "batch_sweep", batch_sweep_stage, min_s=20)
        run_stage(ctx, "raw", raw_stage, min_s=5)
        run_stage(ctx, "peer", peer_stage, min_s=10)
    finally:
        if dmon is not None:
            dmon.terminate()
            dmon.wait(timeout=10)
            ctx.results["dmon"] = dmon_summary(out / "nvidia-smi-dmon.txt", ctx.results.get("stages", {}))
        ctx.results["summary"] = summarise(ctx)
        ctx.results["elapsed_s"] = time.monotonic() - ctx.deadline.started
        ctx.write()
        collect_server_logs(work, out / "servers.log")
        print(write_markdown(ctx))
        watchdog.cancel()
    return ctx.results


def collect_server_logs(work: Path, into: Path, lines: int = 60) -> None:
    """One file for every server's log tail: the device returns at most 8 files."""
    parts = []
    for log in sorted(work.glob("server-*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"===== {log.name} (last {lines} lines)\n" + "\n".join(tail))
    into.write_text("\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.gpu.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--payload", type=Path, default=Path(".gpu-carry/payload"), help="the extracted payload (payload.py)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="results folder (results.json, results.md, ...)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU provider, tiny loads: checks the script, measures nothing"
    )
    args = parser.parse_args(argv)
    ensure_cuda_library_path(args.dry_run)
    results = run(args.payload, args.out, dry_run=args.dry_run)
    failed = [name for name, entry in results.get("stages", {}).items() if "error" in entry]
    if failed:
        print(f"stages that failed: {', '.join(failed)} (see {args.out}/results.json)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
