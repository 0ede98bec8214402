"""`make teacher-gpu-prepare` (`python -m distill.teacher.gpu.prepare`), on the CPU machine: everything
the teacher GPU run carries (payload.py), as parts a device call can carry (core/carry.py).

1. the SFT records: the rule CoT of the train pairs, ending in the human grade (bootstrap-cot);
2. the dev pairs, and the transfer set: the train pairs plus, per train query, ``--per-query``
   unjudged top-BM25 items and ``--random-per-query`` random ones (at the defaults, 16 and 4 on Home
   Depot train: 141,283 unlabelled pairs beside the 45,854 labelled ones, 187,137 in all);
3. the embedded SmolLM2 GGUF, the base of the SFT;
4. the wheels the GPU image lacks, for its python 3.12, at the versions installed here;
5. one tar of it all, split into parts under the per-call limit, with a sha256 manifest.

``--slice N`` keeps the first N pairs of each split and transfers from those (the dry run's payload).
Prints the device calls to make.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from core import carry
from distill.teacher.gpu.payload import DEV_PAIRS, GGUF, INFO, SFT_RECORDS, TRANSFER_PAIRS, TeacherPayload

CARRY_DIR = Path(".teacher-gpu-carry")  # ignored by git; what each device call carries
# What run.py imports that the GPU image (KINDS.md's package list, 2026-11-17) lacks, or has older than
# pydantic needs (typing-extensions). tests/distill/test_teacher_gpu.py checks this list against the
# modules the run really imports.
CARRIED_DISTRIBUTIONS = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "orjson",
    "json-repair",
    "gguf",
)
# Imported by the run and already in the GPU image (the same list): not carried.
GPU_IMAGE_HAS = ("numpy", "torch", "transformers", "peft", "safetensors", "tokenizers", "tqdm", "pyyaml")
GPU_IMAGE_HAS += ("huggingface-hub", "filelock", "fsspec", "packaging", "regex", "requests", "jinja2")
GPU_IMAGE_HAS += ("markupsafe", "accelerate", "psutil", "sympy", "mpmath", "networkx", "triton", "hf-xet")
GPU_IMAGE_HAS += ("urllib3", "idna", "certifi", "charset-normalizer", "typer", "click", "rich", "scipy")
GPU_IMAGE_HAS += ("shellingham", "markdown-it-py", "mdurl", "pygments", "setuptools", "annotated-doc")
GPU_IMAGE_HAS += ("httpx", "httpcore", "h11", "anyio", "sniffio", "pillow", "protobuf", "attrs")
GPU_IMAGE_HAS += ("sortedcontainers",)
# Imported here only because installed (this venv has them for selenium), by importers that work without
# them: not carried.
OPTIONAL_IMPORTS = ("trio", "outcome")


def _write_gz(path: Path, lines) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(path, "wb", compresslevel=9) as f:
        for line in lines:
            f.write(line)
            count += 1
    return count


def build_payload(
    payload: TeacherPayload,
    train: str,
    dev: str,
    *,
    per_query: int,
    random_per_query: int,
    slice_pairs: int | None,
    work: Path,
    log=print,
) -> dict:
    """Write the payload's data, GGUF and payload.json (not the wheels); returns payload.json."""
    from distill.data.datasets import load_dataset
    from distill.data.transfer import transfer_pairs, write_generic_jsonl
    from distill.teacher.bootstrap import bootstrap_record
    from teacher.backends.llamacpp import default_gguf_path

    train_pairs = load_dataset(train, default_split="train").pairs[:slice_pairs]
    dev_pairs = load_dataset(dev, default_split="dev").pairs[:slice_pairs]
    log(f"payload: {len(train_pairs)} train pairs of {train}, {len(dev_pairs)} dev pairs of {dev}")
    records = [bootstrap_record(p, attributes=True) for p in train_pairs]
    sft = _write_gz(payload.path(SFT_RECORDS), (r.model_dump_json().encode() + b"\n" for r in records))
    unlabelled = transfer_pairs(train_pairs, per_query, random_per_query=random_per_query, progress=True)
    work.mkdir(parents=True, exist_ok=True)
    for name, pairs in ((TRANSFER_PAIRS, [*train_pairs, *unlabelled]), (DEV_PAIRS, dev_pairs)):
        plain = work / Path(name).name.removesuffix(".gz")
        write_generic_jsonl(plain, pairs)
        _write_gz(payload.path(name), plain.open("rb"))
    gguf = default_gguf_path()
    payload.path(GGUF).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, payload.path(GGUF))
    info = {
        "train": train,
        "dev": dev,
        "slice": slice_pairs,
        "sft_records": sft,
        "sft_records_with_labels": sum(r.parse_ok for r in records),
        "dev_pairs": len(dev_pairs),
        "transfer_pairs": len(train_pairs) + len(unlabelled),
        "transfer_labelled": len(train_pairs),
        "transfer_options": {"per_query": per_query, "random_per_query": random_per_query, "seed": 0},
        "gguf": gguf.name,
        "gguf_sha256": carry.sha256_of(gguf),
    }
    payload.path(INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def prepare(
    carry_dir: Path = CARRY_DIR,
    *,
    train: str = "home-depot:train",
    dev: str = "home-depot:dev",
    per_query: int = 16,
    random_per_query: int = 4,
    slice_pairs: int | None = None,
    rebuild: bool = False,
    log=print,
) -> carry.Manifest:
    payload = TeacherPayload(carry_dir / carry.PAYLOAD_DIR)
    wanted = {"train": train, "dev": dev, "slice": slice_pairs,
              "transfer_options": {"per_query": per_query, "random_per_query": random_per_query, "seed": 0}}  # fmt: skip
    try:
        payload.check()
        same = {k: payload.info().get(k) for k in wanted} == wanted
    except FileNotFoundError:
        same = False
    if same and not rebuild:
        log(f"payload: keeping {payload.root} (built from the same data and options; --rebuild redoes it)")
    else:
        build_payload(
            payload, train, dev, per_query=per_query, random_per_query=random_per_query,
            slice_pairs=slice_pairs, work=carry_dir / "work", log=log,
        )  # fmt: skip
    carry.download_wheels(payload.wheels, [*map(carry.pinned, CARRIED_DISTRIBUTIONS)], log)
    env = "" if carry_dir == CARRY_DIR else f"CARRY_DIR={carry_dir} "
    manifest = carry.pack(payload.root, carry_dir, f"{env}bash distill/teacher/gpu/on_device.sh", log)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.teacher.gpu.prepare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--carry-dir", type=Path, default=CARRY_DIR)
    parser.add_argument("--train", default="home-depot:train", help="labelled train pairs (a dataset spec)")
    parser.add_argument("--dev", default="home-depot:dev", help="dev pairs (a dataset spec)")
    parser.add_argument("--per-query", type=int, default=16, help="unjudged top-BM25 items per train query")
    parser.add_argument(
        "--random-per-query", type=int, default=4, help="random unjudged items per train query"
    )
    parser.add_argument(
        "--slice", type=int, default=None, help="only the first N pairs of each split (dry run)"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the data even when it was built from the same specs"
    )
    args = parser.parse_args(argv)
    from distill.data.reading import DataError

    try:
        prepare(
            args.carry_dir, train=args.train, dev=args.dev, per_query=args.per_query,
            random_per_query=args.random_per_query, slice_pairs=args.slice, rebuild=args.rebuild,
        )  # fmt: skip
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
