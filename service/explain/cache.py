"""The explanation cache: CoT records in Redis, keyed by what determines them.

Key = hash of (teacher id, prompt version, query, item content). A new teacher or prompt version
therefore never serves an old explanation, and an item whose fields changed gets a fresh one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from core.cot import CoTRecord
from service.redis_store import RedisGuard, RedisUnavailable


def explanation_key(teacher_id: str, prompt_version: str, query: str, item: Mapping[str, Any]) -> str:
    item_hash = hashlib.sha256(orjson.dumps(dict(item), option=orjson.OPT_SORT_KEYS)).hexdigest()
    blob = orjson.dumps([teacher_id, prompt_version, query, item_hash])
    return hashlib.sha256(blob).hexdigest()[:32]


class ExplanationCache:
    def __init__(self, guard: RedisGuard, ttl_s: int) -> None:
        self.guard = guard
        self.ttl_s = ttl_s

    def _key(self, key: str) -> str:
        return self.guard.key("explain", key)

    async def get(self, key: str) -> CoTRecord | None:
        """The cached record, or None on a miss. Raises RedisUnavailable."""
        raw = await self.guard.run("explain_cache_get", lambda r: r.get(self._key(key)))
        if raw is None:
            return None
        try:
            return CoTRecord.model_validate_json(raw)
        except ValidationError:
            return None  # written by an incompatible schema version: treat as a miss, it is overwritten

    async def set(self, key: str, record: CoTRecord) -> bool:
        try:
            await self.guard.run(
                "explain_cache_set", lambda r: r.set(self._key(key), record.model_dump_json(), ex=self.ttl_s)
            )
        except RedisUnavailable:
            return False
        return True
