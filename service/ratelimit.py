"""Per-key rate limit: a token bucket kept in Redis, updated atomically by one Lua script.

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request takes one token or
is refused with the seconds until one is available (sent as ``Retry-After``). The script reads the
clock with Redis ``TIME``, so every replica shares one bucket per key and one clock.
If Redis is unavailable the request is allowed (fail open: the limit protects the LLM, and the
concurrency limit and breaker still do); that is counted in ``relevance_redis_unavailable_total``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from service.redis_store import RedisGuard, RedisUnavailable

# KEYS[1] bucket hash; ARGV rate (tokens/s), burst, cost. Returns {allowed 0|1, retry_after_ms}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, retry_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds, as Retry-After wants; at least 1 when refused
    checked: bool = True  # False when Redis was unavailable and the request was let through


class TokenBucketLimiter:
    def __init__(self, guard: RedisGuard, *, rate_per_s: float, burst: int, scope: str = "explain") -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.guard = guard
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.scope = scope
        self._script = guard.client.register_script(TOKEN_BUCKET_LUA)

    async def acquire(self, key_id: str, cost: int = 1) -> Decision:
        bucket = self.guard.key("ratelimit", self.scope, key_id)

        async def take(r: Redis) -> list[int]:
            return await self._script(keys=[bucket], args=[self.rate_per_s, self.burst, cost], client=r)

        try:
            allowed, retry_ms = await self.guard.run("rate_limit", take)
        except RedisUnavailable:
            return Decision(allowed=True, checked=False)
        if int(allowed) == 1:
            return Decision(allowed=True)
        return Decision(allowed=False, retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)))
