"""`relevance train` and `relevance export`: train an MKD student, then turn it into a checked bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from distill.train import LossWeights, TrainConfig

# Flag defaults are the config's defaults (one definition).
_D = {name: field.default for name, field in TrainConfig.model_fields.items()}
_W = LossWeights().model_dump()
DATA_HELP = "bundled:train | bundled:dev | bundled:all, or a data file/folder any loader reads"


def load_data(spec: str, fmt: str | None) -> tuple[list, dict]:
    """Pairs from a data spec, and a report of what was read and skipped (printed, never hidden)."""
    if spec.startswith("bundled:"):
        from distill.data.bundled import load_bundled

        pairs = load_bundled(spec.split(":", 1)[1])  # type: ignore[arg-type]
        return pairs, {"source": spec, "pairs": len(pairs), "skipped": {}}
    from distill.data.loaders import load_pairs

    result = load_pairs(spec, fmt)
    typer.echo(result.report.summary(), err=True)
    return result.pairs, {"source": spec, "pairs": len(result.pairs), "skipped": result.report.skipped}


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def train_command(
    name: Annotated[str, typer.Option(help="run name; checkpoints go to RUNS_DIR/NAME")],
    kind: Annotated[str, typer.Option(help="cross (interaction-based) or bi (representation-based)")] = _D["kind"],
    layers: Annotated[int, typer.Option(help="keep the first N of all-MiniLM-L6-v2's 6 layers")] = _D["layers"],
    max_tokens: Annotated[int, typer.Option(help="token limit of a pair (cross) or an item (bi)")] = _D["max_tokens"],
    max_query_tokens: Annotated[int, typer.Option(help="token limit of a query (bi)")] = _D["max_query_tokens"],
    epochs: int = _D["epochs"],
    max_steps: Annotated[int | None, typer.Option(help="stop after this many optimiser steps")] = None,
    batch_size: int = _D["batch_size"],
    lr: Annotated[float, typer.Option(help="learning rate of the backbone")] = _D["lr"],
    head_lr: Annotated[float, typer.Option(help="learning rate of the new heads")] = _D["head_lr"],
    temperature: Annotated[float, typer.Option(help="score-distribution KD temperature")] = _D["temperature"],
    patience: Annotated[int, typer.Option(help="early stopping: epochs without a dev gain")] = _D["patience"],
    select_metric: Annotated[str, typer.Option(help="dev metric for early stopping: ndcg@10 or auc")] = _D[
        "select_metric"],
    seed: int = _D["seed"],
    threads: Annotated[int, typer.Option(help="CPU threads")] = _D["threads"],
    w_hard: Annotated[float, typer.Option(help="weight of the hard-label CE")] = _W["hard"],
    w_score_kd: Annotated[float, typer.Option(help="weight of the score-distribution KD")] = _W["score_kd"],
    w_cot: Annotated[float, typer.Option(help="weight of the CoT evidence KD (attention / pooling)")] = _W["cot"],
    w_verdict: Annotated[float, typer.Option(help="weight of the verdict auxiliary CE (bi)")] = _W["verdict"],
    cot_agree_only: Annotated[bool, typer.Option(
        help="use CoT evidence only where the teacher's grade equals the human label")] = _D["cot_agree_only"],
    train_data: Annotated[str, typer.Option("--train", help=DATA_HELP)] = "bundled:train",
    train_format: Annotated[str | None, typer.Option(help="loader format of --train (default: detect)")] = None,
    dev_data: Annotated[str, typer.Option("--dev", help=DATA_HELP)] = "bundled:dev",
    dev_format: Annotated[str | None, typer.Option(help="loader format of --dev (default: detect)")] = None,
    teacher: Annotated[list[Path] | None, typer.Option(
        help="teacher CoT records (JSONL), read for every signal they carry; repeatable")] = None,
    teacher_scores: Annotated[list[Path] | None, typer.Option(
        help="teacher records read for the grade distribution only (score KD); repeatable")] = None,
    teacher_cot: Annotated[list[Path] | None, typer.Option(
        help="teacher records read for verdicts and evidence only (CoT KD); repeatable. Per pair and "
             "signal the first file that supplies it wins: --teacher files, then --teacher-scores, "
             "then --teacher-cot, each in the order given")] = None,
    runs_dir: Path = Path("runs"),
) -> None:
    """Train a student (early stopping on dev NDCG@10 or AUC); the best checkpoint goes to RUNS_DIR/NAME."""
    from pydantic import ValidationError

    from distill.data.reading import DataError
    from distill.students.data import TeacherFileError, TeacherSource, read_teacher_records
    from distill.train import train

    try:
        config = TrainConfig(
            name=name, kind=kind, layers=layers, max_tokens=max_tokens, max_query_tokens=max_query_tokens,
            epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, head_lr=head_lr,
            temperature=temperature, patience=patience, select_metric=select_metric, seed=seed, threads=threads,
            cot_agree_only=cot_agree_only,
            weights=LossWeights(hard=w_hard, score_kd=w_score_kd, cot=w_cot, verdict=w_verdict),
            train_data=train_data, dev_data=dev_data, teacher=[str(t) for t in teacher or []],
            teacher_scores=[str(t) for t in teacher_scores or []], teacher_cot=[str(t) for t in teacher_cot or []])
        train_pairs, train_report = load_data(train_data, train_format)
        dev_pairs, dev_report = load_data(dev_data, dev_format)
        sources = [TeacherSource(path, use, read_teacher_records(path)) for path, use in config.teacher_files()]
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))
    except (DataError, TeacherFileError, ValueError) as exc:
        _fail(str(exc))
    if not train_pairs:
        _fail(f"--train {train_data}: no pairs")
    try:
        result = train(config, train_pairs, dev_pairs, runs_dir / name, teacher=sources or None,
                       data_report={"train": train_report, "dev": dev_report})
    except ValueError as exc:
        _fail(str(exc))
    if result.teacher:
        t = result.teacher
        for s in t["sources"]:
            typer.echo(f"teacher file {s['path']} ({s['use']}): {s['records']} records, {s['matched']} matched, "
                       f"{s['unmatched']} unmatched, {s['duplicates']} duplicates, {s['parse_failed']} parse failures; "
                       f"distribution used {s['distribution_used']} (none {s['no_distribution']}, an earlier file had it "
                       f"{s['distribution_shadowed']}); CoT used {s['cot_used']} (none {s['no_cot']}, an earlier file had it "
                       f"{s['cot_shadowed']})", err=True)
        typer.echo(f"teacher coverage of {t['train_pairs']} train pairs: {t['with_distribution']} with a grade "
                   f"distribution, {t['with_cot']} with a CoT record, {t['evidence']['records_with_evidence']} with "
                   f"evidence ({t['evidence_skipped_disagree']} skipped: teacher grade != label), "
                   f"{t['with_verdicts']} with verdicts; evidence spans: {t['evidence']}", err=True)
    typer.echo(f"best epoch {result.best_epoch}: dev ndcg@10 {result.best_dev['ndcg@10']:.4f} "
               f"auc {result.best_dev['auc']:.4f} ({result.seconds:.0f}s) → {result.run_dir}")


def export_command(
    run: Annotated[Path, typer.Argument(help="training run folder (runs/NAME)")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (replaced only if every check passes)")],
    precision: Annotated[str, typer.Option(help="fp32, int8 or fp16")] = "int8",
    dev_data: Annotated[str, typer.Option("--dev", help=DATA_HELP)] = "bundled:dev",
    dev_format: Annotated[str | None, typer.Option(help="loader format of --dev")] = None,
    name: Annotated[str | None, typer.Option(help="bundle name (default student-KIND-RUN)")] = None,
    version: Annotated[str | None, typer.Option(help="bundle version (default: UTC timestamp)")] = None,
) -> None:
    """Export a trained student to a bundle; refuses (exit 1) when the ONNX parity checks fail."""
    from distill.data.reading import DataError
    from distill.export.checks import ExportCheckError
    from distill.export.student import export_student

    try:
        dev_pairs, _ = load_data(dev_data, dev_format)
        manifest = export_student(run, out, dev_pairs, precision=precision, name=name, version=version,
                                  created_by="relevance export " + " ".join(sys.argv[2:]))
    except ExportCheckError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    except (DataError, ValueError) as exc:
        _fail(str(exc))
    dev = manifest.metrics["dev"]
    typer.echo(f"wrote {out} ({manifest.kind}, {precision}): dev ndcg@10 {dev['ndcg@10']:.4f} auc {dev['auc']:.4f}; "
               f"checks {manifest.metrics['export_checks']}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("export")(export_command)
