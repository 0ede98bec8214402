"""Memory of the scoring model (issue 14, defect 7): what a large batch leaves in onnxruntime's CPU arena
and in the malloc heap is returned once the model is idle, and under continuous load once a period.

Without it a server stayed at its largest batch's peak for good (and grew with fragmentation). The
tiny bundles' activations are made large with 256-token inputs, so the peak stands well above the noise.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_harness import Server, tiny_bundle

from core.bundle import read_manifest, write_manifest
from service.onnx_model import OnnxModel

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

# The onnxruntime run option that frees the CPU arena's unused regions at the end of a run.
ARENA_SHRINK = ("memory.enable_memory_arena_shrinkage", "cpu:0")
WIDTH = 256  # tokens per input: the tiny model's max_position_embeddings


def _rss_mib(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _wait_for_rss_below(limit_mib: float, pid: int | str = "self", timeout_s: float = 15.0) -> float:
    give_up = time.monotonic() + timeout_s
    while True:
        rss, _ = _rss_mib(pid)
        if rss <= limit_mib or time.monotonic() > give_up:
            return rss
        time.sleep(0.25)


def _feeds(rows: int, width: int = WIDTH, seed: int = 0) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1000, 20000, (rows, width)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def bi_bundle(tmp_path_factory) -> Path:
    """The tiny bi bundle with 256-token items."""
    out = tiny_bundle(tmp_path_factory.mktemp("memory") / "bi", "bi")
    write_manifest(
        out, read_manifest(out).model_copy(update={"max_item_tokens": WIDTH, "max_pair_tokens": WIDTH})
    )
    return out


class _RunSpy:
    """Wraps an InferenceSession: records the arena-shrinkage run option of every run."""

    def __init__(self, session) -> None:
        self._session = session
        self.shrink: list[bool] = []

    def run(self, outputs, feeds, run_options=None):
        shrink = False
        if run_options is not None:
            try:
                shrink = run_options.get_run_config_entry(ARENA_SHRINK[0]) == ARENA_SHRINK[1]
            except RuntimeError:  # onnxruntime's answer for an entry that is not set
                shrink = False
        self.shrink.append(shrink)
        return self._session.run(outputs, feeds, run_options)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_a_release_returns_the_memory_of_the_largest_batch_and_scores_identically(bi_bundle):
    model = OnnxModel(bi_bundle, read_manifest(bi_bundle), provider="cpu", intra_op_threads=1)
    small = _feeds(2, 16, seed=1)
    model.run(small)
    model.release_memory()
    fresh, _ = _rss_mib()
    big = _feeds(256)
    first = model.run(big)
    held, peak = _rss_mib()
    assert peak - fresh > 100, (
        f"the large batch should need >100 MiB (fresh {fresh:.0f}, peak {peak:.0f} MiB)"
    )
    model.release_memory()  # without it, the arena kept this for the life of the process
    after = _wait_for_rss_below(fresh + 40, timeout_s=5)
    assert after <= fresh + 40, (
        f"RSS {after:.0f} MiB after a release; peak {peak:.0f}, held {held:.0f}, fresh {fresh:.0f}"
    )
    assert model.releases == 2
    model.release_memory()  # nothing ran since: nothing to do
    assert model.releases == 2
    # Same inputs, same outputs, whether the arena was released in between or not.
    assert np.array_equal(model.run(big), first)
    assert np.array_equal(model.run(small), model.run(small))


def test_under_continuous_load_one_run_per_period_returns_the_memory(bi_bundle):
    model = OnnxModel(
        bi_bundle, read_manifest(bi_bundle), provider="cpu", intra_op_threads=1, release_every_s=0.3
    )
    spy = model.session = _RunSpy(model.session)
    feeds = _feeds(8, 64)
    expected = model.run(feeds)
    give_up = time.monotonic() + 1.0
    while time.monotonic() < give_up:
        assert np.array_equal(model.run(feeds), expected)
        time.sleep(0.02)
    shrunk = sum(spy.shrink)
    assert 2 <= shrunk <= 5, f"{shrunk} of {len(spy.shrink)} runs released the arena; expected one per 0.3 s"
    assert len(spy.shrink) - shrunk >= 10  # the others keep the arena: no cost while busy
    assert model.releases == shrunk


async def test_the_batcher_calls_its_idle_hook_once_after_work_never_while_busy():
    from core.tokenization import Encoded
    from service.batcher import Batcher, BatchPolicy
    from service.metrics import Metrics

    calls: list[float] = []

    def run(arrays):
        return np.zeros((len(arrays["input_ids"]), 2), dtype=np.float32)

    batcher = Batcher(
        run,
        BatchPolicy(max_pairs=8, max_tokens=1000, max_wait_s=0.001, capacity=100),
        Metrics(),
        on_idle=lambda: calls.append(time.monotonic()),
        idle_s=0.3,
    )
    batcher.start()
    try:
        encoded = [Encoded(ids=[1, 2], type_ids=[0, 0], offsets=[(0, 0)] * 2, sequence_ids=[0, 0])]
        for _ in range(15):  # busy: a request every 0.05 s, never idle for 0.3 s
            ticket = batcher.admit(1, 5000)
            batcher.enqueue(ticket, encoded)
            await batcher.result(ticket)
            await asyncio.sleep(0.05)
        assert calls == []
        await asyncio.sleep(1.0)
        assert len(calls) == 1  # once idle; and not again, since nothing ran after it
    finally:
        await batcher.stop()


def test_a_server_returns_to_its_fresh_memory_after_a_large_request(bi_bundle, tmp_path):
    # No time cap on a batch, so the 500 long items go in two batches of 256 × 256 tokens.
    server = Server(bi_bundle, tmp_path / "server.log", batch_max_ms=0, batch_max_tokens=256 * WIDTH)
    try:
        pid = server.proc.pid
        time.sleep(3)  # the warm-up's memory is returned too
        fresh, _ = _rss_mib(pid)
        words = "red leather sofa oak table usb cable charger lamp steel waterproof hiking boots".split()
        rng = np.random.default_rng(0)
        body = {
            "query": "red sofa",
            "items": [
                {
                    "id": f"i{i}",
                    "title": " ".join(rng.choice(words, 40)),
                    "attributes": {f"a{k}": " ".join(rng.choice(words, 25)) for k in range(10)},
                }
                for i in range(500)
            ],
        }
        response = httpx.post(
            f"{server.url}/score", json=body, headers={"X-Deadline-Ms": "60000"}, timeout=120
        )
        assert response.status_code == 200, response.text[:500]
        _, peak = _rss_mib(pid)
        assert peak - fresh > 100, (
            f"the request should need >100 MiB (fresh {fresh:.0f}, peak {peak:.0f} MiB)"
        )
        after = _wait_for_rss_below(fresh + 60, pid)
        assert after <= fresh + 60, (
            f"server RSS {after:.0f} MiB 15 s after a request that peaked at "
            f"{peak:.0f} (fresh {fresh:.0f})\n{server.log_tail()}"
        )
    finally:
        server.stop()
