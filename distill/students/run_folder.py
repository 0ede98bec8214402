"""A training run folder, ``runs/<name>/``: the one definition of its files and of saving and loading a run.

checkpoint.pt    the best epoch's student: torch.save of {"kind", "bert_config", "state_dict"}
config.json      the TrainConfig it was trained with (``relevance student export`` copies its template
                 and token limits into bundle.json)
tokenizer.json   the tokenizer its inputs were encoded with (becomes the bundle's)
metrics.json     the TrainResult plus the data report, written when training ends
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.bundle import TOKENIZER_FILE  # the run's tokenizer file becomes the bundle's, under the same name
from distill.students.config import TrainConfig
from distill.students.kinds import STUDENT_KINDS

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    kind: str
    bert_config: dict[str, Any]  # BertConfig.to_dict() of the (truncated) backbone
    state_dict: dict[str, Any]


def save_run(run_dir: Path, model, config: TrainConfig, tokenizer_file: str | Path) -> None:
    """Write (or overwrite) the checkpoint, config and tokenizer of a run; metrics come separately."""
    import torch

    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"kind": config.kind, "bert_config": model.bert.config.to_dict(), "state_dict": model.state_dict()},
        run_dir / CHECKPOINT_FILE,
    )
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if Path(tokenizer_file).resolve() != (run_dir / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_file, run_dir / TOKENIZER_FILE)


def read_checkpoint(run_dir: str | Path) -> Checkpoint:
    """The saved student's weights; FileNotFoundError when the folder has no checkpoint."""
    import torch

    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a trained student run")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(
        path=path, kind=state["kind"], bert_config=state["bert_config"], state_dict=state["state_dict"]
    )


def init_from_run(model, run_dir: str | Path, kind: str) -> None:
    """Start ``model`` from a trained run's weights: its embeddings, first layers and heads.

    Layers are kept from the bottom, the same truncation as the MiniLM start (``load_bert``). Every
    parameter of ``model`` must come from the run (strict), so a shape or kind mismatch is an error,
    never a half-initialised student.
    """
    checkpoint = read_checkpoint(run_dir)
    if checkpoint.kind != kind:
        raise ValueError(f"--init-from {run_dir}: a {checkpoint.kind} run cannot start a {kind} student")
    own = model.state_dict()
    layers, theirs = model.bert.config.num_hidden_layers, checkpoint.bert_config["num_hidden_layers"]
    if layers > theirs:
        raise ValueError(f"--init-from {run_dir}: it has {theirs} layers, this student asks for {layers}")
    wanted = {key: checkpoint.state_dict[key] for key in own if key in checkpoint.state_dict}
    missing = sorted(set(own) - set(wanted))
    if missing:
        raise ValueError(f"--init-from {run_dir}: the run lacks {', '.join(missing[:5])}")
    try:
        model.load_state_dict(wanted, strict=True)
    except RuntimeError as exc:  # shape mismatch: another backbone width or another head
        raise ValueError(f"--init-from {run_dir}: {exc}") from None


def read_config(run_dir: str | Path) -> TrainConfig:
    """A run folder's TrainConfig; ValueError when config.json is missing."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing")
    return TrainConfig.model_validate_json(path.read_text(encoding="utf-8"))


def load_run(run_dir: str | Path):
    """(model in eval mode, TrainConfig) from a training run folder; ValueError naming what is missing."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT_FILE, CONFIG_FILE, TOKENIZER_FILE):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not a training run: {name} is missing")
    config = read_config(run_dir)
    checkpoint = read_checkpoint(run_dir)
    model = STUDENT_KINDS[checkpoint.kind].build(None, bert_config=checkpoint.bert_config)
    model.load_state_dict(checkpoint.state_dict)
    model.eval()
    return model, config


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json of a run, or {} when training has not finished writing it."""
    path = run_dir / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
