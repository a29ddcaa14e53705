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
