"""What the GPU run reads besides the source tree, and how it is built on the CPU machine.

Layout of a payload folder (one definition, read by run.py, written by ``build_models``)::

    bundles/bi/       fp16 bundle of the default bi model (models/minilm-zero-shot-bi)
    bundles/cross/    fp16 bundle of the 6-layer cross student
    reference/bi.json, reference/cross.json
                      CPU fp32 scores of the dev pairs (the fp32 bundle through the service's Scorer),
                      what the CUDA fp16 scores are checked against with the export gates
    hf-cross/         the cross student as a Hugging Face folder for sentence-transformers' CrossEncoder
                      (loadtest/hf_cross.py), config and tokenizer only: the weights (45 MB in fp16)
                      would cost one more device call, and the peer's speed does not depend on their values,
                      so run.py initialises the same architecture at random
    wheels/           the wheels the GPU machine lacks (prepare.py)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BUNDLES = ("cross", "bi")  # the cross student first: the targets are about it
HF_CROSS = "hf-cross"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Payload:
    root: Path

    def bundle(self, kind: str) -> Path:
        return self.root / "bundles" / kind

    def reference(self, kind: str) -> Path:
        return self.root / "reference" / f"{kind}.json"

    @property
    def hf_cross(self) -> Path:
        return self.root / HF_CROSS

    @property
    def wheels(self) -> Path:
        from core.carry import WHEELS_DIR

        return self.root / WHEELS_DIR

    def check(self) -> None:
        """Raise FileNotFoundError naming the first missing piece."""
        needed = [self.bundle(k) / "bundle.json" for k in BUNDLES] + [self.reference(k) for k in BUNDLES]
        needed.append(self.hf_cross / "config.json")
        for path in needed:
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: missing from the payload (build it with `make gpu-prepare`)"
                )


@dataclass(frozen=True)
class Reference:
    """CPU fp32 scores of the first ``count`` pairs of ``data`` by the fp32 bundle, and their NDCG@10."""

    data: str
    count: int
    pair_ids: list[str]
    scores: list[float]
    ndcg_at_10: float
    bundle: str  # the fp32 bundle's name, version and model sha256

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Reference:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a reference score file ({exc})") from None

    def pairs(self):
        """The pairs the scores belong to, re-read from the bundled data; refuses if they changed."""
        from distill.data.bundled import load_bundled

        split = self.data.removeprefix("bundled:")
        pairs = load_bundled(split)[: self.count]  # type: ignore[arg-type]
        if [p.pair_id for p in pairs] != self.pair_ids:
            raise ValueError(f"{self.data}: its first {self.count} pairs differ from the reference's")
        return pairs


def reference_scores(fp32_bundle: Path, pairs: Sequence, data: str) -> Reference:
    from core.bundle import MODEL_FILE, read_manifest
    from distill.export.checks import bundle_scores
    from distill.students.predict import ranking_metrics

    manifest = read_manifest(fp32_bundle)
    scores = bundle_scores(fp32_bundle, pairs)
    return Reference(
        data=data,
        count=len(pairs),
        pair_ids=[p.pair_id for p in pairs],
        scores=[float(s) for s in scores],
        ndcg_at_10=float(ranking_metrics(pairs, scores)["ndcg@10"]),
        bundle=f"{manifest.name} {manifest.version} model sha256 {manifest.files.get(MODEL_FILE, '?')}",
    )


def build_models(
    payload: Payload, bi_fp32: Path, cross_run: Path, dev_pairs: Sequence, data: str, work: Path, log=print
) -> None:
    """fp16 bundles (export gates against fp32 on ``dev_pairs``), CPU fp32 reference scores, the HF config."""
    from core.bundle import read_manifest
    from distill.export.student import Precision, export_student, reduce_bundle
    from loadtest.hf_cross import export_hf_cross_encoder

    work.mkdir(parents=True, exist_ok=True)
    log(f"payload: fp16 bundle of {bi_fp32} (checked against fp32 on {len(dev_pairs)} pairs of {data})")
    reduce_bundle(
        bi_fp32, payload.bundle("bi"), dev_pairs, precision=Precision.fp16, created_by="make gpu-prepare"
    )
    reference_scores(bi_fp32, dev_pairs, data).write(payload.reference("bi"))
    cross_fp32 = work / "cross-fp32"
    log(f"payload: fp32 and fp16 bundles of the cross student {cross_run}")
    export_student(cross_run, cross_fp32, dev_pairs, precision=Precision.fp32, created_by="make gpu-prepare")
    export_student(
        cross_run, payload.bundle("cross"), dev_pairs, precision=Precision.fp16, created_by="make gpu-prepare"
    )
    reference_scores(cross_fp32, dev_pairs, data).write(payload.reference("cross"))
    max_length = read_manifest(payload.bundle("cross")).max_pair_tokens
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        hf = export_hf_cross_encoder(cross_run, Path(tmp) / HF_CROSS, max_length=max_length)
        shutil.rmtree(payload.hf_cross, ignore_errors=True)
        payload.hf_cross.mkdir(parents=True)
        for path in hf.iterdir():
            if path.name not in WEIGHT_FILES:
                shutil.copyfile(path, payload.hf_cross / path.name)
    log(f"payload: models in {payload.root}")
