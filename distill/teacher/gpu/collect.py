"""`make teacher-gpu-collect` (`python -m distill.teacher.gpu.collect --results DIR --into DIR`): what
the teacher GPU run brought back (payload.py's results layout), made usable on the CPU machine.

- records-<set>.jsonl: each record set's chunks, decompressed into one CoT record file (read back
  with the project's reader, so a damaged chunk is an error naming it);
- teacher/: the bf16 adapter merged into the local base (``merge_adapter``; the base is the same
  embedded GGUF, checked by sha256), loadable as ``hf:INTO/teacher``, and with ``--gguf`` its
  model.gguf for llama.cpp (``export_gguf``), so /explain can run it;
- collect.json: what was collected, and the next commands (the dev evaluation with CIs).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

from distill.teacher.gpu.payload import ADAPTER_TAR, RECORD_SETS, REPORT, record_chunks


def collect(
    results: Path, into: Path, *, base: Path | None = None, gguf: bool = True, log=print
) -> dict[str, Any]:
    from core import carry
    from core.cot import read_records
    from distill.teacher.lora import (
        ADAPTER_DIR,
        DEFAULT_HF_BASE,
        LORA_REPORT,
        convert_gguf_to_hf,
        merge_adapter,
    )
    from teacher.backends.llamacpp import default_gguf_path

    if not (results / REPORT).is_file():
        raise FileNotFoundError(f"{results / REPORT}: not a teacher GPU results folder")
    report = json.loads((results / REPORT).read_text(encoding="utf-8"))
    into.mkdir(parents=True, exist_ok=True)
    collected: dict[str, Any] = {"results": str(results), "dry_run": report.get("dry_run"), "records": {}}
    for name in RECORD_SETS:
        chunks = record_chunks(results, name)
        if not chunks:
            log(f"collect: no records-{name}-*.jsonl.gz (that stage did not finish)")
            continue
        path = into / f"records-{name}.jsonl"
        with path.open("wb") as out:
            for chunk in chunks:
                with gzip.open(chunk, "rb") as f:
                    shutil.copyfileobj(f, out)
        records, _ = read_records(path)
        collected["records"][name] = {
            "path": str(path),
            "records": len(records),
            "chunks": [c.name for c in chunks],
        }
        log(f"collect: {path}: {len(records)} records from {len(chunks)} chunk(s)")
    if (results / ADAPTER_TAR).is_file():
        expected = report["payload"]["gguf_sha256"]
        local = carry.sha256_of(default_gguf_path())
        if local != expected:
            raise ValueError(
                f"the adapter was trained on a GGUF with sha256 {expected[:12]}…, the embedded one here is "
                f"{local[:12]}…: merging it into another base would be wrong"
            )
        base = convert_gguf_to_hf(base or DEFAULT_HF_BASE)
        unpacked = into / "sft"
        shutil.rmtree(unpacked, ignore_errors=True)
        with tarfile.open(results / ADAPTER_TAR) as tar:
            tar.extractall(unpacked, filter="data")
        teacher = into / "teacher"
        shutil.rmtree(teacher, ignore_errors=True)
        merge_adapter(base, unpacked / ADAPTER_DIR, teacher)
        sft = json.loads((unpacked / LORA_REPORT).read_text(encoding="utf-8"))
        sft.update(
            base=str(base),
            teacher_spec=f"hf:{teacher}",
            trained_on="the GPU run",
            collected_from=str(results),
        )
        (teacher / LORA_REPORT).write_text(json.dumps(sft, indent=1) + "\n", encoding="utf-8")
        collected["teacher"] = f"hf:{teacher}"
        log(f"collect: {teacher}: the adapter merged into {base} (teacher hf:{teacher})")
        if gguf:
            from distill.teacher.lora_gguf import export_gguf

            collected["gguf"] = export_gguf(teacher, echo=log)
    else:
        log(f"collect: no {ADAPTER_TAR} (the SFT did not finish)")
    dev = report["payload"]["dev"]
    if "dev" in collected["records"]:
        collected["next"] = [
            f"relevance eval run --data {dev} --system annotations:{collected['records']['dev']['path']} "
            f"--system bundle:models/minilm-zero-shot-bi --system bm25 --out {into / 'eval-dev'}"
        ]
    (into / "collect.json").write_text(json.dumps(collected, indent=1) + "\n", encoding="utf-8")
    return collected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.teacher.gpu.collect", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--results", type=Path, required=True, help="the files the device call brought back")
    parser.add_argument("--into", type=Path, default=Path("runs/teacher-gpu"))
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="transformers base (default: the embedded GGUF's, converted once)",
    )
    parser.add_argument("--no-gguf", action="store_true", help="skip the GGUF for llama.cpp")
    args = parser.parse_args(argv)
    try:
        collected = collect(args.results, args.into, base=args.base, gguf=not args.no_gguf)
    except (FileNotFoundError, ValueError) as exc:
        print(f"collect: error: {exc}", file=sys.stderr)
        return 2
    for command in collected.get("next", []):
        print(f"next: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
