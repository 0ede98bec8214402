"""Settings of the /explain slow path, Redis, API keys and rate limits: ``Settings.explain``.

Each is read from its own flat ``RELEVANCE_<FIELD>`` variable (RELEVANCE_REDIS_URL,
RELEVANCE_EXPLAIN_TEACHER...) by service/settings.py, with the rest of the service's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExplainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Redis (explanation cache, item store, rate limits).
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="relevance:", description="prefix of every key the service writes")
    redis_retry_after_s: float = Field(
        default=2.0, gt=0, description="after a Redis failure, skip Redis this long"
    )

    # API keys for /explain and admin routes (/score keys: RELEVANCE_SCORE_API_KEYS in service.settings).
    api_keys: str = Field(default="", description="comma-separated keys")
    api_keys_file: Path | None = Field(default=None, description="secret file, one key per line")

    # The teacher behind /explain (a teacher spec: teacher/specs.py).
    explain_teacher: str = "llamacpp"
    explain_mode: Literal["cot", "score"] = "cot"
    explain_timeout_s: float = Field(default=60.0, gt=0, description="per request: slot wait + LLM call")
    explain_llm_concurrency: int = Field(default=1, ge=1, description="LLM calls at once (per replica)")
    explain_cache_ttl_s: int = Field(default=7 * 86_400, ge=1)
    explain_breaker_failures: int = Field(
        default=5, ge=1, description="consecutive failures that open the breaker"
    )
    explain_breaker_reset_s: float = Field(default=30.0, gt=0, description="open → half-open cool-down")
    explain_rate_per_s: float = Field(default=1.0, gt=0, description="per-key token refill rate")
    explain_rate_burst: int = Field(default=10, ge=1, description="per-key bucket size")

    # Write-behind item store fed by POST /score.
    item_store_enabled: bool = True
    item_store_ttl_s: int = Field(default=86_400, ge=1)
    item_store_queue_size: int = Field(default=10_000, ge=1)
    item_store_batch_size: int = Field(default=256, ge=1)
    # What one item may store (extra fields + attributes, and bytes of JSON); larger items are not stored.
    item_store_max_fields: int = Field(default=64, ge=0)
    item_store_max_bytes: int = Field(default=16_384, ge=256)
    # Items from /score callers without a key (RELEVANCE_SCORE_API_KEYS unset) share one namespace, so any
    # of them can replace another's item: false stores none of them (GET /explain by id then only finds
    # items of keyed callers; POST /explain with the item always works).
    item_store_unkeyed_writes: bool = True
