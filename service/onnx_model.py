"""One onnxruntime session over a bundle's model.onnx: checks its signature and runs padded batches."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.bundle import MODEL_FILE, BundleError, BundleManifest
from service.providers import ProviderChoice, choose_provider

log = logging.getLogger(__name__)


# Memory (CPU). onnxruntime's CPU arena keeps what the largest batch needed (and grows further with
# fragmentation), and glibc keeps the heap pages the arena frees: a server of the default bundle held
# 392 MiB (fresh: 248) after five long 500-item requests, 675 MiB when batches reach
# RELEVANCE_BATCH_MAX_TOKENS, and never gave it back (issue 14, defect 7). Returning it after every run
# costs 7-12% of throughput (the next run faults it back in), so it is returned once the model has been
# idle for a while (the batcher calls ``release_memory`` on its inference thread after
# RELEVANCE_ORT_RELEASE_IDLE_S without work), and under continuous load by one run in every RELEASE_EVERY_S.
RELEASE_EVERY_S = 30.0
ARENA_SHRINK = (
    "memory.enable_memory_arena_shrinkage",
    "cpu:0",
)  # run option: free the arena's unused regions


def _malloc_trim():
    """glibc's ``malloc_trim`` (returns the free pages of every malloc arena), or None (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


class OnnxModel:
    """Runs the bundle's inputs → its float32 output (core/bundle.py: ``ONNX_SIGNATURES``).

    Not thread-safe by design: the batcher calls ``run`` and ``release_memory`` from its single
    inference thread. On CPU, every ``release_every_s`` one run returns the memory at its end (0: never).
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: BundleManifest,
        *,
        provider: str = "auto",
        strict: bool = False,
        intra_op_threads: int = 1,
        allow_spinning: bool = True,
        release_every_s: float = RELEASE_EVERY_S,
    ) -> None:
        self.manifest = manifest
        self.choice: ProviderChoice = choose_provider(provider, ort.get_available_providers(), strict=strict)
        if self.choice.warning:
            log.warning(self.choice.warning)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = Path(bundle_dir) / MODEL_FILE
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.choice.providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise BundleError(f"{path}: onnxruntime cannot load it ({exc})") from exc
        self.providers_in_use: list[str] = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        signature = manifest.onnx
        unknown = set(self.input_names) - set(signature.inputs)
        if unknown or signature.inputs[0] not in self.input_names:
            raise BundleError(
                f"{path}: inputs are {self.input_names}; expected a subset of {list(signature.inputs)} "
                f"including {signature.inputs[0]}"
            )
        self.output_name = signature.output
        outputs = [o.name for o in self.session.get_outputs()]
        if self.output_name not in outputs:
            raise BundleError(
                f"{path}: a {manifest.kind} bundle needs output {self.output_name!r}; it has {outputs}"
            )
        self._on_gpu = self.providers_in_use[0] != "CPUExecutionProvider"
        # CPU only: on GPU the activations live in the CUDA arena (shrinking it would cost cudaMallocs).
        self._plain = ort.RunOptions()
        self._release = ort.RunOptions()
        self._release.add_run_config_entry(*ARENA_SHRINK)
        self._trim = _malloc_trim()
        self._tiny = {
            name: np.full((1, 1), name != "token_type_ids", dtype=np.int64) for name in self.input_names
        }
        self._release_failed = False
        self._release_every_s = 0.0 if self._on_gpu else release_every_s
        self._last_release = time.monotonic()
        self._ran_since_release = False
        self.releases = 0

    @property
    def provider(self) -> str:
        return self.providers_in_use[0]

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: arrays[name] for name in self.input_names}
        if self._on_gpu:
            # IO binding: inputs copied once to the device, output read back once (fp16 bundles included).
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            release = (
                bool(self._release_every_s) and time.monotonic() - self._last_release >= self._release_every_s
            )
            out = self.session.run([self.output_name], feeds, self._release if release else self._plain)[0]
            self._ran_since_release = True
            if release:
                self._released()
        return np.asarray(out, dtype=np.float32)

    def release_memory(self) -> None:
        """Return to the OS what the arena and the malloc heap hold beyond the model itself: a 1-token run
        with the arena shrinkage option, then ``malloc_trim``. Does nothing on GPU, or when nothing ran
        since the last release."""
        if self._on_gpu or not self._ran_since_release:
            return
        try:
            self.session.run([self.output_name], self._tiny, self._release)
        except Exception:  # noqa: BLE001 - never fatal; the heap is still trimmed
            if not self._release_failed:
                log.warning("the 1-token run that releases onnxruntime's arena failed", exc_info=True)
            self._release_failed = True
        self._released()

    def _released(self) -> None:
        if self._trim is not None:
            self._trim(0)
        self._last_release = time.monotonic()
        self._ran_since_release = False
        self.releases += 1

    def check_output(self, out: np.ndarray, rows: int) -> None:
        """Called at warm-up: the output's shape must match what bundle.json promises."""
        m = self.manifest
        width = m.onnx.width(m)
        if out.shape != (rows, width):
            raise BundleError(
                f"model output {self.output_name} has shape {out.shape}; bundle.json implies "
                f"({rows}, {width}) ({m.onnx.output_width})"
            )
        if not np.isfinite(out).all():
            raise BundleError(
                f"model output {self.output_name} has NaN or infinite values at warm-up; the "
                "weights are broken"
            )
