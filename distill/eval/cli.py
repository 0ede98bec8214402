"""``relevance eval``: score a labelled set with several systems and write a report folder."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from distill.data.reading import DataError
from distill.data.schema import LabelledPair


def resolve_data(data: str, fmt: str | None, split: str | None
                 ) -> tuple[list[LabelledPair], list[LabelledPair], list[LabelledPair] | None, str]:
    """(pairs to evaluate, the whole dataset = catalogue, calibration pairs or None, description)."""
    from distill.data.splits import split_by_query

    if data.startswith("bundled"):
        from distill.data.bundled import load_bundled

        _, _, name = data.partition(":")
        name = name or split or "dev"
        if name not in ("train", "dev", "all"):
            raise typer.BadParameter(f"bundled split must be train, dev or all, not {name!r}", param_hint="--data")
        every = load_bundled("all")
        other = {"dev": "train", "train": "dev"}.get(name)
        return (load_bundled(name), every, load_bundled(other) if other else None,
                f"bundled ESCI US data, {name} split (distill/data/bundled/splits.json)")
    from distill.data.loaders import EXTERNAL_DATASETS, external_dataset, load_pairs

    name, _, named_split = data.partition(":")
    if name in EXTERNAL_DATASETS:  # e.g. crowdflower:dev
        data, split = str(external_dataset(name)), named_split or split
    result = load_pairs(data, fmt)
    report = result.report
    typer.echo(report.summary(), err=True)
    every = result.pairs
    name = split or "all"
    desc = (f"{data} ({report.format}; {report.rows_read} rows, {report.pairs} pairs, "
            f"{report.skipped_total} skipped: {report.skipped or 'none'})")
    if name == "all":
        return every, every, None, desc + ", all pairs"
    if name not in ("train", "dev"):
        raise typer.BadParameter(f"split must be train, dev or all, not {name!r}", param_hint="--split")
    parts = split_by_query(every)
    other = "train" if name == "dev" else "dev"
    return parts[name], every, parts[other], desc + f", {name} split by query (distill/data/splits.py)"


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        data: Annotated[str, typer.Option(
            help="bundled:train|dev|all, home-depot:SPLIT, crowdflower:SPLIT, or a dataset path (file or folder)")],
        system: Annotated[list[str], typer.Option(
            help="bm25 | bundle:PATH | annotations:PATH.jsonl (repeat; the first is the reference)")],
        out: Annotated[Path, typer.Option(help="report folder to write")],
        format: Annotated[str | None, typer.Option(help="dataset format when --data is a path (default: detect)")] = None,
        split: Annotated[str | None, typer.Option(help="train | dev | all (paths: split by query; default all)")] = None,
        slice: Annotated[list[str], typer.Option(help="extra slice to report: long-tail | negation (repeat)")] = [],  # noqa: B006
        calibrate: Annotated[bool, typer.Option(
            help="map score-only systems to grades/probabilities on the other split")] = True,
        max_queries: Annotated[int | None, typer.Option(
            min=1, help="evaluate (and calibrate on) at most this many queries, chosen by hash")] = None,
        resamples: Annotated[int, typer.Option(min=10, help="bootstrap resamples of queries")] = 1000,
        seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    ) -> None:
        """Score a labelled set with each --system and write metrics.json, report.md and plots to --out."""
        import numpy as np

        from distill.eval.evaluate import EvalSet, evaluate, predictions
        from distill.eval.report import write_report
        from distill.eval.slices import SLICES
        from distill.eval.systems import score_system

        for name in slice:
            if name not in SLICES:
                raise typer.BadParameter(f"unknown slice {name!r}; choose from {', '.join(SLICES)}", param_hint="--slice")
        if len(set(system)) != len(system):
            raise typer.BadParameter(f"each --system may be given once (got {system})", param_hint="--system")
        try:
            pairs, catalogue, calib_pairs, description = resolve_data(data, format, split)
            if max_queries:
                from distill.data.splits import sample_queries

                pairs = sample_queries(pairs, max_queries)
                calib_pairs = sample_queries(calib_pairs, max_queries) if calib_pairs else None
                description += f"; at most {max_queries} queries of each split, chosen by hash"
            if not pairs:
                raise DataError(f"{data}: no pairs in the selected split")
            unlabelled = [p for p in pairs + (calib_pairs or []) if p.label is None]
            if unlabelled:
                raise DataError(f"{len(unlabelled)} pairs have no label (e.g. {unlabelled[0].source}); "
                                "evaluation needs labelled pairs")
            outputs, calib_outputs = [], []
            for spec in system:
                typer.echo(f"scoring {len(pairs)} pairs with {spec}", err=True)
                outputs.append(score_system(spec, pairs, catalogue))
                if calibrate and calib_pairs and outputs[-1].grade_probs is None:
                    typer.echo(f"scoring {len(calib_pairs)} calibration pairs with {spec}", err=True)
                    calib_outputs.append(score_system(spec, calib_pairs, catalogue))
                else:
                    calib_outputs.append(None)
        except (DataError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        # Short names (file or folder name) where unique; the whole spec where two would collide.
        short = Counter(o.name for o in outputs)
        for o, spec in zip(outputs, system, strict=True):
            if short[o.name] > 1:
                o.name = spec
        # Compare systems on the same pairs: those every system scored.
        scored = np.all([~np.isnan(o.scores) for o in outputs], axis=0)
        unscored = {o.name: int(np.isnan(o.scores).sum()) for o in outputs}
        if not scored.any():
            typer.echo(f"error: no pair was scored by every system (unscored per system: {unscored})", err=True)
            raise typer.Exit(2)
        es = EvalSet([p for p, keep in zip(pairs, scored, strict=True) if keep])
        calib_es = EvalSet(calib_pairs) if calib_pairs else None
        preds = {}
        for o, c in zip(outputs, calib_outputs, strict=True):
            o.scores = o.scores[scored]
            if o.grade_probs is not None:
                o.grade_probs = o.grade_probs[scored]
            preds[o.name] = predictions(o, (calib_es, c) if c is not None else None)
        sections = {"All queries": evaluate(es, preds, resamples=resamples, seed=seed, progress=True)}
        for name in dict.fromkeys(slice):
            title, queries_of = SLICES[name]
            in_slice = queries_of(catalogue)
            mask = np.array([p.query_id in in_slice for p in es.pairs])
            if mask.any():
                sub = es.subset(mask)
                sub_preds = {n: _restrict(p, mask) for n, p in preds.items()}
                sections[title] = evaluate(sub, sub_preds, resamples=resamples, seed=seed, progress=True)
            else:
                typer.echo(f"{name} slice: no evaluated query is in it", err=True)
        for o in outputs:
            for section in sections.values():
                section["systems"][o.name]["info"] = o.info
        result = {
            "command": "relevance " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "data": {"name": data if ":" in data else "/".join(Path(data).parts[-2:]) + (f":{split}" if split else ""),
                     "description": description,
                     "pairs_dropped_unscored": int((~scored).sum()), "unscored_per_system": unscored},
            "sections": sections,
        }
        for path in write_report(out, result, preds, es.labels):
            typer.echo(f"wrote {path}", err=True)
        from distill.eval.report import metrics_table

        for title, section in sections.items():
            typer.echo(f"\n{title}\n{metrics_table(section)}")

    @app.command("eval-seeds")
    def eval_seeds(
        reports: Annotated[list[Path], typer.Argument(help="report folders of `relevance eval` (metrics.json), "
                                                           "systems in the same order in each")],
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
                raise typer.BadParameter(f"{path} has no section {section!r} (it has {list(found)})",
                                         param_hint="--section")
            sections.append(found[section])
        try:
            typer.echo(seeds_table(sections))
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


def _restrict(pred, mask):
    from distill.eval.evaluate import Predictions

    return Predictions(pred.scores[mask], None if pred.p_relevant is None else pred.p_relevant[mask],
                       None if pred.grades is None else pred.grades[mask], pred.method)
