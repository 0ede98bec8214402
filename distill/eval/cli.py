"""``relevance eval``: ``run`` scores a labelled set with several systems and writes a report folder;
``seeds`` averages the paired differences of repeated runs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.datasets import SPEC_HELP, Split
from distill.eval.slices import Slice


def register(app: typer.Typer) -> None:
    eval_app = typer.Typer(
        help="Evaluation: score labelled sets with several systems; compare repeated runs.",
        no_args_is_help=True,
    )
    app.add_typer(eval_app, name="eval")

    @eval_app.command("run")
    def run(
        data: Annotated[str, typer.Option(help=SPEC_HELP)],
        system: Annotated[
            list[str],
            typer.Option(
                help="bm25 | bundle:PATH | ensemble:DIR | annotations:PATH.jsonl (repeat; the first is the "
                "reference)"
            ),
        ],
        out: Annotated[Path, typer.Option(help="report folder to write")],
        format: Annotated[
            str | None, typer.Option(help="dataset format when --data is a path (default: detect)")
        ] = None,
        split: Annotated[Split | None, typer.Option(help="paths: split by query; default all")] = None,
        slice: Annotated[list[Slice], typer.Option(help="extra slice to report (repeat)")] = [],  # noqa: B006
        calibrate: Annotated[
            bool, typer.Option(help="map score-only systems to grades/probabilities on the other split")
        ] = True,
        max_queries: Annotated[
            int | None,
            typer.Option(min=1, help="evaluate (and calibrate on) at most this many queries, chosen by hash"),
        ] = None,
        compare: Annotated[
            list[str],
            typer.Option(
                help="'A,B': also the paired difference A − B of two --system specs (repeat); every "
                "system is compared with the first anyway"
            ),
        ] = [],  # noqa: B006
        resamples: Annotated[int, typer.Option(min=10, help="bootstrap resamples of queries")] = 1000,
        seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    ) -> None:
        """Score a labelled set with each --system and write metrics.json, report.md and plots to --out."""
        from distill.data.reading import DataError
        from distill.eval.report import metrics_table, write_report
        from distill.eval.run import run_evaluation

        if len(set(system)) != len(system):
            raise typer.BadParameter(f"each --system may be given once (got {system})", param_hint="--system")
        pairs = []
        for text in compare:
            a, sep, b = text.partition(",")
            if not sep or not a or not b:
                raise typer.BadParameter(f"{text!r} is not 'A,B'", param_hint="--compare")
            pairs.append((a, b))
        try:
            evaluation = run_evaluation(
                data,
                system,
                fmt=format,
                split=split,
                slices=slice,
                calibrate=calibrate,
                max_queries=max_queries,
                resamples=resamples,
                seed=seed,
                command="relevance " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                log=lambda message: typer.echo(message, err=True),
                progress=True,
                compare=pairs,
            )
        except (DataError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        for path in write_report(out, evaluation.result, evaluation.predictions, evaluation.labels):
            typer.echo(f"wrote {path}", err=True)
        for title, section in evaluation.result["sections"].items():
            typer.echo(f"\n{title}\n{metrics_table(section)}")

    @eval_app.command("seeds")
    def seeds(
        reports: Annotated[
            list[Path],
            typer.Argument(
                help="report folders of `relevance eval run` (metrics.json), "
                "systems in the same order in each"
            ),
        ],
        section: Annotated[str, typer.Option(help="report section, e.g. 'Negation queries'")] = "All queries",
    ) -> None:
        """Average the paired differences of repeated evaluations (e.g. one per training seed): mean,
        range, and how many reports had a CI above (↑) or below (↓) 0."""
        import json

        from distill.eval.report import seeds_table

        sections = []
        for folder in reports:
            path = folder / "metrics.json"
            if not path.is_file():
                raise typer.BadParameter(f"{path} not found", param_hint="REPORTS")
            found = json.loads(path.read_text(encoding="utf-8"))["sections"]
            if section not in found:
                raise typer.BadParameter(
                    f"{path} has no section {section!r} (it has {list(found)})", param_hint="--section"
                )
            sections.append(found[section])
        try:
            typer.echo(seeds_table(sections))
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
