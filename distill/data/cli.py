"""``relevance data``: inspect a dataset file, build transfer sets and held-out folds, maintain the bundled splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.datasets import SPEC_HELP
from distill.data.reading import DataError


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Datasets: load and check files, bundled splits.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("inspect")
    def inspect(
        path: Annotated[Path, typer.Argument(help="dataset file or folder")],
        format: Annotated[str | None, typer.Option(help="format (default: detect)")] = None,
        strict: Annotated[bool, typer.Option(help="stop at the first unusable row")] = False,
    ) -> None:
        """Load a dataset and print what was read, what was skipped and why, and the split sizes."""
        from collections import Counter

        from distill.data.loaders import load_pairs
        from distill.data.splits import split_by_query

        try:
            result = load_pairs(path, format, on_error="raise" if strict else "skip")
        except DataError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(result.report.summary())
        labels = Counter(p.label for p in result.pairs)
        typer.echo(f"labels: {dict(labels)}; queries: {len({p.query_id for p in result.pairs})}")
        for name, part in split_by_query(result.pairs).items():
            typer.echo(f"{name}: {len(part)} pairs, {len({p.query_id for p in part})} queries")

    @data_app.command("transfer-set")
    def transfer_set(
        output: Annotated[Path, typer.Option("--output", "-o", help="JSONL to write (generic format)")],
        input: Annotated[
            str, typer.Option("--input", "-i", help="labelled pairs: " + SPEC_HELP)
        ] = "bundled:train",
        per_query: Annotated[int, typer.Option(min=0, help="unjudged items per query, best BM25 first")] = 4,
        random_per_query: Annotated[
            int, typer.Option(min=0, help="also this many random unjudged items per query (easy negatives)")
        ] = 0,
        seed: Annotated[int, typer.Option(help="seed of the random items (with the query id)")] = 0,
        include_labelled: Annotated[
            bool, typer.Option(help="write the labelled input pairs too, so one file trains a student")
        ] = True,
        force: Annotated[
            bool, typer.Option(help="rebuild even when OUTPUT was built with these options")
        ] = False,
    ) -> None:
        """Unlabelled pairs for distillation: each query with the top-BM25 catalogue items it has no
        judgement for, plus random unjudged ones (label empty), for a teacher to label and a student to
        learn from. Deterministic; OUTPUT is written whole or not at all, and a rerun with the same
        options skips the work (OUTPUT.json records them)."""
        import json
        from collections import Counter

        from distill.data.datasets import load_dataset
        from distill.data.transfer import transfer_pairs, write_generic_jsonl

        options = {
            "input": input,
            "per_query": per_query,
            "random_per_query": random_per_query,
            "seed": seed,
            "include_labelled": include_labelled,
        }
        meta_path = output.with_name(output.name + ".json")
        if not force and output.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("options") == options:
                typer.echo(f"{output} is already built with these options ({meta['pairs']} pairs): skipped")
                return
        try:
            dataset = load_dataset(input)
        except DataError as exc:
            raise typer.BadParameter(str(exc), param_hint="--input") from None
        typer.echo(f"loaded {len(dataset.pairs)} pairs: {dataset.description}", err=True)
        labelled = dataset.pairs
        extra = transfer_pairs(
            labelled, per_query, random_per_query=random_per_query, seed=seed, progress=True
        )
        written = (list(labelled) if include_labelled else []) + extra
        partial = output.with_name(output.name + ".partial")
        write_generic_jsonl(partial, written)
        partial.replace(output)  # whole or not at all: a killed run leaves no half file behind
        sources = Counter(p.source for p in extra)
        meta_path.write_text(
            json.dumps(
                {
                    "options": options,
                    "pairs": len(written),
                    "unlabelled": dict(sources),
                    "queries": len({p.query_id for p in extra}),
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        typer.echo(
            f"wrote {output}: {len(extra)} unlabelled pairs ({dict(sources)}) for "
            f"{len({p.query_id for p in extra})} queries"
            + (f" + {len(labelled)} labelled" if include_labelled else "")
        )

    @data_app.command("holdout")
    def holdout(
        fit: Annotated[Path, typer.Option(help="JSONL to write: the pairs of every query outside the fold")],
        held_out: Annotated[Path, typer.Option("--holdout", help="JSONL to write: the fold's pairs")],
        input: Annotated[
            str, typer.Option("--input", "-i", help="labelled pairs: " + SPEC_HELP)
        ] = "bundled:train",
        folds: Annotated[int, typer.Option(min=2, help="number of folds the queries are hashed into")] = 5,
        fold: Annotated[int, typer.Option(min=0, help="the fold held out, in [0, FOLDS)")] = 0,
    ) -> None:
        """Split labelled pairs by query into a fit part and a held-out fold (``core.datasets.fold_of``,
        salt "holdout"): for a model fitted on pairs another model never saw, e.g. the ensemble head over
        a teacher trained on the fit part. Deterministic; both files are written whole or not at all."""
        from core.datasets import fold_of
        from distill.data.datasets import load_dataset
        from distill.data.transfer import write_generic_jsonl

        if fold >= folds:
            raise typer.BadParameter(f"{fold} is not in [0, {folds})", param_hint="--fold")
        try:
            dataset = load_dataset(input)
        except DataError as exc:
            raise typer.BadParameter(str(exc), param_hint="--input") from None
        parts: dict[bool, list] = {True: [], False: []}
        for pair in dataset.pairs:
            parts[fold_of(pair.query_id, folds, salt="holdout") == fold].append(pair)
        for path, pairs in ((fit, parts[False]), (held_out, parts[True])):
            partial = path.with_name(path.name + ".partial")
            write_generic_jsonl(partial, pairs)
            partial.replace(path)
            queries = len({p.query_id for p in pairs})
            typer.echo(f"wrote {path}: {len(pairs)} pairs of {queries} queries")

    @data_app.command("bundle-splits")
    def bundle_splits() -> None:
        """Recompute the bundled data's by-query split and rewrite distill/data/bundled/splits.json."""
        from distill.data.bundled import SPLITS_FILE, write_splits_manifest

        manifest = write_splits_manifest()
        typer.echo(f"wrote {SPLITS_FILE}: {manifest['counts']}")
