"""The in-memory provider: bounded, expiring storage for cache entries and rate-limit states."""

from __future__ import annotations

import pytest

from premier.features.ratelimit import FixedWindow
from premier.providers import AsyncInMemoryCache, CacheProvider, LocalProvider


def test_is_a_cache_provider_and_a_local_provider(provider):
    assert isinstance(provider, CacheProvider)
    assert isinstance(provider, LocalProvider)


async def test_set_get_delete(provider):
    assert await provider.get("k") is None
    await provider.set("k", {"a": 1})
    assert await provider.get("k") == {"a": 1}
    await provider.delete("k")
    assert await provider.get("k") is None
    await provider.delete("never-set")  # deleting a missing key is not an error


async def test_ttl_expiry_on_read(provider, clock):
    await provider.set("k", "v", ttl=5)
    clock.advance(4.999)
    assert await provider.get("k") == "v"
    clock.advance(0.001)
    assert await provider.get("k") is None
    assert len(provider) == 0  # reading an expired entry removes it


async def test_no_ttl_lives_until_evicted(provider, clock):
    await provider.set("k", "v")
    clock.advance(10 * 365 * 86400)
    assert await provider.get("k") == "v"


async def test_set_again_replaces_value_and_ttl(provider, clock):
    await provider.set("k", "old", ttl=1)
    await provider.set("k", "new", ttl=100)
    clock.advance(50)
    assert await provider.get("k") == "new"
    assert len(provider) == 1


async def test_max_entries_evicts_least_recently_used(clock):
    cache = AsyncInMemoryCache(max_entries=3, clock=clock)
    for key in "abc":
        await cache.set(key, key.upper())
    assert await cache.get("a") == "A"  # a is now the most recently used; b the least
    await cache.set("d", "D")
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in "acd"] == ["A", "C", "D"]


async def test_keys_count_towards_max_bytes(clock):
    # A cache key holds a client's query string: a million keys of 100 KB must not fit in a small budget.
    provider = AsyncInMemoryCache(max_bytes=1_000_000, clock=clock)
    for i in range(50):
        await provider.set(f"{i}:" + "q" * 100_000, b"tiny")
    assert len(provider) == 9  # 9 x 100 KB keys fit in 1 MB, a tenth does not
    assert provider.nbytes <= 1_000_000


async def test_overwriting_an_entry_of_a_full_cache_evicts_nothing(clock):
    cache = AsyncInMemoryCache(max_entries=2, clock=clock)
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.set("a", 3)
    assert len(cache) == 2
    assert await cache.get("a") == 3 and await cache.get("b") == 2


async def test_a_full_cache_drops_expired_entries_before_live_ones_when_a_sweep_is_due(clock):
    cache = AsyncInMemoryCache(max_entries=2, sweep_interval=10, clock=clock)
    await cache.set("short", 1, ttl=1)
    await cache.set("long", 2)
    clock.advance(11)
    await cache.set("new", 3)
    assert await cache.get("long") == 2
    assert await cache.get("new") == 3


async def test_expired_entries_of_other_keys_are_swept_on_schedule_by_a_read(clock):
    cache = AsyncInMemoryCache(sweep_interval=10, clock=clock)
    await cache.get("warm-up")  # the first operation sweeps and schedules the next sweep
    for i in range(5):
        await cache.set(f"short{i}", i, ttl=1)
    await cache.set("long", "v")
    clock.advance(5)
    await cache.get("long")
    assert len(cache) == 6  # expired, but no sweep is due yet
    clock.advance(5)
    await cache.get("long")
    assert len(cache) == 1  # swept without anyone reading short0..short4


async def test_expired_entries_of_other_keys_are_swept_on_schedule_by_a_write(clock):
    cache = AsyncInMemoryCache(sweep_interval=10, clock=clock)
    await cache.get("warm-up")
    for i in range(5):
        await cache.set(f"short{i}", i, ttl=1)
    clock.advance(10)
    await cache.set("other", "v")
    assert len(cache) == 1


async def test_limiter_keys_expire_when_their_window_is_over(clock):
    cache = AsyncInMemoryCache(sweep_interval=10, clock=clock)
    algorithm = FixedWindow(quota=5, duration=10)
    for i in range(20):
        await cache.acquire(f"client{i}", algorithm)
    assert cache.limiter_keys == 20
    clock.advance(10)
    await cache.acquire("another", algorithm)
    assert cache.limiter_keys == 1


async def test_max_limiter_keys_bound_forgets_the_oldest_key(clock):
    cache = AsyncInMemoryCache(max_limiter_keys=2, clock=clock)
    algorithm = FixedWindow(quota=1, duration=60)
    assert (await cache.acquire("a", algorithm)).allowed
    assert (await cache.acquire("b", algorithm)).allowed
    assert (await cache.acquire("c", algorithm)).allowed
    assert cache.limiter_keys == 2
    assert not (await cache.acquire("c", algorithm)).allowed  # c is still counted
    assert (await cache.acquire("a", algorithm)).allowed  # a was evicted, so it starts afresh


async def test_acquire_uses_the_provider_clock(clock):
    cache = AsyncInMemoryCache(clock=clock)
    algorithm = FixedWindow(quota=1, duration=10)
    assert (await cache.acquire("k", algorithm)).allowed
    rejected = await cache.acquire("k", algorithm)
    assert not rejected.allowed
    assert rejected.retry_after == 10  # the fake clock starts on a window edge
    clock.advance(10)
    assert (await cache.acquire("k", algorithm)).allowed


async def test_acquire_nowait_matches_acquire(provider):
    algorithm = FixedWindow(quota=2, duration=10)
    assert provider.acquire_nowait("k", algorithm).remaining == 1
    assert (await provider.acquire("k", algorithm)).remaining == 0


async def test_clear_prefix_removes_only_that_prefix(provider):
    algorithm = FixedWindow(quota=1, duration=60)
    await provider.set("app1:cache:x", 1)
    await provider.set("app1:cache:y", 2)
    await provider.set("app2:cache:x", 3)
    await provider.acquire("app1:rl:k", algorithm)
    await provider.acquire("app2:rl:k", algorithm)
    await provider.clear("app1:")
    assert await provider.get("app1:cache:x") is None
    assert await provider.get("app1:cache:y") is None
    assert await provider.get("app2:cache:x") == 3
    assert (await provider.acquire("app1:rl:k", algorithm)).allowed  # its counter was cleared
    assert not (await provider.acquire("app2:rl:k", algorithm)).allowed  # this one was not


async def test_clear_without_prefix_and_close_remove_everything(provider):
    algorithm = FixedWindow(quota=1, duration=60)
    await provider.set("a", 1)
    await provider.acquire("k", algorithm)
    await provider.clear()
    assert len(provider) == 0 and provider.limiter_keys == 0
    await provider.set("b", 1)
    await provider.close()
    assert len(provider) == 0


async def test_none_can_be_stored(provider):
    # A stored None reads back as None like a miss; callers that must tell them apart box the value,
    # as the cache decorator does (see test_cache.py).
    await provider.set("k", None)
    assert len(provider) == 1
    assert await provider.get("k") is None
    await provider.set("boxed", (None,))
    assert await provider.get("boxed") == (None,)


def test_sync_api_matches_async(provider):
    provider.set_nowait("k", 1, ttl=10)
    assert provider.get_nowait("k") == 1
    provider.delete_nowait("k")
    assert provider.get_nowait("k") is None


@pytest.mark.parametrize("bound", ["max_entries", "max_limiter_keys"])
@pytest.mark.parametrize("value", [0, -1])
def test_bounds_must_be_positive(bound, value):
    with pytest.raises(ValueError, match="greater than 0"):
        AsyncInMemoryCache(**{bound: value})
