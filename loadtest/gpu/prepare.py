"""`make gpu-prepare` (`python -m loadtest.gpu.prepare`), on the CPU machine: everything the GPU run carries.

1. a 6-layer cross student, trained for a handful of steps on bundled:train (`relevance student train
   --kind cross --layers 6 --max-steps 5 --max-tokens 64`): enough for speed figures, not for quality;
2. the payload's models (payload.py): fp16 bundles of it and of the default bi bundle, each through the
   export gates on CPU, the CPU fp32 reference scores, the Hugging Face config for the peer;
3. the wheels the GPU machine lacks, for its python 3.12 (the versions installed in this .venv), and
   onnxruntime-gpu built for CUDA 13;
4. one tar of it all, split into parts under the per-call limit with a manifest (carry.py).
Steps whose output exists are kept (``--rebuild`` redoes the models). Prints the device calls to make.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from core import carry
from loadtest.gpu.payload import Payload, build_models

CARRY_DIR = Path(".gpu-carry")  # ignored by git; what each device call carries lives here
DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")
RUN_NAME = "gpu-cross6"
DEV_DATA = "bundled:dev"
ONNXRUNTIME_GPU = "onnxruntime-gpu==1.31.1"  # built for CUDA 13, as the GPU machine's libraries (issue 15)
# What the serving path imports that the GPU machine's image lacks (or has older than pydantic needs:
# typing-extensions), at the versions installed here. tests/loadtest/test_gpu_carry.py checks this
# list against the modules the service really imports.
CARRIED_DISTRIBUTIONS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "opentelemetry-api",
    "orjson",
    "redis",
    "json-repair",
    "swagger-ui-bundle",
)
# Imported by the serving path and already on the GPU machine (KINDS.md's package list, 2026-11-17),
# or imported here only because installed, their importers working without them (optional imports).
GPU_IMAGE_HAS = ("annotated-doc", "anyio", "click", "h11", "httpcore", "httpx", "idna", "certifi", "numpy")
GPU_IMAGE_HAS += ("prometheus-client", "pygments", "rich", "markdown-it-py", "mdurl", "setuptools")
GPU_IMAGE_HAS += ("shellingham", "tokenizers", "typer", "pyyaml", "tqdm", "scipy", "torch", "onnx")
OPTIONAL_IMPORTS = ("sniffio", "watchfiles", "websockets", "importlib-resources", "uvloop")


def download_wheels(dest: Path, log=print) -> list[Path]:
    """The carried distributions at the versions installed here, and onnxruntime-gpu (core/carry.py)."""
    return carry.download_wheels(dest, [*map(carry.pinned, CARRIED_DISTRIBUTIONS), ONNXRUNTIME_GPU], log)


def train_cross(runs_dir: Path, log=print) -> Path:
    run_dir = runs_dir / RUN_NAME
    if (run_dir / "checkpoint.pt").is_file():
        log(f"student: keeping {run_dir}")
        return run_dir
    relevance = Path(sys.executable).with_name("relevance")
    command = [str(relevance), "student", "train", "--name", RUN_NAME, "--kind", "cross", "--layers", "6"]
    command += ["--max-steps", "5", "--max-tokens", "64", "--epochs", "1", "--runs-dir", str(runs_dir)]
    log("student: " + " ".join(command))
    subprocess.run(command, check=True)
    return run_dir


def prepare(
    carry_dir: Path = CARRY_DIR, *, rebuild: bool = False, dev_pairs: int = 0, log=print
) -> carry.Manifest:
    from distill.data.bundled import load_bundled

    payload = Payload(carry_dir / carry.PAYLOAD_DIR)
    work = carry_dir / "work"
    try:
        payload.check()
        models_ready = not rebuild
    except FileNotFoundError:
        models_ready = False
    if models_ready:
        log(f"payload: keeping the models in {payload.root} (--rebuild redoes them)")
    else:
        pairs = load_bundled("dev")
        pairs = pairs[:dev_pairs] if dev_pairs else pairs
        build_models(payload, DEFAULT_BUNDLE, train_cross(work / "runs", log), pairs, DEV_DATA, work, log)
    download_wheels(payload.wheels, log)
    manifest = carry.pack(payload.root, carry_dir, "bash loadtest/gpu/on_device.sh", log)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.gpu.prepare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--carry-dir", type=Path, default=CARRY_DIR)
    parser.add_argument("--rebuild", action="store_true", help="train and export again")
    args = parser.parse_args(argv)
    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        print(f"{DEFAULT_BUNDLE}: not built (make default-bundle)", file=sys.stderr)
        return 2
    if shutil.which("git") is None:
        print("warning: git not found; the results will not name the commit", file=sys.stderr)
    prepare(args.carry_dir, rebuild=args.rebuild)
    return 0


if __name__ == "__main__":
    sys.exit(main())
