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
    signature = ONNX_SIGNATURES[kind]
    return trace_bert_onnx(module, out_path, signature.inputs, signature.output, {0: "batch"}, opset=opset)


def trace_bert_onnx(
    module,
    out_path: str | Path,
    input_names,
    output_name: str,
    output_axes: dict[int, str],
    *,
    opset: int = OPSET,
) -> Path:
    """Trace ``module(input_ids, attention_mask, token_type_ids) -> tensor`` into ``out_path`` under the
    given input and output names (int64 inputs with dynamic batch and sequence; ``output_axes``: the
    output's dynamic axes). The bundle export and the bench's peer model folders both trace here."""
    import warnings

    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # Two rows of different lengths, so padding is exercised while tracing.
    ids = torch.tensor([[101, 2000, 2001, 2002, 102, 2003, 102], [101, 2004, 102, 2005, 102, 0, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output_name] = output_axes
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
        torch.onnx.export(
            module,
            (ids, mask, types),
            str(out_path),
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return out_path


def quantize_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Dynamic int8 (per-channel QInt8 weights, activations quantised at run time): what an int8
    bundle holds, and what the bench gives a peer serving the same model in int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(Path(fp32_path), Path(out_path), per_channel=True, weight_type=QuantType.QInt8)
    return Path(out_path)
