"""The storage contract: one suite, run against every provider (in-process memory and Redis alike).

What a feature may rely on from its provider: values come back exactly as stored, TTLs expire them,
``clear(prefix)`` removes exactly the keys under ``prefix``, and a rate-limit check is atomic — however
many run at once, no more than the quota are admitted. The memory provider runs on a fake clock; Redis
runs on its own clock, so its time-dependent checks use short TTLs and look at ``PTTL`` directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import FakeClock
from premier import RateLimitExceeded, cache, rate_limit
from premier.asgi.http_cache import CachedResponse
from premier.features.ratelimit import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket
from premier.providers import AsyncInMemoryCache, CacheProvider, LocalProvider


class Store:
    """A provider under test, the key prefix it must keep to, and how its time passes."""

    def __init__(self, kind: str, provider: Any, prefix: str, clock: FakeClock) -> None:
        self.kind = kind
        self.provider = provider
        self.prefix = prefix
        self.clock = clock

    @property
    def is_redis(self) -> bool:
        return self.kind == "redis"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def pttl(self, key: str) -> int:
        """Redis's remaining time to live of ``key`` in ms (-1: none, -2: no such key)."""
        return int(await self.provider.client.pttl(key))

    async def exists(self, key: str) -> bool:
        return bool(await self.provider.client.exists(key))

    async def start_of_window(self, duration: float) -> None:
        """On Redis, wait for the start of the next fixed window of ``duration`` (by Redis's clock), so
        a short window does not end in the middle of a test."""
        if self.is_redis:
            seconds, micros = await self.provider.client.time()
            now = seconds + micros / 1e6
            await asyncio.sleep(duration - now % duration + 0.005)

    async def outlive(self, key: str, seconds: float) -> None:
        """Let ``seconds`` pass for ``key``: the fake clock moves at once; on Redis, wait (at most 1 s)
        until the key is gone."""
        if not self.is_redis:
            self.clock.advance(seconds)
            return
        deadline = time.monotonic() + 1.0
        while await self.exists(key):
            assert time.monotonic() < deadline, f"{key} outlived its {seconds} s"
            await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    if request.param == "memory":
        provider: Any = AsyncInMemoryCache(clock=clock)
        prefix = "premier-test-memory"
    else:
        from premier.providers.redis import AsyncRedisCache

        # a generous timeout: a busy machine must not look like an outage (test_redis_outage.py)
        provider = AsyncRedisCache.from_url(request.getfixturevalue("redis_url"), timeout=10)
        prefix = request.getfixturevalue("redis_prefix")
    try:
        yield Store(request.param, provider, prefix, clock)
    finally:
        await provider.close()


ALGORITHMS = ["fixed_window", "sliding_window", "token_bucket", "leaky_bucket"]
# A window long enough that no fixed-window edge (at multiples of it since the epoch) falls in a test.
LONG = 1_000_000


def algorithm(name: str, quota: int, duration: float) -> Any:
    """``name`` admitting ``quota`` calls at once: the leaky bucket queues ``quota - 1`` behind the first."""
    if name == "leaky_bucket":
        return LeakyBucket(quota, duration, quota - 1)
    return {"fixed_window": FixedWindow, "sliding_window": SlidingWindow, "token_bucket": TokenBucket}[name](quota, duration)


def test_both_providers_implement_the_protocol(store: Store) -> None:
    assert isinstance(store.provider, CacheProvider)
    # Only memory answers without awaiting; features must not take Redis for a local provider.
    assert isinstance(store.provider, LocalProvider) is (store.kind == "memory")


# -- values ------------------------------------------------------------------------------------------
async def test_a_missing_key_is_none(store: Store) -> None:
    assert await store.provider.get(store.key("never-set")) is None


VALUES = {
    "bytes": b"\x00\xff\r\n binary \x80",
    "empty-bytes": b"",
    "str": "h\u00e9llo w\u00f6rld \u2603",
    "boxed-none": (None,),  # how the cache decorator stores a None result
    "dict": {"a": [1, 2.5, None, True], "b": b"\x01", "c": {"nested": ("t", 1)}},
    "int": 0,
    "large-bytes": bytes(range(256)) * 4096,  # 1 MiB
}


@pytest.mark.parametrize("name", list(VALUES))
async def test_values_round_trip_faithfully(store: Store, name: str) -> None:
    key = store.key("value", name)
    await store.provider.set(key, VALUES[name])
    found = await store.provider.get(key)
    assert found == VALUES[name]
    assert type(found) is type(VALUES[name])


async def test_an_http_cache_entry_round_trips_with_headers_and_body(store: Store) -> None:
    entry = CachedResponse(
        200,
        [(b"content-type", b"application/octet-stream"), (b"etag", b'W/"v1"'), (b"x-raw", b"\xff\x00")],
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        1_000_000.0,
        1_000_060.5,
        b'W/"v1"',
        (b"accept-encoding",),
        True,
    )
    key = store.key("http", "GET:/img?x=1\x00gzip")  # variant keys hold NUL bytes
    await store.provider.set(key, entry, ttl=60)
    found = await store.provider.get(key)
    assert isinstance(found, CachedResponse)
    assert {name: getattr(found, name) for name in CachedResponse.__slots__} == {name: getattr(entry, name) for name in CachedResponse.__slots__}


async def test_set_replaces_a_value(store: Store) -> None:
    key = store.key("replaced")
    await store.provider.set(key, b"one")
    await store.provider.set(key, "two")
    assert await store.provider.get(key) == "two"


async def test_values_expire_after_their_ttl(store: Store) -> None:
    key = store.key("short")
    ttl = 0.05
    await store.provider.set(key, b"soon gone", ttl=ttl)
    assert await store.provider.get(key) == b"soon gone"
    if store.is_redis:
        assert 0 < await store.pttl(key) <= ttl * 1000
    await store.outlive(key, ttl)
    assert await store.provider.get(key) is None


async def test_values_without_ttl_do_not_expire_and_a_new_set_replaces_the_ttl(store: Store) -> None:
    key = store.key("kept")
    await store.provider.set(key, b"first", ttl=0.05)
    await store.provider.set(key, b"kept")  # no TTL now
    if store.is_redis:
        assert await store.pttl(key) == -1
        await asyncio.sleep(0.1)
    else:
        store.clock.advance(10 * 365 * 86400)
    assert await store.provider.get(key) == b"kept"


async def test_delete_removes_a_key_and_ignores_a_missing_one(store: Store) -> None:
    key, other = store.key("deleted"), store.key("kept")
    await store.provider.set(key, b"x")
    await store.provider.set(other, b"y")
    await store.provider.delete(key)
    await store.provider.delete(store.key("never-set"))
    assert await store.provider.get(key) is None
    assert await store.provider.get(other) == b"y"


async def test_clear_removes_only_the_keys_under_its_prefix_glob_characters_included(store: Store) -> None:
    glob_prefix = store.key("g*[ab]?\\:")  # as a SCAN pattern, unescaped, this would match the decoys
    cleared = [glob_prefix + "1", glob_prefix + "2", glob_prefix]
    decoys = [store.key("gZZa!:1"), store.key("gb?:x"), store.key("g*[ab]?"), store.key("other:1")]
    for key in cleared + decoys:
        await store.provider.set(key, key.encode())
    # rate-limit state under the prefix is cleared too
    limited = glob_prefix + "rl"
    fixed = FixedWindow(1, 3600)
    assert (await store.provider.acquire(limited, fixed)).allowed
    assert not (await store.provider.acquire(limited, fixed)).allowed

    await store.provider.clear(glob_prefix)

    for key in cleared:
        assert await store.provider.get(key) is None, key
    for key in decoys:
        assert await store.provider.get(key) == key.encode(), key
    assert (await store.provider.acquire(limited, fixed)).allowed

    await store.provider.clear(store.key("other:"))
    assert await store.provider.get(store.key("other:1")) is None
    assert await store.provider.get(store.key("gZZa!:1")) == store.key("gZZa!:1").encode()


# -- rate limiting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALGORITHMS)
async def test_acquire_admits_the_quota_then_rejects_with_retry_after(store: Store, name: str) -> None:
    limit = algorithm(name, 3, 3600)
    key = store.key("rl", name)
    decisions = [await store.provider.acquire(key, limit) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    for d in decisions[:3]:
        assert d.retry_after == 0
        assert 0 < d.reset_after <= 3600
    for d in decisions[3:]:
        assert 0 < d.retry_after <= 3600
    if name == "leaky_bucket":  # queued calls are spaced out: one interval (1200 s) apart
        assert [d.delay for d in decisions[:3]] == pytest.approx([0, 1200, 2400], abs=0.5)
    else:
        assert all(d.delay == 0 for d in decisions)

    # another key has its own quota
    assert (await store.provider.acquire(store.key("rl", name, "other"), limit)).allowed


@pytest.mark.parametrize("name", ["fixed_window", "sliding_window", "token_bucket"])
async def test_a_cost_over_the_quota_can_never_be_admitted(store: Store, name: str) -> None:
    decision = await store.provider.acquire(store.key("rl", name), algorithm(name, 3, 60), cost=4)
    assert not decision.allowed
    assert decision.retry_after == float("inf")
    assert 0 <= decision.reset_after <= 60
    assert (await store.provider.acquire(store.key("rl", name), algorithm(name, 3, 60), cost=3)).allowed


async def test_a_sliding_window_counts_costs_and_names_the_admission_that_blocks(store: Store) -> None:
    limit = SlidingWindow(5, LONG)
    key = store.key("rl", "sliding-costs")
    decisions = []
    for cost in (2, 2, 2, 1, 3, 6):
        decisions.append(await store.provider.acquire(key, limit, cost=cost))
        store.clock.advance(1)  # (memory only) the log holds distinct times, oldest first
    assert [d.allowed for d in decisions] == [True, True, False, True, False, False]
    assert [d.remaining for d in decisions] == [3, 1, 1, 0, 0, 0]
    assert [d.retry_after for d in decisions[:2]] == [0, 0]
    assert all(d.reset_after == pytest.approx(LONG, abs=10) for d in decisions)
    # 2 more fit when the first admission (2 calls) has left; 3 more when the second has, one second later
    assert decisions[2].retry_after == pytest.approx(LONG, abs=10)
    if not store.is_redis:
        assert (decisions[2].retry_after, decisions[4].retry_after) == (LONG - 2, LONG - 3)
    assert decisions[5].retry_after == float("inf")


@pytest.mark.parametrize("name", ["fixed_window", "sliding_window", "token_bucket"])
async def test_concurrent_checks_admit_exactly_the_quota(store: Store, name: str) -> None:
    limit = algorithm(name, 10, LONG)  # a token bucket refills no whole token during the test
    key = store.key("rl", name)
    decisions = await asyncio.gather(*(store.provider.acquire(key, limit) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


async def test_concurrent_checks_on_a_leaky_bucket_queue_bucket_size_behind_the_first(store: Store) -> None:
    limit = LeakyBucket(10, 10, 5)  # one call per second drains; 5 may wait
    decisions = await asyncio.gather(*(store.provider.acquire(store.key("rl", "leaky"), limit) for _ in range(200)))
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 6
    assert sorted(d.delay for d in admitted) == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.1)
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


@pytest.mark.parametrize("name", ALGORITHMS)
async def test_limiter_keys_expire_when_their_window_is_over(store: Store, name: str) -> None:
    duration = 0.2 if store.is_redis else 60
    limit = algorithm(name, 2, duration)
    key = store.key("rl", "expiring", name)
    await store.start_of_window(duration)
    assert (await store.provider.acquire(key, limit)).allowed
    assert (await store.provider.acquire(key, limit)).allowed
    assert not (await store.provider.acquire(key, limit)).allowed
    if store.is_redis:
        assert 0 < await store.pttl(key) <= duration * 1000
    await store.outlive(key, duration)
    if not store.is_redis:  # the memory provider forgets the key at its next sweep
        await store.provider.acquire(store.key("rl", "another"), limit)
        assert store.provider.limiter_keys == 1
    fresh = await store.provider.acquire(key, limit)
    assert fresh.allowed
    assert fresh.remaining == 1


# -- the decorators on either provider ------------------------------------------------------------------
async def test_the_cache_decorator_caches_results_none_included(store: Store) -> None:
    calls: list[str] = []

    @cache(60, keyspace=store.prefix, provider=store.provider)
    async def lookup(name: str) -> dict[str, Any] | None:
        calls.append(name)
        return None if name == "nobody" else {"name": name, "raw": b"\x00"}

    assert await lookup("nobody") is None
    assert await lookup("nobody") is None
    assert await lookup("ann") == {"name": "ann", "raw": b"\x00"}
    assert await lookup("ann") == {"name": "ann", "raw": b"\x00"}
    assert calls == ["nobody", "ann"]
    if store.is_redis:  # stored in this keyspace, with its TTL
        keys = [key async for key in store.provider.client.scan_iter(match=f"{store.prefix}:cache:*")]
        assert len(keys) == 2
        for key in keys:
            assert 0 < await store.pttl(key) <= 60_000

    await lookup.cache.clear()  # type: ignore[attr-defined]
    assert await lookup("nobody") is None
    assert calls == ["nobody", "ann", "nobody"]


async def test_concurrent_misses_of_the_cache_decorator_compute_once(store: Store) -> None:
    calls = 0

    @cache(60, keyspace=store.prefix, provider=store.provider)
    async def slow() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"value"

    assert await asyncio.gather(*(slow() for _ in range(20))) == [b"value"] * 20
    assert calls == 1


@pytest.mark.parametrize("name", ALGORITHMS)
async def test_the_rate_limit_decorator_limits_with_either_provider(store: Store, name: str) -> None:
    # a short leaky interval (10 ms), so the decorator's waits for queued calls stay short
    quota, duration = (100, 1) if name == "leaky_bucket" else (3, 3600)
    calls = 0

    @rate_limit(quota, duration, algorithm=name, bucket_size=2, keyspace=store.prefix, provider=store.provider,
                key=lambda user: user)
    async def handler(user: str) -> str:
        nonlocal calls
        calls += 1
        return user

    outcomes = await asyncio.gather(*(handler("ann") for _ in range(4)), return_exceptions=True)
    assert sorted(map(repr, outcomes))[:3] == ["'ann'"] * 3
    (rejected,) = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(rejected, RateLimitExceeded)
    assert rejected.retry_after > 0
    assert await handler("bob") == "bob"  # each key has its own quota
    assert calls == 4
