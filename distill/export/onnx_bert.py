"""BERT-family torch module → ONNX file with the bundle signature (core/bundle.py).

Inputs and output as ``core.bundle.ONNX_SIGNATURES`` names them for the bundle's kind (int64 inputs,
dynamic batch and sequence). One self-contained file (no external data), as a bundle holds a single
``model.onnx``.
"""

from __future__ import annotations

from pathlib import Path

from core.bundle import ONNX_SIGNATURES

OPSET = 17


def export_bert_onnx(module, out_path: str | Path, kind: str, *, opset: int = OPSET) -> Path:
    """Trace ``module(input_ids, attention_mask, token_type_ids) -> tensor`` into ``out_path``, with the
    signature of a ``kind`` bundle."""
    import warnings

    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # Two rows of different lengths, so padding is exercised while tracing.
    ids = torch.tensor([[101, 2000, 2001, 2002, 102, 2003, 102], [101, 2004, 102, 2005, 102, 0, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    signature = ONNX_SIGNATURES[kind]
    output_name = signature.output
    axes = {name: {0: "batch", 1: "sequence"} for name in signature.inputs}
    axes[output_name] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
        torch.onnx.export(
            module,
            (ids, mask, types),
            str(out_path),
            input_names=list(signature.inputs),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return out_path
