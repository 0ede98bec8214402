"""API keys, the Redis token bucket and the write-behind item store, against real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.auth import ApiKeyAuth, ApiKeyConfigError, key_id, load_api_keys
from service.errors import ApiError, error_response
from service.explain.metrics import ExplainMetrics
from service.explain.settings import ExplainSettings
from service.ratelimit import TokenBucketLimiter
from service.redis_store import ItemStore, RedisGuard, RedisUnavailable, connect
from service.settings import Settings, describe_settings_error

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def app_with_private_route(auth: ApiKeyAuth) -> TestClient:
    app = FastAPI()
    app.add_exception_handler(ApiError, lambda request, exc: error_response(exc))

    @app.get("/private")
    async def private(who: str = Depends(auth)) -> dict[str, str]:
        return {"who": who}

    return TestClient(app)


@pytest.fixture
async def guard() -> AsyncIterator[RedisGuard]:
    client = connect(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"these tests need Redis on 127.0.0.1:6379 (redis-server --port 6379 --save ''): {exc}")
    g = RedisGuard(client, prefix=f"test-explain-{uuid.uuid4().hex[:10]}:")
    yield g
    await g.delete_prefix()
    await client.aclose()


def test_api_keys_from_env_string_and_file(tmp_path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# ops keys\nfile-key-0001\n\n", encoding="utf-8")
    assert load_api_keys(" env-key-0001 ,env-key-0002,", secret) == {
        "env-key-0001",
        "env-key-0002",
        "file-key-0001",
    }
    with pytest.raises(ApiKeyConfigError, match="RELEVANCE_API_KEYS_FILE: cannot read .*missing"):
        load_api_keys("", tmp_path / "missing")
    with pytest.raises(ApiKeyConfigError, match="at least 8 characters"):
        load_api_keys("short")


def test_settings_check_names_the_bad_variable_or_file(monkeypatch, tmp_path) -> None:
    def check() -> ExplainSettings:  # as `relevance serve` checks them before starting
        explain = Settings().explain
        load_api_keys(explain.api_keys, explain.api_keys_file)
        return explain

    monkeypatch.setenv("RELEVANCE_EXPLAIN_TIMEOUT_S", "soon")
    with pytest.raises(ValidationError, match="explain_timeout_s") as raised:
        check()
    assert describe_settings_error(raised.value).startswith("RELEVANCE_EXPLAIN_TIMEOUT_S='soon': ")
    monkeypatch.delenv("RELEVANCE_EXPLAIN_TIMEOUT_S")
    monkeypatch.setenv("RELEVANCE_API_KEYS_FILE", str(tmp_path / "absent"))
    with pytest.raises(ApiKeyConfigError, match="RELEVANCE_API_KEYS_FILE: cannot read .*absent"):
        check()
    (tmp_path / "absent").write_text("file-key-0001\n", encoding="utf-8")
    monkeypatch.setenv("RELEVANCE_EXPLAIN_BREAKER_FAILURES", "7")
    monkeypatch.setenv("RELEVANCE_REDIS_URL", "redis://127.0.0.1:6390/3")
    explain = check()
    assert explain.explain_breaker_failures == 7 and explain.redis_url == "redis://127.0.0.1:6390/3"
    # An explain= argument replaces the variables, as any constructor argument does.
    assert Settings(explain=ExplainSettings(api_keys="")).explain.explain_breaker_failures == 5


def test_api_key_dependency_accepts_both_headers_and_refuses_others() -> None:
    client = app_with_private_route(ApiKeyAuth({"good-key-0001"}))
    assert client.get("/private", headers={"X-API-Key": "good-key-0001"}).json() == {
        "who": key_id("good-key-0001")
    }
    assert client.get("/private", headers={"Authorization": "Bearer good-key-0001"}).status_code == 200
    missing = client.get("/private")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert "missing API key" in missing.json()["error"]["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.get("/private", headers={"X-API-Key": "good-key-0002"})
    assert (wrong.status_code, wrong.json()["error"]["message"]) == (401, "invalid API key")


def test_required_auth_without_configured_keys_refuses_and_says_how_to_configure() -> None:
    response = app_with_private_route(ApiKeyAuth([])).get(
        "/private", headers={"X-API-Key": "anything-at-all"}
    )
    assert response.status_code == 401
    assert "RELEVANCE_API_KEYS" in response.json()["error"]["message"]


async def test_token_bucket_allows_burst_then_refuses_with_retry_after(guard: RedisGuard) -> None:
    limiter = TokenBucketLimiter(guard, rate_per_s=0.5, burst=3)
    decisions = [await limiter.acquire("key-a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after_s == 2  # one token per 2 s
    assert (await limiter.acquire("key-b")).allowed  # buckets are per key


async def test_token_bucket_refills_over_time(guard: RedisGuard) -> None:
    limiter = TokenBucketLimiter(guard, rate_per_s=20, burst=1)
    assert (await limiter.acquire("k")).allowed
    assert not (await limiter.acquire("k")).allowed
    await asyncio.sleep(0.1)  # 2 tokens' worth at 20/s, capped at the burst of 1
    assert (await limiter.acquire("k")).allowed


async def test_token_bucket_is_atomic_under_concurrency(guard: RedisGuard) -> None:
    limiter = TokenBucketLimiter(guard, rate_per_s=0.01, burst=5)
    decisions = await asyncio.gather(*(limiter.acquire("k") for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 5


async def test_rate_limit_fails_open_when_redis_is_down() -> None:
    client = connect("redis://127.0.0.1:1/0")  # nothing listens on port 1
    down = RedisGuard(client, prefix="unused:")
    decision = await TokenBucketLimiter(down, rate_per_s=1, burst=1).acquire("k")
    assert decision.allowed and not decision.checked
    assert down.metrics.redis_unavailable.labels("rate_limit")._value.get() == 1
    # Marked down: the next call does not even try (no connect timeout per request), and is counted.
    assert (await TokenBucketLimiter(down, rate_per_s=1, burst=1).acquire("k")).allowed
    assert down.metrics.redis_unavailable.labels("rate_limit")._value.get() == 2
    await client.aclose()


async def test_item_store_writes_behind_with_ttl_and_reads_back(guard: RedisGuard) -> None:
    store = ItemStore(guard, ttl_s=60, queue_size=100, batch_size=8)
    store.start()
    items = [{"id": f"item-{i}", "title": f"Title {i}", "attributes": {"color": "red"}} for i in range(20)]
    assert store.offer(items) == 20
    await store.flush()
    assert guard.metrics.item_store_writes._value.get() == 20
    assert await store.get("item-7") == items[7]
    assert await store.get("never-seen") is None
    ttl = await guard.client.ttl(guard.key("item", "anonymous", "item-7"))
    assert 0 < ttl <= 60
    await store.stop()


async def test_item_store_keeps_one_copy_per_writer_and_bounds_each_item(guard: RedisGuard) -> None:
    store = ItemStore(guard, max_fields=4, max_bytes=400)
    store.start()
    store.offer([{"id": "sofa-1", "title": "red sofa"}], writer="a")
    store.offer([{"id": "sofa-1", "title": "POISONED"}], writer="b")  # same id, another caller
    store.offer(
        [
            {"id": "wide", "title": "t", "attributes": {f"k{i}": i for i in range(5)}},  # 5 fields > 4
            {"id": "long", "title": "x" * 500},  # > 400 bytes
            {"id": "fits", "title": "t", "brand": "b", "attributes": {"k1": 1, "k2": 2, "k3": 3}},
        ],
        writer="a",
    )
    await store.flush()
    assert await store.get("sofa-1", "a") == {"id": "sofa-1", "title": "red sofa"}
    assert (await store.find("sofa-1", ["a", "b", "c"])).keys() == {"a", "b"}
    assert await store.get("wide", "a") is None and await store.get("long", "a") is None
    assert (await store.get("fits", "a"))["brand"] == "b"
    assert guard.metrics.item_store_dropped.labels("too_large")._value.get() == 2
    await store.stop()


async def test_item_store_counts_drops_when_its_queue_is_full_and_items_without_id(guard: RedisGuard) -> None:
    store = ItemStore(guard, queue_size=3)  # not started yet: nothing drains the queue
    assert store.offer([{"id": "a"}, {"id": "b"}]) == 2
    assert store.offer([{"id": "c"}, {"id": "d"}]) == 0  # 2 + 2 > 3: the request's items are dropped
    assert guard.metrics.item_store_dropped.labels("queue_full")._value.get() == 2
    assert store.offer([{"title": "no id"}]) == 1
    store.start()
    await store.flush()
    assert guard.metrics.item_store_dropped.labels("no_id")._value.get() == 1
    assert guard.metrics.item_store_writes._value.get() == 2
    assert guard.metrics.item_store_queue._value.get() == 0
    assert store.offer([{"id": "c"}, {"id": "d"}]) == 2  # room again once written
    await store.stop()


async def test_item_store_write_failures_are_counted_not_raised_when_redis_is_down() -> None:
    client = connect("redis://127.0.0.1:1/0")
    store = ItemStore(RedisGuard(client, prefix="unused:", metrics=ExplainMetrics()))
    store.start()
    store.offer([{"id": "a"}, {"id": "b"}])
    await store.flush()
    assert store.metrics.item_store_failures._value.get() == 2
    with pytest.raises(RedisUnavailable):
        await store.get("a")
    await store.stop()
    await client.aclose()


async def test_without_api_keys_explain_is_off_no_teacher_is_loaded_and_no_items_are_stored() -> None:
    from service.explain.components import ExplainComponents

    loads: list[str] = []
    parts = ExplainComponents(ExplainSettings(api_keys=""), teacher_factory=lambda: loads.append("x"))
    await parts.start()
    parts.remember_items([{"id": "a", "title": "t"}])  # the /score hook is a no-op
    assert not parts.enabled and parts.item_store is None
    await parts.stop()
    assert loads == []
