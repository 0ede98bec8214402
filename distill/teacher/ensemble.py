"""Teacher rung (c), the ensemble: a grade head over what the cheaper judges say about a pair.

``relevance teacher ensemble-fit`` fits it, ``--teacher ensemble:DIR`` (annotate) and ``--system
ensemble:DIR`` (eval) use it. Its features per pair (``FEATURES``):

* the cross teacher's grade log-probabilities (a ``bundle:`` with a grade head, rung (a));
* the zero-shot bi-encoder's score (the default bundle: what it knows about Exact+Partial vs
  Irrelevant is where the fine-tuned cross-encoder is weakest);
* BM25 of the query against the item text, with document frequencies frozen from the fitting
  catalogue (so any pair can be scored without an index), and the share of query words in the item;
* the rule CoT's per-dimension verdicts (distill/teacher/bootstrap.py, label-free).

The head is a multinomial logistic regression on standardised features, fitted on pairs the cross
teacher never trained on (``relevance data holdout``: the teacher trains on the fit part, the head on
the held-out fold), so the head does not learn to trust the teacher's memory of its own train set.
A judgement's record carries the head's grade distribution and the rule CoT's dimensions and
evidence, so one record file holds both KD signals.

DIR/ensemble.json holds the member specs, the BM25 statistics, the feature means and scales and the
head's weights; nothing else is needed to score.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.cot import BOOTSTRAP_DIMENSIONS, DIMENSIONS, OVERLAP_DIMENSION, CoTRecord
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.data.schema import distinct_items
from distill.teacher.bootstrap import rule_judgements
from distill.teacher.bundle_teacher import SPEC_PREFIX as BUNDLE_PREFIX
from distill.teacher.bundle_teacher import BundleScorer, score_record

SPEC_PREFIX = "ensemble:"
ENSEMBLE_FILE = "ensemble.json"
PROMPT_VERSION = "ensemble-v1"
K1, B = 1.5, 0.75  # BM25 (Lucene), as distill/baselines/bm25.py
_WORD = re.compile(r"\w+")
_VERDICT_VALUE = {"match": 1.0, "partial": 0.5, "not_stated": 0.0, "mismatch": -1.0}
RULE_DIMENSIONS: tuple[str, ...] = tuple(
    d for d in (*DIMENSIONS, *BOOTSTRAP_DIMENSIONS) if d != OVERLAP_DIMENSION
)
FEATURES: tuple[str, ...] = (
    *(f"cross_logp_{g}" for g in GRADE_LEVELS),
    "bi_score",
    "bm25_log1p",
    "query_words_in_item",
    *(f"rule_{d}" for d in RULE_DIMENSIONS),
)


class EnsembleError(ValueError):
    """An ensemble folder or member that cannot be used; the message says why."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class FrozenBM25:
    """BM25 with the document frequencies of a fixed catalogue: a pair's score needs no index."""

    def __init__(self, df: Mapping[str, int], documents: int, mean_length: float) -> None:
        self.df, self.documents, self.mean_length = dict(df), documents, mean_length

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> FrozenBM25:
        df: Counter[str] = Counter()
        lengths = []
        for text in texts:
            words = _words(text)
            lengths.append(len(words))
            df.update(set(words))
        return cls(df, len(texts), float(np.mean(lengths)) if lengths else 1.0)

    def score(self, query: str, item_text: str) -> float:
        words = _words(item_text)
        tf = Counter(words)
        norm = K1 * (1 - B + B * len(words) / max(self.mean_length, 1e-9))
        total = 0.0
        for word in _words(query):  # a repeated query word counts again, as in bm25s
            if tf[word]:
                df = self.df.get(word, 0)
                idf = math.log(1 + (self.documents - df + 0.5) / (df + 0.5))
                total += idf * tf[word] / (tf[word] + norm)  # bm25s's Lucene form: no (k1 + 1)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {"df": self.df, "documents": self.documents, "mean_length": self.mean_length}


def pair_features(
    cross_grades: Mapping[str, float], bi_score: float, bm25: FrozenBM25, query: str, item_text: str
) -> np.ndarray:
    """The feature vector of one pair, in ``FEATURES`` order (rendered query and item texts)."""
    query_words = set(_words(query))
    item_words = set(_words(item_text))
    rules = {j.dimension: _VERDICT_VALUE[j.verdict] for j in rule_judgements(query, item_text)}
    return np.array(
        [
            *(math.log(max(cross_grades[g], 1e-6)) for g in GRADE_LEVELS),
            bi_score,
            math.log1p(bm25.score(query, item_text)),
            len(query_words & item_words) / max(len(query_words), 1),
            *(rules.get(d, 0.0) for d in RULE_DIMENSIONS),
        ]
    )


def fit_head(x: np.ndarray, labels: Sequence[str], *, l2: float = 1e-3) -> dict[str, Any]:
    """Multinomial logistic regression (L-BFGS, L2 ``l2`` on the weights) on standardised ``x``."""
    import torch

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature (e.g. a dimension no pair states) carries nothing
    z = torch.tensor((x - mean) / scale, dtype=torch.float64)
    y = torch.tensor([GRADE_LEVELS.index(label) for label in labels])
    weights = torch.zeros((x.shape[1], len(GRADE_LEVELS)), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(GRADE_LEVELS), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weights + bias, y) + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # returns the loss before the first iteration, not the fitted one
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(z @ weights + bias, y) + l2 * (weights**2).sum())
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "weights": weights.detach().numpy().tolist(),
        "bias": bias.detach().numpy().tolist(),
        "l2": l2,
        "train_loss": loss,
    }


def head_probabilities(head: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    z = (x - np.asarray(head["mean"])) / np.asarray(head["scale"])
    logits = z @ np.asarray(head["weights"]) + np.asarray(head["bias"])
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


class Members:
    """The cross and bi bundles of an ensemble, each scored through the service's Scorer."""

    def __init__(self, cross: str, bi: str) -> None:
        for name, spec in (("cross", cross), ("bi", bi)):
            if not spec.startswith(BUNDLE_PREFIX):
                raise EnsembleError(f"the {name} member must be a bundle:PATH spec, not {spec!r}")
        self.specs = {"cross": cross, "bi": bi}
        self.cross = BundleScorer(cross.removeprefix(BUNDLE_PREFIX))
        self.bi = BundleScorer(bi.removeprefix(BUNDLE_PREFIX))
        if not self.cross.manifest.has_grades:
            raise EnsembleError(
                f"the cross member {cross} has no grade head: its grade log-probs are features"
            )

    async def features(self, query: str, items: Sequence[Mapping[str, Any]], bm25: FrozenBM25) -> np.ndarray:
        """Feature rows of several items of one query (both members score them in one request each)."""
        cross, bi = await asyncio.gather(
            self.cross.score_many(query, items), self.bi.score_many(query, items)
        )
        template = DEFAULT_TEMPLATE
        query_text = template.query_text(query)
        return np.stack(
            [
                pair_features(c["grades"], b["score"], bm25, query_text, template.item_text(item))
                for c, b, item in zip(cross, bi, items, strict=True)
            ]
        )

    async def aclose(self) -> None:
        await asyncio.gather(self.cross.aclose(), self.bi.aclose())


async def member_features(
    members: Members,
    bm25: FrozenBM25,
    pairs: Sequence,
    *,
    concurrency: int = 8,
    desc: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Features of every pair (LabelledPair): the pairs of one query go to the members as one request,
    ``concurrency`` queries in flight so the Scorers batch them."""
    from tqdm import tqdm

    out = np.zeros((len(pairs), len(FEATURES)))
    by_query: dict[str, list[int]] = {}
    for row, pair in enumerate(pairs):
        by_query.setdefault(pair.query, []).append(row)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(pairs), desc=desc, unit="pair", file=sys.stderr, disable=not progress)

    async def one(query: str, rows: list[int]) -> None:
        async with gate:
            out[rows] = await members.features(query, [pairs[r].item.as_mapping() for r in rows], bm25)
        bar.update(len(rows))

    try:
        await asyncio.gather(*(one(q, rows) for q, rows in by_query.items()))
    finally:
        bar.close()
    return out


def fit_ensemble(
    out_dir: Path, *, cross: str, bi: str, fit_pairs: Sequence, catalogue: Sequence, data: str
) -> dict[str, Any]:
    """Fit the head on ``fit_pairs`` (labelled, unseen by the cross member) and write DIR/ensemble.json."""
    labelled = [p for p in fit_pairs if p.label in GRADE_LEVELS]
    if len({p.label for p in labelled}) < 2:
        raise EnsembleError(f"{data}: the head needs labelled pairs of at least two grades")
    texts = {
        i: DEFAULT_TEMPLATE.item_text(item.as_mapping()) for i, item in distinct_items(catalogue).items()
    }
    bm25 = FrozenBM25.from_texts(list(texts.values()))
    members = Members(cross, bi)

    async def run() -> np.ndarray:
        try:
            return await member_features(members, bm25, labelled, desc="ensemble features")
        finally:
            await members.aclose()

    x = asyncio.run(run())
    head = fit_head(x, [p.label for p in labelled])
    predicted = head_probabilities(head, x).argmax(axis=1)
    spec = {
        "version": PROMPT_VERSION,
        "members": members.specs,
        "features": list(FEATURES),
        "grade_levels": list(GRADE_LEVELS),
        "bm25": bm25.as_dict(),
        "head": head,
        "fitted_on": {
            "data": data,
            "pairs": len(labelled),
            "queries": len({p.query_id for p in labelled}),
            "catalogue_items": len(texts),
            "accuracy_on_fit_pairs": float(
                np.mean(predicted == [GRADE_LEVELS.index(p.label) for p in labelled])
            ),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (ENSEMBLE_FILE + ".partial")
    partial.write_text(json.dumps(spec) + "\n", encoding="utf-8")
    partial.replace(out_dir / ENSEMBLE_FILE)
    return spec


def read_ensemble(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / ENSEMBLE_FILE
    if not path.is_file():
        raise EnsembleError(
            f"{path} not found: not an ensemble folder (relevance teacher ensemble-fit writes one)"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("features") != list(FEATURES) or spec.get("grade_levels") != list(GRADE_LEVELS):
        raise EnsembleError(
            f"{path}: fitted for other features or grades than this version computes; refit it"
        )
    return spec


class EnsembleTeacher:
    """Duck-types ``teacher.Teacher`` for ``distill.teacher.annotate`` (score mode), like BundleTeacher."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.spec = read_ensemble(self.folder)
        self.bm25 = FrozenBM25(**self.spec["bm25"])
        self.members = Members(**self.spec["members"])
        self.teacher_id = f"ensemble:{self.folder.name}@{self.spec['created_at']}"
        self.prompt_version = PROMPT_VERSION

    async def judge(
        self, query: str, item: Mapping[str, Any], *, label: str | None = None, mode: str = "score"
    ) -> CoTRecord:
        if mode != "score":
            raise EnsembleError(f"an ensemble teacher judges in score mode only, not {mode!r}")
        x = await self.members.features(query, [item], self.bm25)
        return self._record(query, item, label, head_probabilities(self.spec["head"], x)[0])

    async def judge_many(self, pairs: Sequence, *, mode: str = "score") -> list[CoTRecord]:
        """Records of many pairs (LabelledPair) at once, each query's items in one request per member:
        what ``distill.teacher.annotate`` uses when a teacher has it (several times faster than one
        ``judge`` per pair on a CPU)."""
        if mode != "score":
            raise EnsembleError(f"an ensemble teacher judges in score mode only, not {mode!r}")
        x = await member_features(self.members, self.bm25, pairs, progress=False)
        probs = head_probabilities(self.spec["head"], x)
        return [
            self._record(p.query, p.item.as_mapping(), p.label, row)
            for p, row in zip(pairs, probs, strict=True)
        ]

    def _record(self, query: str, item: Mapping[str, Any], label: str | None, probs: np.ndarray) -> CoTRecord:
        distribution = dict(zip(GRADE_LEVELS, map(float, probs), strict=True))
        template = DEFAULT_TEMPLATE
        dimensions = rule_judgements(template.query_text(query), template.item_text(item))
        return score_record(self, query, item, template, distribution, label, dimensions)

    async def aclose(self) -> None:
        await self.members.aclose()


def score_ensemble(folder: str | Path, pairs: Sequence) -> tuple[np.ndarray, dict[str, Any]]:
    """Grade probabilities (rows over GRADE_LEVELS) of every pair, and the ensemble's description."""
    spec = read_ensemble(folder)
    members = Members(**spec["members"])

    async def run() -> np.ndarray:
        try:
            return await member_features(
                members, FrozenBM25(**spec["bm25"]), pairs, desc=f"scoring with {Path(folder).name}"
            )
        finally:
            await members.aclose()

    probs = head_probabilities(spec["head"], asyncio.run(run()))
    return probs, {"members": spec["members"], "fitted_on": spec["fitted_on"]}
