"""One onnxruntime session over a bundle's model.onnx: checks its signature and runs padded batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.bundle import MODEL_FILE, BundleError, BundleManifest
from service.providers import ProviderChoice, choose_provider

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = {"cross": "logits", "bi": "embedding"}


class OnnxModel:
    """Runs ``{input_ids, attention_mask, token_type_ids}`` → float32 ``logits`` (cross) or ``embedding`` (bi).

    Not thread-safe by design: the batcher calls ``run`` from its single inference thread.
    """

    def __init__(self, bundle_dir: str | Path, manifest: BundleManifest, *, provider: str = "auto",
                 strict: bool = False, intra_op_threads: int = 1, allow_spinning: bool = True) -> None:
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
        unknown = set(self.input_names) - set(INPUT_NAMES)
        if unknown or "input_ids" not in self.input_names:
            raise BundleError(f"{path}: inputs are {self.input_names}; expected a subset of {list(INPUT_NAMES)} "
                              "including input_ids")
        self.output_name = OUTPUT_NAME[manifest.kind]
        outputs = [o.name for o in self.session.get_outputs()]
        if self.output_name not in outputs:
            raise BundleError(f"{path}: a {manifest.kind} bundle needs output {self.output_name!r}; it has {outputs}")
        self._on_gpu = self.providers_in_use[0] != "CPUExecutionProvider"

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
            out = self.session.run([self.output_name], feeds)[0]
        return np.asarray(out, dtype=np.float32)

    def check_output(self, out: np.ndarray, rows: int) -> None:
        """Called at warm-up: the output's shape must match what bundle.json promises."""
        m = self.manifest
        width = len(m.grade_levels) if m.kind == "cross" else m.embedding_dim
        if out.shape != (rows, width):
            raise BundleError(f"model output {self.output_name} has shape {out.shape}; bundle.json implies "
                              f"({rows}, {width}) ({'grade levels' if m.kind == 'cross' else 'embedding_dim'})")
        if not np.isfinite(out).all():
            raise BundleError(f"model output {self.output_name} has NaN or infinite values at warm-up; the "
                              "weights are broken")
