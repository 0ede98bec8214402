"""A Hugging Face model folder as the ONNX folder Infinity's ``--engine optimum`` loads, at a bundle's
precision.

Infinity's optimum engine (infinity_emb/transformer/utils_optimum.py) loads one ``*.onnx`` file from
the model folder through optimum's ``ORTModelForFeatureExtraction`` (embeddings: it reads the
``last_hidden_state`` output and mean-pools it itself) or ``ORTModelForSequenceClassification``
(rerank: ``logits``). On a CPU it prefers a file whose name contains "quantize". So the folder gets
exactly one ONNX file: ``model.onnx`` traced from the folder's torch weights for an fp32 bundle, or
that graph quantised as an int8 bundle is (``distill.export.onnx_bert.quantize_int8``: dynamic,
per-channel QInt8) as ``model_quantized.onnx``. Same weights, same precision, same quantiser: the
comparison is of the two servers, not of two models. Config and tokenizer files are copied beside it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

# Infinity API -> (transformers auto class, ONNX output name, the output's dynamic axes)
_GRAPHS = {
    "infinity-embeddings": ("AutoModel", "last_hidden_state", {0: "batch", 1: "sequence"}),
    "infinity-rerank": ("AutoModelForSequenceClassification", "logits", {0: "batch"}),
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}


def _first_output(model):
    """``model(input_ids, attention_mask, token_type_ids)[0]`` as a traceable module (torch is
    imported here: the bench imports this module without it)."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[0]

    return FirstOutput()


def onnx_model_folder(hf_dir: str | Path, out_dir: str | Path, *, api: str, precision: str) -> Path:
    """``out_dir`` (returned): ``hf_dir``'s config and tokenizer files plus one ONNX file of its weights at
    ``precision`` (fp32 or int8). ValueError for another precision or API."""
    if precision not in ONNX_FILES:
        raise ValueError(
            f"Infinity's optimum engine runs fp32 or int8 ONNX on a CPU here; the bundle is {precision!r}"
        )
    if api not in _GRAPHS:
        raise ValueError(f"unknown Infinity API {api!r}; expected one of {', '.join(_GRAPHS)}")
    import transformers

    from distill.export.onnx_bert import quantize_int8, trace_bert_onnx

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    # Files only (sentence-transformers' 1_Pooling/ etc. are not read by the optimum engine).
    out_dir.mkdir(parents=True)
    for path in hf_dir.iterdir():
        if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(path, out_dir / path.name)
    auto_class, output, axes = _GRAPHS[api]
    model = getattr(transformers, auto_class).from_pretrained(hf_dir).eval()
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    target = out_dir / ONNX_FILES[precision]
    if precision == "fp32":
        trace_bert_onnx(_first_output(model), target, inputs, output, axes)
        return out_dir
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = trace_bert_onnx(_first_output(model), Path(tmp) / "model.onnx", inputs, output, axes)
        quantize_int8(fp32, target)
    return out_dir
