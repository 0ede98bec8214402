"""`relevance teacher`: annotate, batch-run, collaborate, sft, sft-lora, convert-base, bootstrap-cot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import typer

from core.datasets import SPEC_HELP
from distill.data.schema import LabelledPair
from distill.teacher.batch import ResponseFormat as BatchResponseFormat
from distill.teacher.lora import LoRAPrecision, Targets
from teacher.prompt import Mode


def load_input_pairs(source: str, fmt: str | None) -> list[LabelledPair]:
    """Pairs of a dataset spec (core/datasets.py); what the loader skipped is printed."""
    from distill.data.datasets import DataError, load_dataset

    try:
        dataset = load_dataset(source, fmt)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--input") from None
    typer.echo(f"loaded {len(dataset.pairs)} pairs: {dataset.description}", err=True)
    return dataset.pairs


def _annotate_batch_in(
    model: str,
    pairs: list[LabelledPair],
    results: Path,
    out: Path,
    mode: Mode,
    report: Callable[[str], None],
    parquet: Path | None,
    allow_failures: bool,
) -> None:
    """`annotate --batch-in`: results → records; every problem listed; exit 1 on any unless allowed."""
    from distill.teacher.annotate import write_parquet
    from distill.teacher.batch import BatchFileError, batch_teacher, read_results

    try:
        summary = read_results(batch_teacher(model), pairs, results, out, mode=mode)
    except BatchFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--batch-in") from None
    report(summary.model_dump_json(indent=1))
    if parquet:
        typer.echo(f"wrote {write_parquet(out, parquet)} rows to {parquet}", err=True)
    if summary.problems:
        counts = (
            f"{len(summary.failed_lines)} failed lines, {len(summary.missing_pairs)} pairs without a result, "
            f"{len(summary.unknown_custom_ids)} unknown custom_ids, {len(summary.duplicate_lines)} duplicate lines"
        )
        shown = [
            *summary.failed_lines,
            *summary.missing_pairs,
            *summary.unknown_custom_ids,
            *summary.duplicate_lines,
        ]
        for line in shown[:20]:
            typer.echo(line, err=True)
        more = f" ({len(shown) - 20} more in the summary)" if len(shown) > 20 else ""
        typer.echo(
            f"{counts}{more}; failed and missing pairs stay pending: --batch-out -o {out} asks again",
            err=True,
        )
        if not allow_failures:
            raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    teacher_app = typer.Typer(
        help="Teacher: judge pairs with the LLM into CoT records; fine-tune the LLM.", no_args_is_help=True
    )
    app.add_typer(teacher_app, name="teacher")

    @teacher_app.command()
    def annotate(
        input: str = typer.Option(..., "--input", "-i", help=SPEC_HELP),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="JSONL of CoT records (appended to; resumes). Required, except with --batch-out, where "
            "pairs that have a record in it get no request",
        ),
        teacher: str = typer.Option(
            "llamacpp",
            help="teacher spec, e.g. llamacpp, openai:MODEL@URL, hf:DIR, bundle:PATH or ensemble:DIR "
            "(the last two: score mode); not used with --batch-out / --batch-in",
        ),
        mode: Mode = typer.Option(Mode.score, help="score (verdict only, fast) or cot (reasoning + verdict)"),
        fmt: str | None = typer.Option(None, "--format", help="input format (default: detected)"),
        concurrency: int = typer.Option(1, min=1, help="judgements in flight (HTTP teachers benefit)"),
        limit: int | None = typer.Option(None, min=1, help="annotate only the first N input pairs"),
        parquet: Path | None = typer.Option(None, help="also write a flat Parquet copy here"),
        summary_out: Path | None = typer.Option(None, "--summary", help="write the run summary JSON here"),
        batch_out: Path | None = typer.Option(
            None,
            help="write OpenAI Batch / vllm run-batch request lines (/v1/chat/completions with logprobs) "
            "here instead of calling a teacher (docs/TEACHER.md, 'Annotation at scale')",
        ),
        batch_in: Path | None = typer.Option(
            None,
            help="read these Batch output lines into --out records (grade distributions from the logprobs); "
            "with the same --input, --mode and --batch-model as --batch-out",
        ),
        batch_model: str | None = typer.Option(
            None, help="model the batch runs on (request body 'model'; teacher id openai:MODEL)"
        ),
        batch_max_tokens: int | None = typer.Option(
            None, min=1, help="--batch-out: answer budget (default: the teacher's, 320 cot / 8 score)"
        ),
        batch_response_format: BatchResponseFormat = typer.Option(
            BatchResponseFormat.json_schema,
            help="--batch-out: hold the model to the answer's JSON schema: json_schema (OpenAI, vLLM), "
            "json_object (llama.cpp servers) or none",
        ),
        allow_failures: bool = typer.Option(
            False,
            help="--batch-in: exit 0 even when lines failed or pairs have no result (they stay pending and "
            "are listed in the summary either way)",
        ),
    ) -> None:
        """Judge pairs with an ELLM-rele teacher → CoT records (JSONL, resumable); or, with --batch-out /
        --batch-in, through Batch request and result files (OpenAI Batch API, vllm run-batch)."""
        from distill.teacher.annotate import annotate as run_annotation
        from distill.teacher.annotate import write_parquet
        from distill.teacher.bundle_teacher import SPEC_PREFIX, BundleTeacher
        from distill.teacher.ensemble import SPEC_PREFIX as ENSEMBLE_PREFIX
        from distill.teacher.ensemble import EnsembleTeacher
        from teacher import load_teacher

        if batch_out and batch_in:
            raise typer.BadParameter("one of --batch-out and --batch-in per run", param_hint="--batch-in")
        if (batch_out or batch_in) and not batch_model:
            raise typer.BadParameter(
                "--batch-out and --batch-in need --batch-model", param_hint="--batch-model"
            )
        if out is None and not batch_out:
            raise typer.BadParameter("required (records file)", param_hint="--out")
        pairs = load_input_pairs(input, fmt)[:limit]

        def report(text: str) -> None:
            typer.echo(text)
            if summary_out:
                summary_out.parent.mkdir(parents=True, exist_ok=True)
                summary_out.write_text(text + "\n", encoding="utf-8")

        if batch_out:
            from distill.teacher.batch import batch_teacher, write_requests

            written = write_requests(
                batch_teacher(batch_model, max_tokens=batch_max_tokens),
                batch_model,
                pairs,
                batch_out,
                mode=mode,
                response_format=batch_response_format,
                records=out,
            )
            report(written.model_dump_json(indent=1))
            return
        assert out is not None  # checked above; narrows the type
        if batch_in:
            _annotate_batch_in(batch_model, pairs, batch_in, out, mode, report, parquet, allow_failures)
            return

        if teacher.startswith((SPEC_PREFIX, ENSEMBLE_PREFIX)):  # bundles scored through the service's Scorer
            try:
                if teacher.startswith(SPEC_PREFIX):
                    judge = BundleTeacher(teacher.removeprefix(SPEC_PREFIX))
                else:
                    judge = EnsembleTeacher(teacher.removeprefix(ENSEMBLE_PREFIX))
            except ValueError as exc:  # BundleError, BundleTeacherError, EnsembleError
                raise typer.BadParameter(str(exc), param_hint="--teacher") from None
            if mode != Mode.score:
                kind = teacher.partition(":")[0]
                raise typer.BadParameter(f"a {kind} teacher judges in score mode only", param_hint="--mode")
        else:
            judge = load_teacher(teacher)

        async def run() -> None:
            try:
                summary = await run_annotation(judge, pairs, out, mode=mode, concurrency=concurrency)
            finally:
                await judge.aclose()
            report(summary.model_dump_json(indent=1))
            if parquet:
                typer.echo(f"wrote {write_parquet(out, parquet)} rows to {parquet}", err=True)
            if summary.judge_errors:
                raise typer.Exit(code=1)

        asyncio.run(run())

    @teacher_app.command("batch-run")
    def batch_run(
        requests: Path = typer.Option(
            ..., help="Batch request lines (relevance teacher annotate --batch-out)"
        ),
        url: str = typer.Option(..., help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
        out: Path = typer.Option(..., "--out", "-o", help="Batch output lines to write (replaced)"),
        concurrency: int = typer.Option(2, min=1, help="requests in flight"),
        timeout: float = typer.Option(300.0, min=0.1, help="seconds per request"),
    ) -> None:
        """Run Batch request lines against one OpenAI-compatible server (llama.cpp, vLLM serve, ...) and
        write Batch output lines for --batch-in: for users without vllm run-batch or the Batch API. No
        retries: failed requests become error lines, which --batch-in lists; the next --batch-out asks again.
        API key: RELEVANCE_TEACHER_API_KEY."""
        from distill.teacher.batch import BatchFileError, run_requests

        try:
            summary = asyncio.run(
                run_requests(requests, url, out, concurrency=concurrency, timeout_s=timeout)
            )
        except BatchFileError as exc:
            raise typer.BadParameter(str(exc), param_hint="--requests") from None
        typer.echo(summary.model_dump_json(indent=1))
        if summary.failed:
            typer.echo(
                f"{summary.failed} of {summary.requests} requests failed (error lines in {out})", err=True
            )
            raise typer.Exit(code=1)

    @teacher_app.command("ensemble-fit")
    def ensemble_fit(
        out: Path = typer.Option(..., "--out", "-o", help="folder to write ensemble.json to"),
        cross: str = typer.Option(..., help="bundle:PATH of the cross teacher (a grade head)"),
        data: str = typer.Option(
            ..., "--data", help="labelled pairs the cross teacher never trained on: " + SPEC_HELP
        ),
        bi: str = typer.Option("bundle:models/minilm-zero-shot-bi", help="bundle:PATH of the bi-encoder"),
        catalogue: str | None = typer.Option(
            None, help="pairs whose items give BM25 its document frequencies (default: --data's)"
        ),
    ) -> None:
        """Fit teacher rung (c): a grade head over the cross teacher, the bi-encoder, BM25 and the rule
        CoT verdicts (distill/teacher/ensemble.py); use it as --teacher ensemble:OUT."""
        from distill.teacher.ensemble import fit_ensemble

        fit_pairs = load_input_pairs(data, None)
        items = load_input_pairs(catalogue, None) if catalogue else fit_pairs
        try:
            spec = fit_ensemble(out, cross=cross, bi=bi, fit_pairs=fit_pairs, catalogue=items, data=data)
        except ValueError as exc:  # EnsembleError, BundleError
            raise typer.BadParameter(str(exc)) from None
        fitted = spec["fitted_on"]
        typer.echo(
            f"wrote {out}: head over {len(spec['features'])} features fitted on {fitted['pairs']} pairs "
            f"of {fitted['queries']} queries (accuracy there {fitted['accuracy_on_fit_pairs']:.3f}); "
            f"use --teacher ensemble:{out}"
        )

    @teacher_app.command()
    def collaborate(
        input: str = typer.Option(..., "--input", "-i", help=SPEC_HELP),
        out_dir: Path = typer.Option(
            ..., "--out-dir", "-o", help="folder for annotator files, kept CoTs, summary"
        ),
        annotator_a: str = typer.Option("llamacpp?temperature=0.3&seed=1", "--annotator-a"),
        annotator_b: str = typer.Option("llamacpp?temperature=0.7&seed=2", "--annotator-b"),
        samples: int = typer.Option(3, min=1, help="self-consistency samples per annotator"),
        mode: Mode = typer.Option(Mode.cot, help="cot (reasoning kept for distillation) or score"),
        fmt: str | None = typer.Option(None, "--format"),
        limit: int | None = typer.Option(None, min=1),
        concurrency: int = typer.Option(1, min=1),
    ) -> None:
        """Collaborative CoT annotation: two annotators + self-consistency, kept where they agree."""
        from distill.teacher.collaborative import collaborate as run_collaboration

        pairs = load_input_pairs(input, fmt)[:limit]
        summary = asyncio.run(
            run_collaboration(
                pairs,
                out_dir,
                annotators=(annotator_a, annotator_b),
                samples=samples,
                mode=mode,
                concurrency=concurrency,
            )
        )
        typer.echo(json.dumps(summary, indent=1))

    @teacher_app.command()
    def sft(
        out: Path = typer.Option(..., "--out", "-o", help="output folder (model.gguf + sft.json)"),
        train: str = typer.Option("bundled:train", help="labelled pairs to fine-tune on"),
        fmt: str | None = typer.Option(None, "--format"),
        base: Path | None = typer.Option(
            None, help="base GGUF (default: the embedded SmolLM2-135M-Instruct)"
        ),
        l2: float | None = typer.Option(
            None, min=0.0, help="L2 weight towards the mean original row (default: by CV)"
        ),
        max_iter: int = typer.Option(200, min=1),
        max_pairs: int | None = typer.Option(
            None, min=1, help="fine-tune on a seeded random subset this large"
        ),
        max_minutes: float | None = typer.Option(None, min=0.1, help="stop reading states after this long"),
        threads: int = typer.Option(2, min=1),
        seed: int = typer.Option(0),
        cot_features: bool = typer.Option(
            False,
            help="condition the head on the rule CoT's per-dimension verdicts too (bootstrap-cot's rules, "
            "label-free); writes OUT/cot_head.npz instead of a GGUF, records carry the CoT",
        ),
        llm_states: bool = typer.Option(
            True, help="--no-llm-states: ablation, the head reads the CoT features alone"
        ),
        predict: str | None = typer.Option(
            None, help="also score these pairs with the fitted head (e.g. bundled:dev)"
        ),
        predict_out: Path | None = typer.Option(None, help="JSONL of CoT records for --predict"),
    ) -> None:
        """Verdict-row SFT: refit the grade tokens' output rows on human labels → a GGUF teacher
        (llamacpp:OUT/model.gguf). For LoRA fine-tuning on CoT records use `relevance teacher sft-lora`."""
        from distill.teacher.sft import SFTConfig, run_sft

        if (predict is None) != (predict_out is None):
            raise typer.BadParameter("--predict and --predict-out go together", param_hint="--predict-out")
        pairs = load_input_pairs(train, fmt)
        held = load_input_pairs(predict, None) if predict else []
        config = SFTConfig(
            l2=l2,
            max_iter=max_iter,
            max_pairs=max_pairs,
            max_minutes=max_minutes,
            threads=threads,
            seed=seed,
            cot_features=cot_features,
            llm_states=llm_states,
        )
        report = run_sft(pairs, out, config, base_gguf=base, predict=held, predict_out=predict_out)
        typer.echo(json.dumps(report, indent=1))

    @teacher_app.command("sft-lora")
    def sft_lora(
        records: Path = typer.Option(
            ..., "--records", "-r", help="JSONL of CoT records (annotate, collaborate, bootstrap-cot)"
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="output folder: merged checkpoint (teacher hf:OUT) + lora.json"
        ),
        base: Path = typer.Option(
            Path("models/smollm2-135m-hf"),
            help="transformers base checkpoint (made from the embedded GGUF when missing)",
        ),
        targets: Targets = typer.Option(Targets.both, help="assistant turns to train, per record"),
        rank: int = typer.Option(8, min=1, help="LoRA rank r"),
        alpha: int = typer.Option(16, min=1, help="LoRA alpha"),
        target_modules: str = typer.Option(
            "q_proj,k_proj,v_proj,o_proj", help="comma-separated module names"
        ),
        lr: float = typer.Option(2e-4, min=0.0),
        batch_size: int = typer.Option(4, min=1),
        epochs: float = typer.Option(1.0, min=0.01),
        max_steps: int | None = typer.Option(None, min=1),
        max_minutes: float | None = typer.Option(
            None, min=0.1, help="stop training after this long (then evaluate and save)"
        ),
        max_length: int = typer.Option(1024, min=32, help="longer examples are skipped and counted"),
        max_records: int | None = typer.Option(
            None, min=1, help="train on a seeded random subset this large"
        ),
        eval_fraction: float = typer.Option(
            0.1, min=0.0, max=0.99, help="share of queries held out for eval/early stop"
        ),
        max_eval_examples: int = typer.Option(32, min=1),
        eval_every: int = typer.Option(25, min=1, help="steps between held-out evaluations"),
        patience: int = typer.Option(3, min=1, help="evaluations without improvement before stopping"),
        device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
        precision: LoRAPrecision = typer.Option(
            LoRAPrecision.auto, help="autocast; auto: bf16 on CUDA and on CPUs with native bf16"
        ),
        threads: int = typer.Option(2, min=1, help="CPU threads for torch"),
        seed: int = typer.Option(0),
        gguf: bool = typer.Option(
            True,
            help="also write OUT/model.gguf (teacher llamacpp:OUT/model.gguf; Llama bases made by convert-base)",
        ),
    ) -> None:
        """LoRA SFT of SmolLM2-135M-Instruct on CoT records (loss on assistant tokens only) → teacher hf:OUT."""
        from core.cot import CoTFileError, read_records
        from distill.teacher.lora import DEFAULT_HF_BASE, LoRAConfig, convert_gguf_to_hf, run_lora_sft

        if not records.is_file():
            raise typer.BadParameter(f"file not found: {records}", param_hint="--records")
        try:
            loaded, torn = read_records(records, torn="count")
        except CoTFileError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        if torn:
            typer.echo(f"{records}: ignoring 1 torn last line", err=True)
        config = LoRAConfig(
            targets=targets, rank=rank, alpha=alpha, target_modules=[m.strip() for m in target_modules.split(",") if m.strip()],
            lr=lr, batch_size=batch_size, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes,
            max_length=max_length, max_records=max_records, eval_fraction=eval_fraction,
            max_eval_examples=max_eval_examples, eval_every=eval_every, patience=patience, device=device,
            precision=precision, threads=threads, seed=seed,
        )  # fmt: skip
        try:
            if base == DEFAULT_HF_BASE:
                convert_gguf_to_hf(base, echo=lambda m: typer.echo(m, err=True))
            report = run_lora_sft(loaded, out, config, base=base, source=str(records))
        except (ValueError, FileNotFoundError) as exc:  # no usable records, missing base, no CUDA, ...
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        if gguf:
            from distill.teacher.lora_gguf import export_gguf

            report["gguf"] = export_gguf(out, echo=lambda m: typer.echo(m, err=True))
            (out / "lora.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        typer.echo(json.dumps(report, indent=1))

    @teacher_app.command("convert-base")
    def convert_base(
        out: Path = typer.Option(
            Path("models/smollm2-135m-hf"), "--out", "-o", help="checkpoint folder to write"
        ),
        gguf_file: Path | None = typer.Option(
            None, "--gguf", help="GGUF to convert (default: the embedded SmolLM2-135M-Instruct)"
        ),
    ) -> None:
        """De-quantise a GGUF into a transformers checkpoint (the base of `relevance teacher sft-lora`), once."""
        from distill.teacher.lora import convert_gguf_to_hf

        if (out / "config.json").is_file():
            typer.echo(f"{out} already holds a checkpoint; delete it to convert again", err=True)
            return
        convert_gguf_to_hf(out, gguf_file, echo=lambda m: typer.echo(m, err=True))

    @teacher_app.command("bootstrap-cot")
    def bootstrap_cot(
        input: str = typer.Option("bundled:train", "--input", "-i", help="labelled pairs: " + SPEC_HELP),
        fmt: str | None = typer.Option(None, "--format"),
        output: Path = typer.Option(..., "--output", "-o", help="JSONL of CoT records"),
        attributes: bool = typer.Option(
            True,
            help="judge colour/material/size/quantity (match, mismatch, not stated) besides word overlap; "
            "--no-attributes writes the overlap-only records (bootstrap-v1)",
        ),
    ) -> None:
        """Label-conditioned bootstrap rationales (no LLM): the human label as grade; attribute verdicts and
        query/item word overlap as evidence."""
        from collections import Counter

        from distill.teacher.bootstrap import bootstrap_record

        pairs = load_input_pairs(input, fmt)
        records = [bootstrap_record(pair, attributes=attributes) for pair in pairs]
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(record.model_dump_json() + "\n")
        with_evidence = sum(1 for r in records if any(d.evidence for d in r.dimensions))
        unlabelled = sum(1 for r in records if not r.parse_ok)
        typer.echo(
            f"wrote {len(records)} records to {output}: {with_evidence} with evidence, "
            f"{len(records) - with_evidence} without, {unlabelled} unlabelled"
        )
        verdicts = Counter((d.dimension, d.verdict) for r in records for d in r.dimensions)
        for (dimension, verdict), count in sorted(verdicts.items()):
            typer.echo(f"  {dimension:>16} {verdict:<10} {count}")
