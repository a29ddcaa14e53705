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
