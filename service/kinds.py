"""What differs between bundle kinds on the serving side, decided once per bundle (``scoring_for``).

cross bundles: one model input per (query, item) pair; score from the grade logits.
bi bundles: one input for the query plus one per item not in the embedding cache; score from the
cosine of the (L2-normalised) embeddings.

Both also say, per item, whether the token limit cut its text (``Scored.truncated``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from core import score_mapping
from core.bundle import BundleManifest
from core.item import Item
from core.tokenization import BundleTokenizer, Encoded, text_cut
from service.embedding_cache import EmbeddingCache, cache_key
from service.metrics import Metrics

# Scorer.score passes a run: admit n inputs, encode them (in the tokeniser thread), await their output rows.
Run = Callable[[int, Callable[[], list[Encoded]], float], Awaitable[np.ndarray]]


@dataclass(frozen=True, slots=True)
class Scored:
    """One request's items, in request order."""

    scores: np.ndarray  # [n] in [0, 1]
    probs: np.ndarray | None  # [n, levels] grade probabilities, where the bundle has grades
    logits: np.ndarray | None  # [n, levels] the model's raw grade logits (cross bundles)
    truncated: list[bool]  # whether the token limit cut the item's text


# Warm-up texts of different lengths, so the first real request does not pay for graph initialisation.
_WARMUP_QUERY = "red leather sofa"
_WARMUP_ITEMS = ["sofa", "Three-seat red leather sofa with solid oak legs | color: red | material: leather"]


class KindScoring(ABC):
    has_logits: bool = False  # whether the model outputs grade logits (/score return_logits)

    def __init__(self, manifest: BundleManifest, tokenizer: BundleTokenizer) -> None:
        self.manifest = manifest
        self.tokenizer = tokenizer

    @abstractmethod
    def warmup_inputs(self) -> list[Encoded]:
        """The model inputs of the warm-up batch (Scorer checks the model's output on them)."""

    @abstractmethod
    def inputs(self, query: str, texts: list[str]) -> list[Encoded]:
        """All model inputs of one request without the embedding cache (rendered query, item texts)."""

    @abstractmethod
    async def score(
        self, run: Run, query: str, items: list[Item], texts: list[str], deadline_ms: float
    ) -> Scored:
        """Scores for ``items`` (rendered as ``texts``) against the rendered ``query``."""


class CrossScoring(KindScoring):
    has_logits = True

    def warmup_inputs(self) -> list[Encoded]:
        return self.inputs(_WARMUP_QUERY, _WARMUP_ITEMS)

    def inputs(self, query: str, texts: list[str]) -> list[Encoded]:
        return self.tokenizer.encode_pairs([query] * len(texts), texts)

    async def score(
        self, run: Run, query: str, items: list[Item], texts: list[str], deadline_ms: float
    ) -> Scored:
        encoded: list[Encoded] = []

        def encode() -> list[Encoded]:
            encoded.extend(self.inputs(query, texts))
            return encoded

        logits = await run(len(texts), encode, deadline_ms)
        scores, probs = score_mapping.from_logits(self.manifest, logits)
        truncated = [text_cut(e, text, 1) for e, text in zip(encoded, texts, strict=True)]
        return Scored(scores, probs, logits, truncated)


class BiScoring(KindScoring):
    def __init__(
        self, manifest: BundleManifest, tokenizer: BundleTokenizer, cache: EmbeddingCache, metrics: Metrics
    ) -> None:
        super().__init__(manifest, tokenizer)
        self.cache = cache
        self._metrics = metrics
        self._version = f"{manifest.name}@{manifest.version}"

    def warmup_inputs(self) -> list[Encoded]:
        return self.inputs(_WARMUP_QUERY, _WARMUP_ITEMS)

    def inputs(self, query: str, texts: list[str]) -> list[Encoded]:
        return self.tokenizer.encode_queries([query]) + self.tokenizer.encode_items(texts)

    async def score(
        self, run: Run, query: str, items: list[Item], texts: list[str], deadline_ms: float
    ) -> Scored:
        keys = [cache_key(self._version, item.id, text) for item, text in zip(items, texts, strict=True)]
        cached = [self.cache.get(k) for k in keys]
        missing: dict[tuple, int] = {}  # key → position of its first occurrence (duplicates embedded once)
        for i, (key, hit) in enumerate(zip(keys, cached, strict=True)):
            if hit is None and key not in missing:
                missing[key] = i
        self._metrics.cache_hits.inc(len(items) - len(missing))
        self._metrics.cache_misses.inc(len(missing))
        to_embed = [texts[i] for i in missing.values()]
        encoded: list[Encoded] = []

        def encode() -> list[Encoded]:
            encoded.extend(self.inputs(query, to_embed))
            return encoded

        out = await run(1 + len(to_embed), encode, deadline_ms)
        fresh = {}
        for row, (key, text) in enumerate(zip(missing, to_embed, strict=True), start=1):
            # a copy: a view would pin the whole batch output
            fresh[key] = (out[row].copy(), text_cut(encoded[row], text, 0))
            self.cache.put(key, fresh[key])
        rows = [hit if hit is not None else fresh[key] for key, hit in zip(keys, cached, strict=True)]
        matrix = np.stack([embedding for embedding, _ in rows])
        # float64 so the same item scores identically whatever its row (float32 BLAS blocking varies)
        scores, probs = score_mapping.from_cosine(
            self.manifest, matrix.astype(np.float64) @ out[0].astype(np.float64)
        )
        return Scored(scores, probs, None, [cut for _, cut in rows])


_BY_KIND: dict[str, Callable[[BundleManifest, BundleTokenizer, int, Metrics], KindScoring]] = {
    "cross": lambda manifest, tokenizer, _cache_size, _metrics: CrossScoring(manifest, tokenizer),
    "bi": lambda manifest, tokenizer, cache_size, metrics: BiScoring(
        manifest, tokenizer, EmbeddingCache(cache_size), metrics
    ),
}


def scoring_for(
    manifest: BundleManifest, tokenizer: BundleTokenizer, embedding_cache_size: int, metrics: Metrics
) -> KindScoring:
    """The strategy for the bundle's kind; the scorer asks once, when it loads the bundle."""
    return _BY_KIND[manifest.kind](manifest, tokenizer, embedding_cache_size, metrics)
