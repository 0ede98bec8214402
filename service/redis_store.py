"""Redis access for the service: a guard that degrades cleanly, and the item store.

``RedisGuard`` runs every Redis operation. When Redis is unreachable it counts the failure
(``relevance_redis_unavailable_total``), logs once per outage, and for ``retry_after_s`` skips Redis
entirely so that requests do not each pay a connect timeout. Callers get ``RedisUnavailable`` and
carry on without Redis (no cache, no rate limit, no item-store write).

``ItemStore`` keeps the items seen by ``POST /score`` by writer and id, so ``GET /explain?item_id=``
can find their fields. The writer is the /score caller's API key id (``anonymous`` when /score is
open), so one caller cannot overwrite another's items; what one item may store is bounded (fields and
bytes). Writes are write-behind and off the hot path: ``offer()`` only puts items on a bounded
in-process queue (never blocks; drops are counted when it is full) and a background task drains it
into Redis with pipelined ``SET key value EX ttl``. The trust model is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # the asyncio one: redis-py warns when given the sync class
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.auth import ANONYMOUS
from service.explain.metrics import ExplainMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis could not be used for this operation (down, unreachable or erroring)."""


def connect(url: str, *, connect_timeout_s: float = 1.0, op_timeout_s: float = 1.0) -> Redis:
    """An asyncio Redis client with short timeouts and no retries: the guard handles outages."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=op_timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


class RedisGuard:
    def __init__(
        self,
        client: Redis,
        prefix: str = "relevance:",
        *,
        metrics: ExplainMetrics | None = None,
        retry_after_s: float = 2.0,
    ) -> None:
        self.client = client
        self.metrics = metrics or ExplainMetrics()
        self.prefix = prefix
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down_logged = False

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def run(self, operation: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``fn(client)``; raise RedisUnavailable (counted, logged once per outage) if Redis fails
        or is known to be down."""
        if not self.available:
            self.metrics.redis_unavailable.labels(operation).inc()
            raise RedisUnavailable(f"redis marked down; {operation} skipped")
        try:
            result = await fn(self.client)
        except (RedisError, OSError) as exc:
            self.metrics.redis_unavailable.labels(operation).inc()
            self._down_until = time.monotonic() + self.retry_after_s
            if not self._down_logged:
                log.warning("redis unavailable (%s during %s); continuing without it", exc, operation)
                self._down_logged = True
            raise RedisUnavailable(f"{operation}: {exc}") from exc
        if self._down_logged:
            log.info("redis available again")
            self._down_logged = False
        return result

    async def delete_prefix(self) -> int:
        """Delete every key under this guard's prefix (tests and admin cleanup)."""
        deleted = 0
        async for key in self.client.scan_iter(match=self.prefix + "*", count=500):
            deleted += await self.client.delete(key)
        return deleted


ANONYMOUS_WRITER = ANONYMOUS  # the writer of items from a /score that needs no key


class ItemStore:
    """Items by writer and id in Redis, written behind: ``offer()`` costs the request O(1) (one queue
    entry per request, no serialisation); the writer task does the rest in pipelined chunks."""

    def __init__(
        self,
        guard: RedisGuard,
        *,
        ttl_s: int = 86_400,
        queue_size: int = 10_000,
        batch_size: int = 256,
        max_fields: int = 64,
        max_bytes: int = 16_384,
    ) -> None:
        self.guard = guard
        self.metrics = guard.metrics
        self.ttl_s = ttl_s
        self.queue_size = queue_size  # in items
        self.batch_size = batch_size
        self.max_fields = max_fields  # extra fields + attributes of one item
        self.max_bytes = max_bytes  # of one item's JSON
        self._queue: asyncio.Queue[tuple[str, Sequence[Mapping[str, Any] | BaseModel]]] = asyncio.Queue()
        self._pending = 0  # items queued and not yet written: the bound is on this, not on queue entries
        self._task: asyncio.Task[None] | None = None

    def _key(self, writer: str, item_id: str) -> str:
        return self.guard.key("item", writer, item_id)

    def offer(self, items: Sequence[Mapping[str, Any] | BaseModel], writer: str = ANONYMOUS_WRITER) -> int:
        """Queue one request's items (mappings or pydantic models with an ``id``; not copied, so the
        caller must not mutate them) under ``writer`` unless that would exceed ``queue_size``; never
        blocks. Returns how many were queued (all or none)."""
        n = len(items)
        if self._pending + n > self.queue_size:
            self.metrics.item_store_dropped.labels("queue_full").inc(n)
            return 0
        self._pending += n
        self._queue.put_nowait((writer, items))
        self.metrics.item_store_queue.set(self._pending)
        return n

    async def get(self, item_id: str, writer: str = ANONYMOUS_WRITER) -> dict[str, Any] | None:
        """The item ``writer`` stored, or None if unknown. Raises RedisUnavailable."""
        return (await self.find(item_id, [writer])).get(writer)

    async def find(self, item_id: str, writers: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The item as each of ``writers`` stored it (writers that did not are left out). Raises
        RedisUnavailable."""
        keys = [self._key(w, item_id) for w in writers]
        raws = await self.guard.run("item_get", lambda r: r.mget(keys))
        return {w: orjson.loads(raw) for w, raw in zip(writers, raws, strict=True) if raw is not None}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain_forever(), name="item-store-writer")

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Flush what is queued (within the timeout), then stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every queued item has been written (or has failed)."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    async def _drain_forever(self) -> None:
        while True:
            entries = [await self._queue.get()]
            size = len(entries[0][1])
            while size < self.batch_size and not self._queue.empty():
                entries.append(self._queue.get_nowait())
                size += len(entries[-1][1])
            try:
                await self._write([(writer, item) for writer, batch in entries for item in batch])
            finally:
                for _ in entries:
                    self._queue.task_done()
                self._pending -= size
                self.metrics.item_store_queue.set(self._pending)

    def _encode(self, item: Mapping[str, Any] | BaseModel) -> bytes | None:
        """The item's JSON, or None (counted) when it is over the per-item bounds."""
        fields = item.model_dump() if isinstance(item, BaseModel) else dict(item)
        attributes = fields.get("attributes")
        n_fields = (
            len(fields) - 3 + (len(attributes) if isinstance(attributes, Mapping) else 0)
        )  # id, title, attrs
        raw = orjson.dumps(fields)
        if n_fields > self.max_fields or len(raw) > self.max_bytes:
            self.metrics.item_store_dropped.labels("too_large").inc()
            return None
        return raw

    async def _write(self, items: list[tuple[str, Mapping[str, Any] | BaseModel]]) -> None:
        latest: dict[str, bytes] = {}  # the same key twice: the later version wins
        for writer, item in items:
            item_id = item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)
            if item_id in (None, ""):
                self.metrics.item_store_dropped.labels("no_id").inc()
                continue
            raw = self._encode(item)
            if raw is not None:
                latest[self._key(writer, str(item_id))] = raw
        keys = list(latest)
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start : start + self.batch_size]

            async def pipelined(r: Redis, chunk: list[str] = chunk) -> None:
                async with r.pipeline(transaction=False) as pipe:
                    for key in chunk:
                        pipe.set(key, latest[key], ex=self.ttl_s)
                    await pipe.execute()

            try:
                await self.guard.run("item_store_write", pipelined)
            except RedisUnavailable:
                # Best effort: the next /score that sees these items writes them again.
                self.metrics.item_store_failures.inc(len(chunk))
                continue
            self.metrics.item_store_writes.inc(len(chunk))
