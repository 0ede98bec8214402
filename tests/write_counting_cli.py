"""`python -m distill.cli`, with every write of the run folder logged to $WRITES_LOG with its rank, and
dropout off: what tests/distill/test_train_multiprocess.py launches under `accelerate launch`, to see
who wrote what and to compare runs whose only randomness is then the seeded data order."""

from __future__ import annotations

import os

import torch

from distill.cli import app
from distill.students import loop
from distill.students.kinds import StudentKind


def _logged(name, write):
    def wrapper(*args, **kwargs):
        with open(os.environ["WRITES_LOG"], "a") as log:
            log.write(f"{name} rank={os.environ.get('RANK', '0')}\n")
        return write(*args, **kwargs)

    return wrapper


def _without_dropout(build):
    def wrapper(*args, **kwargs):
        model = build(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model

    return wrapper


StudentKind.build = _without_dropout(StudentKind.build)
loop.save_run = _logged("save_run", loop.save_run)
loop.write_metrics = _logged("write_metrics", loop.write_metrics)

if __name__ == "__main__":
    app()
