"""``relevance experiment``: run a whole experiment chain, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.experiments.hd import FAMILIES, KD_CHOSEN, VARIANTS, Budget


def register(app: typer.Typer) -> None:
    experiment_app = typer.Typer(
        help="Experiments: whole chains from data to bundles, resumable.", no_args_is_help=True
    )
    app.add_typer(experiment_app, name="experiment")

    @experiment_app.command("hd")
    def hd(
        budget: Annotated[
            Budget, typer.Option(help="full (Home Depot) or smoke (bundled ESCI, a few steps)")
        ] = Budget.full,
        root: Annotated[
            Path, typer.Option(help="folder that gets runs/, models/students/ and reports/")
        ] = Path("."),
        seeds: Annotated[
            str | None,
            typer.Option(
                help="training seeds of the students, e.g. 0,1 (default: the plan's, 0,1,2 in full)"
            ),
        ] = None,
        students: Annotated[
            str,
            typer.Option(
                help="student families to train, in order: cross2 (2-layer cross-encoder), bi6 (6-layer "
                "bi-encoder from the zero-shot default's weights)"
            ),
        ] = ",".join(FAMILIES),
        sweep: Annotated[
            bool,
            typer.Option(
                "--sweep",
                help="the KD weight/temperature sweep (full-MKD students of the first seed, one knob moved "
                "at a time around --kd-weight/--kd-temperature; hd.py: SWEEP_FACTORS) in place of the "
                "students and evaluations; writes sweep.md",
            ),
        ] = False,
        kd_weight: Annotated[
            float,
            typer.Option(
                help="weight of the KD students' score-KD term (chosen on Home Depot dev by the first "
                "sweep; 1 is the trainer's default)"
            ),
        ] = KD_CHOSEN[0],
        kd_temperature: Annotated[
            float, typer.Option(help="temperature of the KD students' score-KD term")
        ] = KD_CHOSEN[1],
        student_steps: Annotated[
            int | None,
            typer.Option(
                help="optimiser steps of every student, twins included (default: the plan's, 2,000 in "
                "full); other than the plan's, the run names carry it (cross2-label-n6000-s0)"
            ),
        ] = None,
        variants: Annotated[
            str,
            typer.Option(
                help="the students each seed gets: label (the twin, always), mkd, score-kd, label-warm "
                "(first seed: the warm-start ablation); e.g. label,mkd for a round of twins and full MKD only"
            ),
        ] = ",".join(VARIANTS),
        summary: Annotated[
            bool,
            typer.Option(
                "--summary",
                help="print the issue's checks from the eval reports there so far, run nothing",
            ),
        ] = False,
    ) -> None:
        """Home Depot distillation: transfer set, teacher rungs, label-only and MKD students, eval,
        experiment.json and summary.md (distill/experiments/hd.py). Steps whose output exists are skipped: rerun to resume."""
        from distill.experiments.hd import (
            Experiment,
            check_families,
            check_kd,
            check_student_steps,
            check_variants,
            run_experiment,
            summarise,
            summarise_sweep,
        )

        try:
            chosen = tuple(int(s) for s in seeds.split(",")) if seeds else None
        except ValueError:
            raise typer.BadParameter(
                f"comma-separated integers, got {seeds!r}", param_hint="--seeds"
            ) from None
        families = tuple(f.strip() for f in students.split(","))
        chosen_variants = tuple(v.strip() for v in variants.split(","))
        # Experiment runs the same checks; run here first, each error names the option it is about.
        for check, value, hint in (
            (check_families, families, "--students"),
            (check_kd, (kd_weight, kd_temperature), "--kd-weight/--kd-temperature"),
            (check_variants, chosen_variants, "--variants"),
            (check_student_steps, student_steps, "--student-steps"),
        ):
            try:
                if value is not None:
                    check(value)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=hint) from None
        try:
            experiment = Experiment(
                root=root, budget=budget, seeds=chosen, families=families, sweep=sweep,
                kd=(kd_weight, kd_temperature), student_steps=student_steps, variants=chosen_variants,
            )  # fmt: skip
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--seeds") from None
        if summary:
            typer.echo(summarise_sweep(experiment) if sweep else summarise(experiment))
            return
        try:
            run_experiment(experiment, echo=typer.echo)
        except RuntimeError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None
