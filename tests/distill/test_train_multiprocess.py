"""`accelerate launch --num_processes 2` of `relevance student train` on CPU (gloo): the same training as
one process with the same global batch, and the run folder written once, by rank 0.

The runs go through tests/write_counting_cli.py, which turns dropout off (each process draws its own
dropout masks, so with dropout on two runs differ by noise however right the rest is) and logs every
write of the run folder with its rank. Then the only randomness left is the seeded data order, the
same in both runs. Measured (2 layers, 4 steps of 8 pairs): the 2-process weights differ from the
1-process ones by 1.5e-5 of the distance training moved them (float error in the gradient
all-reduce); one process with batches of 4 instead of 8, the mistake of not keeping the global batch,
differs by 0.065. The tolerance is 1e-3, and that control run shows the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loadtest.servers import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TOLERANCE = 1e-3  # of the distance training moved the weights (relative L2)
ARGS = [
    "--layers",
    "2",
    "--max-steps",
    "4",
    "--epochs",
    "1",
    "--train",
    "bundled:train",
    "--dev",
    "bundled:dev",
]


def _train(tmp_path: Path, name: str, *, processes: int, batch: int, seed: int = 13) -> tuple[str, Path]:
    env = {**os.environ, "WRITES_LOG": str(tmp_path / f"{name}.writes"), "PYTHONPATH": str(REPO / "tests")}
    module = ["-m", "write_counting_cli"]  # tests/write_counting_cli.py
    # accelerate's own CPU multi-process launch needs mpirun; its torchrun launcher (--multi_gpu)
    # runs on CPUs when ACCELERATE_USE_CPU is set, and Accelerator then uses gloo.
    launcher = [sys.executable]
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "true"
        launcher = [
            ACCELERATE,
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
        ]
        launcher += [
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
        ]
    command = [*launcher, *module, "student", "train", "--name", name, "--runs-dir", str(tmp_path)]
    command += [*ARGS, "--batch-size", str(batch), "--seed", str(seed), "--threads", "2"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr, tmp_path / name


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([state[k].float().flatten() for k in sorted(state)])


def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path) -> None:
    from distill.students.config import TrainConfig

    two_log, two = _train(tmp_path, "two", processes=2, batch=4)
    _, one = _train(tmp_path, "one", processes=1, batch=8)
    _, half_batch = _train(tmp_path, "half-batch", processes=1, batch=4)

    start = _flat(TrainConfig(name="start", kind="cross", layers=2).student_kind.build(2).state_dict())
    reference = _flat(_weights(one))
    moved = (reference - start).norm()
    assert (_flat(_weights(two)) - reference).norm() < TOLERANCE * moved
    assert (_flat(_weights(half_batch)) - reference).norm() > TOLERANCE * moved  # the check can fail

    metrics = json.loads((two / "metrics.json").read_text())
    assert (metrics["processes"], metrics["global_batch_size"]) == (2, 8)
    assert json.loads((one / "metrics.json").read_text())["global_batch_size"] == 8
    # The run folder was written by rank 0 only, once per improvement (one epoch: once), and one
    # process printed the result.
    writes = (tmp_path / "two.writes").read_text().splitlines()
    assert writes == ["save_run rank=0", "write_metrics rank=0"]
    assert two_log.count("best epoch 1:") == 1 and "2 processes x batch 4" in two_log
