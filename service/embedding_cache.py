"""In-process LRU of item embeddings for bi bundles (item texts repeat across queries; queries rarely do)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

CacheKey = tuple[str, str, bytes]
# An item's embedding, and whether its text was cut at the token limit (reported per item by /score).
CachedItem = tuple[np.ndarray, bool]


def cache_key(bundle_version: str, item_id: str, text: str) -> CacheKey:
    """Keyed by the rendered text's hash too, so an item whose fields change is re-embedded."""
    return bundle_version, item_id, hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Least-recently-used map; used from the event loop only, so it needs no lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[CacheKey, CachedItem] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: CacheKey) -> CachedItem | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: CachedItem) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)
