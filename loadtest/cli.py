"""`relevance bench` (the standard scenario) and `relevance loadtest` (one run against any URL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from loadtest.reliability import Scenario
from loadtest.runner import LoadMode

DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")


def _default_bundles() -> list[Path]:
    """The default bundle plus every student bundle built under models/ (student*/ and students/*/)."""
    found = [DEFAULT_BUNDLE] if (DEFAULT_BUNDLE / "bundle.json").is_file() else []
    for pattern in ("student*/bundle.json", "students/*/bundle.json"):
        found += sorted(p.parent for p in Path("models").glob(pattern))
    return found


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{option}: expected positive integers, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        bundle: Annotated[
            list[Path] | None,
            typer.Option(
                help="Bundle folder(s); default: the default bundle and every student bundle under models/."
            ),
        ] = None,
        clients: Annotated[str, typer.Option(help="Closed-loop client counts to sweep.")] = "1,8,32,64",
        items: Annotated[
            str, typer.Option(help="Items per request: 'fixed:50' or 'uniform:20-200'.")
        ] = "fixed:50",
        duration: Annotated[float, typer.Option(help="Measured seconds per load level.")] = 10.0,
        warmup: Annotated[float, typer.Option(help="Unmeasured warm-up seconds per load level.")] = 2.0,
        infinity: Annotated[
            bool, typer.Option(help="Run Infinity side by side (needs .venv-infinity).")
        ] = True,
        infinity_venv: Annotated[Path, typer.Option(help="Virtualenv holding infinity_emb.")] = Path(
            ".venv-infinity"
        ),
        infinity_engine: Annotated[
            str,
            typer.Option(
                help="Infinity's engine: optimum (ONNX of the bundle's weights at the bundle's precision, "
                "loadtest/hf_onnx.py) or torch (its fp32 PyTorch path)."
            ),
        ] = "optimum",
        runs_dir: Annotated[
            Path,
            typer.Option(
                help="Folder of the cross bundles' training runs, for Infinity's copy of the weights."
            ),
        ] = Path("runs"),
        infinity_rerank_model: Annotated[
            Path | None,
            typer.Option(
                help="HF-format cross-encoder folder for Infinity's rerank endpoint (cross bundles)."
            ),
        ] = None,
        efficiency: Annotated[
            bool, typer.Option(help="Measure matmul peak share and the raw ONNX session.")
        ] = True,
        raw_seconds: Annotated[float, typer.Option(help="Seconds of raw ONNX scoring per bundle.")] = 10.0,
        embedding_cache: Annotated[
            bool,
            typer.Option(
                help="Keep the service's item-embedding cache on (off by default: compute-bound, like Infinity)."
            ),
        ] = False,
        quick: Annotated[bool, typer.Option(help="Short smoke run: 1 and 8 clients, 4 s each.")] = False,
        out: Annotated[
            Path | None, typer.Option(help="Report folder (default reports/bench-<date>).")
        ] = None,
    ) -> None:
        """Benchmark the service (real uvicorn) against Infinity and the raw ONNX session; print Markdown."""
        from core.bundle import BundleError, read_manifest
        from loadtest.bench import INFINITY_ENGINES, BenchOptions, run_bench
        from loadtest.workload import SizeDistribution

        bundles = bundle or _default_bundles()
        if not bundles:
            raise typer.BadParameter(
                f"no bundle found: build one (make default-bundle) or pass --bundle "
                f"(looked for {DEFAULT_BUNDLE}, models/student*/ and models/students/*/)"
            )
        for path in bundles:  # fail before starting anything, naming the bundle and the problem
            try:
                read_manifest(path)
            except BundleError as exc:
                raise typer.BadParameter(str(exc), param_hint="--bundle") from None
        if infinity_engine not in INFINITY_ENGINES:
            raise typer.BadParameter(
                f"one of {', '.join(INFINITY_ENGINES)}, got {infinity_engine!r}",
                param_hint="--infinity-engine",
            )
        try:
            SizeDistribution.parse(items)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--items") from None
        opts = BenchOptions(
            bundles=bundles,
            clients=_int_list(clients, "--clients"),
            items=items,
            duration_s=duration,
            warmup_s=warmup,
            infinity=infinity,
            infinity_venv=infinity_venv,
            infinity_engine=infinity_engine,
            infinity_rerank_model=infinity_rerank_model,
            runs_dir=runs_dir,
            efficiency=efficiency,
            raw_onnx_seconds=raw_seconds,
            embedding_cache=embedding_cache,
            out_dir=out,
        )
        if quick:
            opts.clients, opts.duration_s, opts.warmup_s = [1, 8], 4.0, 1.0
            opts.raw_onnx_seconds = 3.0
        _, markdown = run_bench(opts, log=lambda msg: typer.echo(msg, err=True))
        typer.echo(markdown)

    @app.command()
    def frontier(
        eval_reports: Annotated[
            list[Path],
            typer.Option("--eval", help="metrics.json of `relevance eval run` (repeat; one data set)"),
        ],
        bench_reports: Annotated[
            list[Path],
            typer.Option("--bench", help="report.json of `relevance bench` (repeat; one machine)"),
        ],
        out: Annotated[Path, typer.Option(help="folder for frontier.md, frontier.json, frontier.png")] = Path(
            "reports/frontier"
        ),
    ) -> None:
        """Quality against served pairs/s: every bundle of the bench reports with its eval-report quality,
        raw ONNX, HTTP and peer pairs/s; one table and one plot (loadtest/frontier.py)."""
        from loadtest.frontier import FrontierError, write_frontier

        try:
            table, png = write_frontier(eval_reports, bench_reports, out)
        except FrontierError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(table)
        typer.echo(
            f"wrote {out}/frontier.md, frontier.json"
            + (f", {png.name}" if png else " (no plot: nothing evaluated)"),
            err=True,
        )

    @app.command()
    def loadtest(
        url: Annotated[
            str, typer.Option(help="Base URL of a running service (loopback).")
        ] = "http://127.0.0.1:8080",
        mode: Annotated[
            LoadMode, typer.Option(help="closed (fixed concurrency) or open (Poisson arrivals).")
        ] = LoadMode.closed,
        concurrency: Annotated[int, typer.Option(help="Closed loop: concurrent clients.")] = 8,
        rate: Annotated[float, typer.Option(help="Open loop: mean requests per second.")] = 10.0,
        items: Annotated[
            str, typer.Option(help="Items per request: 'fixed:50' or 'uniform:20-200'.")
        ] = "fixed:50",
        duration: Annotated[float, typer.Option(help="Measured seconds.")] = 10.0,
        warmup: Annotated[float, typer.Option(help="Unmeasured warm-up seconds.")] = 2.0,
        server_pid: Annotated[int | None, typer.Option(help="Server pid, to report its peak RSS.")] = None,
        out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    ) -> None:
        """One load run against a running service; prints a Markdown table (and writes JSON with --out)."""
        from pydantic import ValidationError

        from loadtest import report
        from loadtest.runner import LoadConfig, run_load
        from loadtest.targets import Target
        from loadtest.workload import SizeDistribution, Workload

        try:
            config = LoadConfig(
                mode=mode, concurrency=concurrency, rate=rate, duration_s=duration, warmup_s=warmup
            )
            sizes = SizeDistribution.parse(items)
        except ValidationError as exc:
            raise typer.BadParameter(
                "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            ) from None
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        requests = Workload.from_bundled(sizes).take(400)
        result = asyncio.run(
            run_load(
                Target("relevance", url),
                requests,
                config,
                server_pid=server_pid,
                sample_gauges=("relevance_queue_depth_pairs",),
            )
        )
        record = report.result_record(result)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=2, default=str) + "\n")
        typer.echo(report.sweep_table([record]))
        typer.echo("")
        typer.echo(report.histogram_table(record))

    @app.command()
    def reliability(
        scenario: Annotated[Scenario, typer.Argument(help="The scenario (docs/RELIABILITY.md).")],
        bundle: Annotated[Path, typer.Option(help="Bundle to serve.")] = DEFAULT_BUNDLE,
        duration: Annotated[
            float | None,
            typer.Option(
                help="Seconds: overload phase (default 60), burst run (30), restart run (30), each redis phase "
                "(10), replicas run (40)."
            ),
        ] = None,
        clients: Annotated[
            int, typer.Option(help="burst: closed-loop clients; replicas: the same, at most 8.", min=1)
        ] = 64,
        llm: Annotated[bool, typer.Option(help="memory: with the /explain LLM loaded.")] = False,
        factor: Annotated[float, typer.Option(help="overload: offered load / sustainable rate.")] = 5.0,
        items: Annotated[
            int | None, typer.Option(help="Items per /score request (default 10; burst: 50).", min=1)
        ] = None,
        out: Annotated[Path, typer.Option(help="Folder for the JSON result and server logs.")] = Path(
            "reports/reliability"
        ),
    ) -> None:
        """Run one reliability scenario against a real `relevance serve`; print and save its figures as JSON."""
        from core.bundle import BundleError, read_manifest
        from loadtest import reliability as scenarios
        from loadtest.replicas import replicas

        try:
            read_manifest(bundle)
        except BundleError as exc:
            raise typer.BadParameter(str(exc)) from None
        runs = {
            Scenario.overload: lambda: scenarios.overload(
                bundle, factor=factor, duration_s=duration or 60.0, items=items or 10, log_dir=out
            ),
            Scenario.burst: lambda: scenarios.burst(
                bundle, duration_s=duration or 30.0, clients=clients, items=items or 50, log_dir=out
            ),
            Scenario.memory: lambda: scenarios.memory(bundle, llm=llm, log_dir=out),
            Scenario.restart: lambda: scenarios.restart(
                bundle, duration_s=duration or 30.0, items=items or 10, log_dir=out
            ),
            Scenario.redis: lambda: scenarios.redis_fault(bundle, phase_s=duration or 10.0, log_dir=out),
            Scenario.replicas: lambda: replicas(
                bundle, duration_s=duration or 40.0, clients=min(clients, 8), items=items or 10, log_dir=out
            ),
        }
        result = asyncio.run(runs[scenario]())
        out.mkdir(parents=True, exist_ok=True)
        name = f"{scenario}-llm" if scenario == Scenario.memory and llm else scenario
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        typer.echo(json.dumps(result, indent=2, default=str))
