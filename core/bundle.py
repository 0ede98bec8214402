"""The model bundle: the one definition of the seam between distill/ (writes) and service/ (reads).

A bundle is a folder::

    model.onnx       the network (``ONNX_SIGNATURES``: inputs and output per kind)
    tokenizer.json   a Hugging Face `tokenizers` file
    bundle.json      this module's ``BundleManifest``; ``files`` records the SHA-256 of the other
                     two, written by ``write_manifest`` and checked by ``verify_files`` before loading

Kinds and their ONNX signatures:

* ``cross`` (interaction-based): inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
  (int64, [batch, seq]) over the encoded (query, item) pair; output ``logits`` [batch, levels]
  over ``grade_levels``. Score = Σ softmax(logits)_i · level_values_i.
* ``bi`` (representation-based): the same inputs over one text (query or item); output
  ``embedding`` [batch, dim], L2-normalised. cos = q·d. With ``score.method == "cosine"`` the
  score is ``clip((cos - low) / (high - low), 0, 1)``; with ``"cosine_grade_head"`` grade logits are
  ``weights · cos + bias`` (one weight and bias per level), then as for ``cross``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.grades import GRADE_LEVELS, LEVEL_VALUES
from core.text_template import TextTemplate
from core.tokenization import BundleTokenizer

BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class OnnxSignature:
    """The inputs and the one output of a bundle's model.onnx, by kind: the exporter writes these names
    (distill/export/onnx_bert.py) and the service's session checks them (service/onnx_model.py)."""

    inputs: tuple[str, ...]
    output: str
    output_width: str  # what the output's second axis is, as bundle.json states it

    def width(self, manifest: BundleManifest) -> int | None:
        return len(manifest.grade_levels) if self.output_width == "grade_levels" else manifest.embedding_dim


BERT_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
ONNX_SIGNATURES: dict[str, OnnxSignature] = {
    "cross": OnnxSignature(BERT_INPUTS, "logits", "grade_levels"),
    "bi": OnnxSignature(BERT_INPUTS, "embedding", "embedding_dim"),
}


class BundleError(ValueError):
    """A bundle that cannot be served; the message says which file and what is wrong."""


class SoftmaxScore(BaseModel):
    """cross bundles: grade distribution = softmax(logits); score = expected level value."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["softmax_expected"] = "softmax_expected"


class CosineScore(BaseModel):
    """bi bundles without a grade head: affine map of cosine into [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["cosine"] = "cosine"
    low: float = -1.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> CosineScore:
        if not self.high > self.low:
            raise ValueError(f"score.high ({self.high}) must be greater than score.low ({self.low})")
        return self


class CosineGradeHeadScore(BaseModel):
    """bi bundles with a grade head: logits_i = weights_i · cos + bias_i."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["cosine_grade_head"] = "cosine_grade_head"
    weights: list[float]
    bias: list[float]


ScoreMapping = Annotated[SoftmaxScore | CosineScore | CosineGradeHeadScore, Field(discriminator="method")]


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")
    base_model: str = ""
    created_at: str = ""
    created_by: str = ""  # command that produced the bundle
    train_data: str = ""
    teacher: str = ""
    precision: Literal["fp32", "fp16", "int8"] = "fp32"


# The keys of ``BundleManifest.summary``.
SummaryField = Literal["name", "version", "kind", "score_method", "precision"]


class BundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = BUNDLE_FORMAT_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    kind: Literal["cross", "bi"]
    grade_levels: list[str] = Field(default_factory=lambda: list(GRADE_LEVELS), min_length=2)
    level_values: list[float] = Field(default_factory=lambda: list(LEVEL_VALUES))
    score: ScoreMapping
    max_query_tokens: int = Field(default=32, ge=4)
    max_item_tokens: int = Field(default=96, ge=4)
    max_pair_tokens: int = Field(default=128, ge=8)
    embedding_dim: int | None = None  # bi bundles
    template: TextTemplate = Field(default_factory=TextTemplate)
    provenance: Provenance = Field(default_factory=Provenance)
    metrics: dict[str, Any] = Field(default_factory=dict)
    # file name → SHA-256 hex; empty in bundles written before checksums (then nothing is verified)
    files: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        if self.format_version != BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (this build reads {BUNDLE_FORMAT_VERSION})"
            )
        if len(set(self.grade_levels)) != len(self.grade_levels):
            raise ValueError(f"grade_levels has duplicates: {self.grade_levels}")
        if len(self.level_values) != len(self.grade_levels):
            raise ValueError(
                f"level_values has {len(self.level_values)} entries but grade_levels has {len(self.grade_levels)}"
            )
        if self.kind == "cross" and self.score.method != "softmax_expected":
            raise ValueError(
                f"score.method {self.score.method!r} is not valid for a cross bundle (use softmax_expected)"
            )
        if self.kind == "bi":
            if self.score.method == "softmax_expected":
                raise ValueError("score.method softmax_expected is not valid for a bi bundle")
            if self.embedding_dim is None:
                raise ValueError("embedding_dim is required for a bi bundle")
            if isinstance(self.score, CosineGradeHeadScore):
                n = len(self.grade_levels)
                if len(self.score.weights) != n or len(self.score.bias) != n:
                    raise ValueError(f"score.weights and score.bias need {n} entries (one per grade level)")
        return self

    @property
    def onnx(self) -> OnnxSignature:
        return ONNX_SIGNATURES[self.kind]

    @property
    def has_grades(self) -> bool:
        return self.score.method != "cosine"

    def summary(self, *fields: SummaryField) -> dict[str, str]:
        """What names the bundle in responses, metrics and reports: name, version, kind, score_method,
        precision; only ``fields`` of them (in that order) where a contract fixes fewer keys."""
        full = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "score_method": self.score.method,
            "precision": self.provenance.precision,
        }
        return {field: full[field] for field in fields} if fields else full


def read_manifest(bundle_dir: str | Path) -> BundleManifest:
    """Validate a bundle folder and return its manifest, or raise BundleError saying what is wrong."""
    path = Path(bundle_dir)
    if not path.is_dir():
        raise BundleError(f"bundle folder {path} does not exist")
    for required in (MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE):
        if not (path / required).is_file():
            raise BundleError(f"bundle {path} is missing {required}")
    manifest_path = path / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{manifest_path}: {problems}") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: str | Path, manifest: BundleManifest) -> Path:
    """Write bundle.json, recording the checksums of the model and tokenizer files now in the folder
    (so write it last)."""
    folder = Path(bundle_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        name: file_sha256(folder / name) for name in (MODEL_FILE, TOKENIZER_FILE) if (folder / name).is_file()
    }
    path = folder / MANIFEST_FILE
    path.write_text(
        manifest.model_copy(update={"files": files}).model_dump_json(indent=2) + "\n", encoding="utf-8"
    )
    return path


def verify_files(bundle_dir: str | Path, manifest: BundleManifest) -> None:
    """Raise BundleError when a file differs from the checksum bundle.json records (corrupted on disk,
    or replaced without its manifest)."""
    for name, expected in manifest.files.items():
        path = Path(bundle_dir) / name
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(
                f"{path}: cannot load it, its SHA-256 is {actual[:12]}… but bundle.json records "
                f"{expected[:12]}… (the file is corrupted or was replaced without its bundle.json)"
            )


def bundle_tokenizer(bundle_dir: str | Path, manifest: BundleManifest) -> BundleTokenizer:
    """The bundle's tokenizer.json with the bundle's token limits: the inputs its model was checked on."""
    return BundleTokenizer(
        Path(bundle_dir) / TOKENIZER_FILE,
        max_pair_tokens=manifest.max_pair_tokens,
        max_query_tokens=manifest.max_query_tokens,
        max_item_tokens=manifest.max_item_tokens,
    )
