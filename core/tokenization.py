"""Tokenisation shared by training and serving, driven by a bundle's tokenizer.json and limits.

Students are trained on exactly these encodings (distill/ imports this module), so the ids the
ONNX model sees online are the ids it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenised input (unpadded)."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]  # 0 = query / single text, 1 = item, None = special token

    def __len__(self) -> int:
        return len(self.ids)


class BundleTokenizer:
    """Encodes (query, item) pairs for cross bundles and single texts for bi bundles."""

    def __init__(
        self, tokenizer_file: str | Path, *, max_pair_tokens: int, max_query_tokens: int, max_item_tokens: int
    ) -> None:
        self.max_query_tokens = max_query_tokens
        self.max_item_tokens = max_item_tokens
        self._pair = Tokenizer.from_file(str(tokenizer_file))
        self._pair.no_padding()
        self._pair.enable_truncation(max_length=max_pair_tokens, strategy="longest_first")
        self._single = {}
        for max_len in {max_query_tokens, max_item_tokens}:
            tok = Tokenizer.from_file(str(tokenizer_file))
            tok.no_padding()
            tok.enable_truncation(max_length=max_len)
            self._single[max_len] = tok
        pad_id = self._pair.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def encode_pairs(self, queries: list[str], items: list[str]) -> list[Encoded]:
        return [_wrap(e) for e in self._pair.encode_batch(list(zip(queries, items, strict=True)))]

    def encode_queries(self, texts: list[str]) -> list[Encoded]:
        return [_wrap(e) for e in self._single[self.max_query_tokens].encode_batch(texts)]

    def encode_items(self, texts: list[str]) -> list[Encoded]:
        return [_wrap(e) for e in self._single[self.max_item_tokens].encode_batch(texts)]


def text_cut(encoded: Encoded, text: str, sequence: int) -> bool:
    """Whether the token limit cut ``text`` (sequence ``sequence`` of ``encoded``: 1 for a pair's item,
    0 for a single text): its last kept token ends before the text's last visible character."""
    ends = [
        end for (_, end), seq in zip(encoded.offsets, encoded.sequence_ids, strict=True) if seq == sequence
    ]
    visible = len(text.rstrip())
    return (max(ends) if ends else 0) < visible


def _wrap(encoding) -> Encoded:
    return Encoded(
        ids=list(encoding.ids),
        type_ids=list(encoding.type_ids),
        offsets=list(encoding.offsets),
        sequence_ids=list(encoding.sequence_ids),
    )


def pad_batch(encoded: list[Encoded], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad to the longest input of the batch; int64 arrays named as the ONNX inputs."""
    width = max(len(e) for e in encoded)
    ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    types = np.zeros((len(encoded), width), dtype=np.int64)
    for row, e in enumerate(encoded):
        n = len(e)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        types[row, :n] = e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
