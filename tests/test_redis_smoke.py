"""The Redis provider answers one check of each algorithm with Redis's own logic (a smoke test; the
storage contract suite runs every behaviour on memory and Redis alike)."""

from __future__ import annotations

import pytest

from premier.features.ratelimit import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("algorithm", [FixedWindow(2, 60), SlidingWindow(2, 60), TokenBucket(2, 60), LeakyBucket(2, 60, 0)])
async def test_each_algorithm_admits_its_quota_then_rejects(redis_url: str, redis_prefix: str, algorithm: object) -> None:
    from premier.providers.redis import AsyncRedisCache

    provider = AsyncRedisCache.from_url(redis_url)
    try:
        key = f"{redis_prefix}:rl:{algorithm.name}"  # type: ignore[attr-defined]
        decisions = [await provider.acquire(key, algorithm) for _ in range(3)]  # type: ignore[arg-type]
    finally:
        await provider.close()
    if isinstance(algorithm, LeakyBucket):  # bucket_size 0: only a call that finds it empty passes
        assert [d.allowed for d in decisions] == [True, False, False]
    else:
        assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after > 0


async def test_concurrent_checks_share_pipelined_writes_but_run_one_script_each(redis_url: str, redis_prefix: str) -> None:
    import asyncio

    from premier.providers.redis import AsyncRedisCache

    provider = AsyncRedisCache.from_url(redis_url)
    writes = 0
    original = provider.client.connection_pool.connection_class.send_packed_command

    async def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return await original(self, command, check_health)

    provider.client.connection_pool.connection_class.send_packed_command = counting
    try:
        algorithm = SlidingWindow(30, 60)
        before = (await provider.client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        decisions = await asyncio.gather(*(provider.acquire(f"{redis_prefix}:rl", algorithm) for _ in range(50)))
        after = (await provider.client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        provider.client.connection_pool.connection_class.send_packed_command = original
        await provider.close()
    assert sum(d.allowed for d in decisions) == 30
    assert after - before == 50  # one script run per check: each is atomic on its own
    assert writes < 10  # ... sent together, not one write per check



@pytest.mark.parametrize("ages", [[], [10], [10, 61], [10, 61, 62, 63], [61, 62, 63, 64, 65], [10, 20, 30]])
async def test_the_sliding_window_log_drops_admissions_that_left_the_window(
    redis_url: str, redis_prefix: str, ages: list[int]
) -> None:
    """The log is a list of admission times in µs, newest first. A check drops the entries older than
    the window (one, or many at once) and counts the others, so the list never holds more than the quota."""
    from premier.providers.redis import AsyncRedisCache

    provider = AsyncRedisCache.from_url(redis_url)
    key, limit = f"{redis_prefix}:rl:sliding-log", SlidingWindow(3, 60)
    live = sum(age < 60 for age in ages)
    try:
        if ages:
            seconds, micros = await provider.client.time()
            now = seconds * 1_000_000 + micros
            await provider.client.rpush(key, *(now - age * 1_000_000 for age in ages))
        decision = await provider.acquire(key, limit)
        assert (decision.allowed, decision.remaining) == (live < 3, max(0, 3 - live - 1))
        assert await provider.client.llen(key) == min(live + 1, 3)
        if live < 3:  # an admission (re)sets the key's expiry to the window
            assert 0 < await provider.client.pttl(key) <= 60_000
            assert decision.reset_after == 60
        else:  # rejected: it fits when the oldest (30 s ago) leaves; the newest (10 s ago) resets
            assert 29 < decision.retry_after <= 30
            assert 49 < decision.reset_after <= 50
    finally:
        await provider.close()
