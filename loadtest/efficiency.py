"""How much of the machine's dense compute the model gets: FLOPs per pair, matmul peak, raw ONNX speed.

FLOPs of one encoder pass over a sequence of L (padded) tokens, for a BERT-style model::

    FLOPs(L) = 2 · W · L  +  4 · n_layers · d · L²

* ``2 · W · L``: every token goes through every dense weight once (a multiply and an add per
  weight); W = the number of weights in the graph's MatMul/Gemm initializers (Q, K, V, output,
  two FFN matrices per layer, plus the pooler/head, which really runs on one token only — an
  overcount of ≈ d²/W, under 2 % for MiniLM-L6).
* ``4 · n_layers · d · L²``: attention scores Q·Kᵀ (2·L²·d) and their product with V (2·L²·d)
  per layer; n_layers = Softmax nodes in the graph, d = hidden width (embedding table width).
  Embedding lookups, layer norms, GELU and softmax are O(L·d) and left out (< 1 %).

A cross bundle runs one pass per pair over the encoded (query, item); a bi bundle runs one pass
per item plus one per query, shared by the request's N items.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.workload import Request

_MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulNBits"}
_PASS_THROUGH_OPS = {"DequantizeLinear", "Transpose", "Cast", "Identity", "Reshape"}


@dataclass(frozen=True)
class ModelFlops:
    dense_weights: int  # W
    n_layers: int
    hidden: int  # d

    def per_sequence(self, length: int | np.ndarray) -> float | np.ndarray:
        return 2.0 * self.dense_weights * length + 4.0 * self.n_layers * self.hidden * np.square(length)

    def per_batch(self, batch: int, padded_length: int) -> float:
        return float(batch * self.per_sequence(padded_length))

    @classmethod
    def from_onnx(cls, model_path: str | Path) -> ModelFlops:
        import onnx

        model = onnx.load(str(model_path), load_external_data=False)
        graph = model.graph
        shapes = {init.name: tuple(init.dims) for init in graph.initializer}
        producer = {out: node for node in graph.node for out in node.output}

        def weight_shape(name: str, hops: int = 3) -> tuple[int, ...] | None:
            # Follow DequantizeLinear/Transpose/... back to an initializer (int8 and QDQ graphs).
            if name in shapes:
                return shapes[name]
            node = producer.get(name)
            if hops and node is not None and node.op_type in _PASS_THROUGH_OPS and node.input:
                return weight_shape(node.input[0], hops - 1)
            return None

        dense = 0
        for node in graph.node:
            if node.op_type not in _MATMUL_OPS:
                continue
            for name in node.input:
                shape = weight_shape(name) if name else None
                if shape is not None and len(shape) == 2 and min(shape) > 1:
                    dense += int(shape[0]) * int(shape[1])
                    break
        ops = Counter(node.op_type for node in graph.node)
        n_layers = ops.get("Softmax", 0) or ops.get("Attention", 0) or ops.get("MultiHeadAttention", 0)
        hidden = 0
        for node in graph.node:  # the widest table looked up by Gather is the word embedding
            if node.op_type == "Gather" and node.input and node.input[0] in shapes:
                table = shapes[node.input[0]]
                if len(table) == 2 and table[0] > 1000:
                    hidden = int(table[1])
        if dense == 0 or hidden == 0:
            raise ValueError(f"{model_path}: cannot find dense weights or the embedding table to count FLOPs")
        return cls(dense_weights=dense, n_layers=n_layers, hidden=hidden)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` dense fp32 matmul FLOP/s (numpy's BLAS, all its threads) on n×n matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm the BLAS threads and caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


@dataclass(frozen=True)
class RawOnnxResult:
    pairs: int
    batches: int
    model_s: float  # time inside session.run
    total_s: float  # tokenisation + padding + session.run
    padded_flops: float  # FLOPs actually executed, padding included
    useful_flops: float  # FLOPs over real tokens only
    mean_batch: float  # model input rows per batch (requests_per_batch requests each)
    mean_padded_length: float
    mean_length: float
    provider: str = "CPUExecutionProvider"  # the onnxruntime provider the session ran on

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.total_s

    @property
    def pairs_per_s_model_only(self) -> float:
        return self.pairs / self.model_s

    @property
    def flops_per_pair(self) -> float:
        return self.padded_flops / self.pairs

    def as_dict(self) -> dict[str, float | str]:
        return {
            "pairs": self.pairs,
            "batches": self.batches,
            "model_s": self.model_s,
            "total_s": self.total_s,
            "pairs_per_s": self.pairs_per_s,
            "pairs_per_s_model_only": self.pairs_per_s_model_only,
            "padded_flops": self.padded_flops,
            "useful_flops": self.useful_flops,
            "flops_per_pair": self.flops_per_pair,
            "mean_batch": self.mean_batch,
            "mean_padded_length": self.mean_padded_length,
            "mean_length": self.mean_length,
            "padded_flops_per_s": self.padded_flops / self.model_s,
            "provider": self.provider,
        }


def raw_onnx_throughput(
    bundle_dir: str | Path,
    requests: list[Request],
    *,
    flops: ModelFlops,
    max_seconds: float = 10.0,
    intra_op_threads: int | None = None,
    provider: str = "cpu",
    strict: bool = False,
    requests_per_batch: int = 1,
) -> RawOnnxResult:
    """Score ``requests`` through the service's own model code, without the service: no HTTP, JSON or queue.

    Each batch is ``requests_per_batch`` requests (1: what the service runs for a lone client; more:
    the batches it forms across concurrent clients): the serving template, tokenizer, length-sorted
    runs (``plan_runs``), padding and onnxruntime session, in this thread. ``provider`` as
    RELEVANCE_PROVIDER (on CUDA the session runs with IO binding, ``service.onnx_model``); ``strict``:
    refuse to fall back to CPU.
    """
    from core.bundle import bundle_tokenizer, read_manifest
    from core.tokenization import pad_batch
    from service.batcher import RUN_OVERHEAD_TOKENS, plan_runs
    from service.kinds import scoring_for
    from service.metrics import Metrics
    from service.onnx_model import OnnxModel
    from service.settings import Settings

    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    settings = Settings(bundle=bundle)  # the service's onnxruntime settings, from the same RELEVANCE_ env
    model = OnnxModel(
        bundle,
        manifest,
        provider=provider,
        strict=strict,
        intra_op_threads=intra_op_threads or settings.ort_intra_op_threads,
        allow_spinning=settings.ort_allow_spinning,
    )
    tokenizer = bundle_tokenizer(bundle, manifest)
    template = manifest.template
    kind = scoring_for(manifest, tokenizer, 0, Metrics())  # the service's inputs per kind, uncached
    overhead = RUN_OVERHEAD_TOKENS[model.choice.device]
    if requests_per_batch < 1:
        raise ValueError(f"requests_per_batch must be at least 1, not {requests_per_batch}")

    pairs = batches = sequences = padded_tokens = real_tokens = 0
    model_s = padded = useful = 0.0

    def score(group: list[Request]) -> None:
        nonlocal batches, sequences, padded_tokens, real_tokens, model_s, padded, useful
        encoded = [
            row
            for request in group
            for row in kind.inputs(
                template.query_text(request.query), [template.item_text(i) for i in request.items]
            )
        ]
        lengths = [len(e) for e in encoded]
        for run in plan_runs(lengths, overhead):
            arrays = pad_batch([encoded[i] for i in run], tokenizer.pad_id)
            t0 = time.perf_counter()
            model.run(arrays)
            model_s += time.perf_counter() - t0
            rows, width = arrays["input_ids"].shape
            padded += flops.per_batch(rows, width)
            padded_tokens += rows * width
        batches += 1
        sequences += len(encoded)
        real_tokens += sum(lengths)
        useful += float(np.sum(flops.per_sequence(np.array(lengths))))

    groups = [
        [requests[(start + k) % len(requests)] for k in range(requests_per_batch)]
        for start in range(0, len(requests), requests_per_batch)
    ]
    score(groups[0])  # warm-up (allocations, thread pool, CUDA kernels), not counted
    pairs = batches = sequences = padded_tokens = real_tokens = 0
    model_s = padded = useful = 0.0
    started = time.perf_counter()
    for group in _cycle_until(groups, started, max_seconds):
        score(group)
        pairs += sum(request.n_items for request in group)
    total_s = time.perf_counter() - started
    return RawOnnxResult(
        pairs=pairs,
        batches=batches,
        model_s=model_s,
        total_s=total_s,
        padded_flops=padded,
        useful_flops=useful,
        mean_batch=sequences / batches,
        provider=model.provider,
        mean_padded_length=padded_tokens / sequences,
        mean_length=real_tokens / sequences,
    )


def _cycle_until(items: list, started: float, max_seconds: float):
    """Items in turn (cycled) until the time is up; at least one."""
    n = 0
    while True:
        yield items[n % len(items)]
        n += 1
        if time.perf_counter() - started >= max_seconds:
            return
