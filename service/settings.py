"""Service settings, read from environment variables prefixed ``RELEVANCE_`` (documented in README.md).

One tree, read at once by ``Settings()``: the scoring service's settings, and ``Settings.explain``
(service/explain/settings.py) for /explain, Redis and API keys. Every setting keeps its flat variable,
``RELEVANCE_REDIS_URL`` as much as ``RELEVANCE_MAX_ITEMS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.bundle import MANIFEST_FILE, BundleError, read_manifest
from service.explain.settings import ExplainSettings
from service.schemas import Limits

# The shortest deadline a request may ask for. Below it, the fixed costs outside the model (parsing, the
# hops to the tokeniser and inference threads, the event loop's latency, the response) are a large and
# jittery part of the budget, and no admission estimate can keep it: with a 5 ms deadline, 12 of 300
# one-item requests to an idle tiny model still missed it.
MIN_DEADLINE_MS = 10.0

STUDENT_BUNDLE = Path("models/student")
DEFAULT_BUNDLE = Path("models/minilm-zero-shot-bi")


def default_bundle_path() -> Path:
    """``models/student`` when it holds a valid bundle (a trained student), else the zero-shot default."""
    if (STUDENT_BUNDLE / MANIFEST_FILE).is_file():
        try:
            read_manifest(STUDENT_BUNDLE)
            return STUDENT_BUNDLE
        except BundleError:
            pass
    return DEFAULT_BUNDLE


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


EXPLAIN = "explain"  # the field of Settings that holds ExplainSettings


class _FlatExplainVariables(PydanticBaseSettingsSource):
    """``Settings.explain`` from the environment the env source read, one flat variable per field
    (``RELEVANCE_REDIS_URL``, not a nested ``RELEVANCE_EXPLAIN__REDIS_URL``)."""

    def __init__(self, env: EnvSettingsSource) -> None:
        super().__init__(env.settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # not used: __call__ reads the whole subtree

    def __call__(self) -> dict[str, Any]:
        env = self._env
        found = {}
        for name in ExplainSettings.model_fields:
            variable = env.env_prefix + name
            value = env.env_vars.get(variable if env.case_sensitive else variable.lower())
            if value is not None:
                found[name] = value
        return {EXPLAIN: found} if found else {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELEVANCE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    bundle: Path = Field(default_factory=default_bundle_path)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Request limits: user input beyond these gets a 413/422 naming the limit, never a 500.
    max_items: int = Field(default=500, ge=1)
    max_field_chars: int = Field(default=2000, ge=1)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)

    # Dynamic batching (service/batcher.py). A pair is one model input row: a (query, item) pair for
    # cross bundles, one text (the query or an item) for bi bundles.
    batch_max_pairs: int = Field(default=256, ge=1)
    batch_max_tokens: int = Field(default=16384, ge=16)  # padded tokens = rows x longest row
    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    # A batch holds at most this much work at the measured speed: how long a request with an earlier
    # deadline can wait for the model to finish the batch ahead of it. 0: no limit.
    batch_max_ms: float = Field(default=250.0, ge=0)
    queue_capacity_pairs: int = Field(default=4096, ge=1)  # admitted and not yet finished
    request_deadline_ms: float = Field(
        default=5000.0, ge=MIN_DEADLINE_MS
    )  # when the request sends no X-Deadline-Ms
    max_request_deadline_ms: float = Field(
        default=60000.0, ge=MIN_DEADLINE_MS
    )  # the largest X-Deadline-Ms accepted
    tokenizer_threads: int = Field(default=1, ge=1)

    # Slow clients: a connection must send a request's complete headers within header_timeout_s of
    # opening (or of the request's first byte), and its body within body_timeout_s → else 408 and closed.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)

    # onnxruntime
    provider: Literal["cpu", "cuda", "auto"] = "auto"
    provider_strict: bool = False  # refuse to start when the requested provider is missing
    ort_intra_op_threads: int = Field(default_factory=_cpu_count, ge=1)
    # Idle onnxruntime threads spin for work by default; on CPUs shared with other processes (or under a
    # container CPU quota) that spinning steals the cores it waits for: set false there (docs/BENCHMARKS.md).
    ort_allow_spinning: bool = True
    # CPU: after this many idle seconds the memory that batches left in onnxruntime's arena and the malloc
    # heap is returned to the OS (service/onnx_model.py; 0: never, the process keeps its peak).
    ort_release_idle_s: float = Field(default=2.0, ge=0)

    embedding_cache_size: int = Field(default=20000, ge=0)  # bi bundles; 0 disables the cache

    # Comma-separated keys (service/auth.py); when set, POST /score needs `Authorization: Bearer KEY` or
    # `X-API-Key: KEY`.
    score_api_keys: str = ""

    # SIGTERM: readiness false and new requests refused at once; exit when in-flight requests finish or
    # after this many seconds. Also how long a hot reload lets the old bundle finish its requests.
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    # CORS is off unless origins are listed (comma-separated, e.g. "https://search-admin.example.com").
    cors_origins: str = ""

    # /explain, Redis, API keys (RELEVANCE_REDIS_URL, RELEVANCE_API_KEYS, RELEVANCE_EXPLAIN_*...).
    explain: ExplainSettings = Field(default_factory=ExplainSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # After the constructor's arguments: an ``explain=`` argument wins over the variables.
        assert isinstance(env_settings, EnvSettingsSource)
        return (
            init_settings,
            _FlatExplainVariables(env_settings),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def limits(self) -> Limits:
        return Limits(self.max_items, self.max_field_chars, self.max_body_bytes)

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> Settings:
        # A request is admitted whole, so the queue must hold the largest one (bi: items + the query).
        if self.queue_capacity_pairs < self.max_items + 1:
            raise ValueError(
                f"RELEVANCE_QUEUE_CAPACITY_PAIRS ({self.queue_capacity_pairs}) must be at least "
                f"RELEVANCE_MAX_ITEMS + 1 ({self.max_items + 1})"
            )
        return self


def describe_settings_error(exc: ValidationError) -> str:
    """A settings error as the user set it: ``RELEVANCE_MAX_ITEMS='abc': Input should be a valid integer``."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc[:1] == (EXPLAIN,) and len(loc) > 1:
            loc = loc[1:]  # Settings.explain's fields have flat variables too
        if loc:
            lines.append(f"RELEVANCE_{str(loc[0]).upper()}={error.get('input')!r}: {message}")
        else:  # a rule across several settings; its message names them
            lines.append(message)
    return "; ".join(lines)
