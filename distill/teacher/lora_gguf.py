"""GGUF export of a LoRA-fine-tuned ELLM-rele checkpoint, for the llama.cpp backend.

llama.cpp's own converter (``convert_hf_to_gguf.py``) ships in its source tree, not in the
llama-cpp-python wheel, so it is not used. A merged LoRA changes only the projection matrices it
targeted; every other tensor of the merged checkpoint is still the de-quantised base GGUF's. The
export therefore copies the base GGUF (its metadata, tokenizer and quantised tensors unchanged)
and writes the targeted matrices as F32, in llama.cpp's layout: Llama's q/k rows are permuted for
its rotary embedding, the inverse of what transformers' GGUF loader undoes. The layout is checked
on the base weights before anything is written. Llama-architecture bases only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.teacher.lora import LORA_REPORT

LORA_GGUF = "model.gguf"

# transformers Llama module → GGUF tensor name stem (``blk.N.<stem>.weight``).
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (its converter's ``LlamaModel.permute``) from transformers'."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_tensor(weight: np.ndarray, module: str, config: dict[str, Any]) -> np.ndarray:
    if module == "self_attn.q_proj":
        return permute_for_rope(weight, config["num_attention_heads"])
    if module == "self_attn.k_proj":
        return permute_for_rope(weight, config.get("num_key_value_heads") or config["num_attention_heads"])
    return weight


def export_gguf(checkpoint: Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``checkpoint/model.gguf``; returns what was done or, when it cannot be, why not."""
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    report = json.loads((checkpoint / LORA_REPORT).read_text(encoding="utf-8"))
    base = Path(report["base"])
    source = base / "source.json"
    if not source.is_file():
        reason = (
            f"{base} was not made by `relevance teacher convert-base` (no source.json): no base GGUF to copy"
        )
        echo(f"GGUF export skipped: {reason}")
        return {"written": False, "reason": reason}
    base_gguf = Path(json.loads(source.read_text(encoding="utf-8"))["gguf"])
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    modules = [m for m in _GGUF_NAMES if m.split(".")[-1] in report["config"]["target_modules"]]
    unsupported = sorted(set(report["config"]["target_modules"]) - {m.split(".")[-1] for m in modules})
    if config.get("model_type") != "llama" or unsupported:
        reason = f"only Llama q/k/v/o/gate/up/down projections map to GGUF here (model_type {config.get('model_type')!r}, unsupported {unsupported})"
        echo(f"GGUF export skipped: {reason}")
        return {"written": False, "reason": reason}

    tensors = {t.name: t for t in gguf.GGUFReader(base_gguf).tensors}
    base_weights = load_file(base / "model.safetensors")
    merged = load_file(checkpoint / "model.safetensors")
    # Layout check on unchanged base weights: the de-quantised GGUF tensor must be our mapping of them.
    for module in ("self_attn.q_proj", "self_attn.k_proj"):
        got = _gguf_tensor(base_weights[f"model.layers.0.{module}.weight"], module, config)
        tensor = tensors[f"blk.0.{_GGUF_NAMES[module]}.weight"]
        if not np.allclose(got, dequantize(tensor.data, tensor.tensor_type), atol=1e-6):
            reason = f"the {module} layout of {base_gguf} is not the expected llama.cpp permutation"
            echo(f"GGUF export skipped: {reason}")
            return {"written": False, "reason": reason}
    replace = {
        f"blk.{layer}.{_GGUF_NAMES[module]}.weight": _gguf_tensor(
            merged[f"model.layers.{layer}.{module}.weight"], module, config
        )
        for layer in range(config["num_hidden_layers"])
        for module in modules
    }
    from distill.teacher.sft import write_gguf_copy

    out = checkpoint / LORA_GGUF
    write_gguf_copy(base_gguf, out, name_suffix="ellm-rele-lora", replace=replace)
    echo(
        f"wrote {out}: {base_gguf.name} with {len(replace)} merged LoRA matrices as F32 (teacher llamacpp:{out})"
    )
    return {"written": True, "path": str(out), "base_gguf": str(base_gguf), "replaced_tensors": len(replace)}
