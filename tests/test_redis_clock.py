"""Hosts whose clocks disagree still share one window: the Lua scripts read Redis's clock (``TIME``),
never the caller's. And every key the Redis provider writes carries the keyspace and expires.

The skew is real for the code under test: this process runs with ``time.time`` five hours slow, and a
child interpreter with ``time.time`` and ``time.monotonic`` five hours fast, patched before premier is
imported. With host clocks, their checks would fall in windows ten hours apart and each would get the
whole quota.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from _asgi import call, paths
from premier import cache, rate_limit
from premier.asgi import ASGIGateway
from premier.features.ratelimit import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket

pytestmark = pytest.mark.redis

HOURS = 3600.0
WINDOW = 3600  # one hour: the two hosts' clocks are ten windows apart

SKEWED_CHILD = """
import sys, time
skew = float(sys.argv[3])
_time, _monotonic = time.time, time.monotonic
time.time = lambda: _time() + skew
time.monotonic = lambda: _monotonic() + skew
import asyncio, json
from premier.features.ratelimit import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket
from premier.providers.redis import AsyncRedisCache

url, prefix, window = sys.argv[1], sys.argv[2], int(sys.argv[4])

async def main():
    provider = AsyncRedisCache.from_url(url, timeout=10)
    results = {"time": time.time()}
    for limit in (FixedWindow(10, window), SlidingWindow(10, window), TokenBucket(10, window),
                  LeakyBucket(10, window, 9)):
        decisions = [await provider.acquire(f"{prefix}:rl:{limit.name}", limit) for _ in range(10)]
        results[limit.name] = [[d.allowed, d.retry_after, d.reset_after] for d in decisions]
    await provider.close()
    print(json.dumps(results))

asyncio.run(main())
"""


def limits() -> list[Any]:
    return [FixedWindow(10, WINDOW), SlidingWindow(10, WINDOW), TokenBucket(10, WINDOW), LeakyBucket(10, WINDOW, 9)]


async def redis_window(provider: Any) -> int:
    seconds, micros = await provider.client.time()
    return int((seconds + micros / 1e6) // WINDOW)


async def test_hosts_with_skewed_clocks_share_one_window(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from premier.providers.redis import AsyncRedisCache

    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 5 * HOURS)
    provider = AsyncRedisCache.from_url(redis_url, timeout=10)
    try:
        for attempt in range(2):  # again, in the unlikely case that a real hour ends during the test
            prefix = f"{redis_prefix}:{attempt}"
            window = await redis_window(provider)
            for limit in limits():
                mine = [await provider.acquire(f"{prefix}:rl:{limit.name}", limit) for _ in range(6)]
                assert all(d.allowed for d in mine)
            child = subprocess.run(
                [sys.executable, "-c", SKEWED_CHILD, redis_url, prefix, str(5 * HOURS), str(WINDOW)],
                capture_output=True, text=True, timeout=30, check=False,
            )
            assert child.returncode == 0, child.stderr
            theirs = json.loads(child.stdout)
            last = {limit.name: await provider.acquire(f"{prefix}:rl:{limit.name}", limit) for limit in limits()}
            if await redis_window(provider) == window:
                break
        assert abs(theirs["time"] - time.time() - 10 * HOURS) < 60  # the child's clock really was 10 h ahead
        for limit in limits():
            admitted = [allowed for allowed, _, _ in theirs[limit.name]]
            assert admitted == [True] * 4 + [False] * 6, limit.name  # 6 + 4 = the one shared quota of 10
            for allowed, retry_after, reset_after in theirs[limit.name]:
                assert 0 <= reset_after <= WINDOW
                assert (0 < retry_after <= WINDOW) if not allowed else retry_after == 0
            assert not last[limit.name].allowed
            assert 0 < last[limit.name].retry_after <= WINDOW
            # both hosts see the same time left: Redis's
            assert last[limit.name].reset_after == pytest.approx(theirs[limit.name][-1][2], abs=5)
    finally:
        await provider.close()


async def test_every_key_carries_the_keyspace_and_expires(redis_url: str, redis_prefix: str) -> None:
    """Through the decorators and the gateway (rate limit and HTTP cache, with its lock), every command
    the provider sends names keys under the keyspace, and every key left behind has a TTL."""
    from premier.providers.redis import AsyncRedisCache

    provider = AsyncRedisCache.from_url(redis_url, timeout=10)
    commands: list[tuple[Any, ...]] = []
    execute = provider.client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        commands.append(args)
        return await execute(*args, **options)

    provider.client.execute_command = recording  # type: ignore[method-assign]

    @rate_limit(5, 60, algorithm="sliding_window", keyspace=redis_prefix, provider=provider)
    @cache(30, keyspace=redis_prefix, provider=provider)
    async def lookup(name: str) -> str:
        return name.upper()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=20")]})
        await send({"type": "http.response.body", "body": b"cached"})

    config = paths(
        ("/cached", {"cache": {}}),
        ("/fixed", {"rate_limit": {"quota": 3, "duration": 10, "algorithm": "fixed_window"}}),
        ("/token", {"rate_limit": {"quota": 3, "duration": 10, "algorithm": "token_bucket"}}),
        ("/leaky", {"rate_limit": {"quota": 3, "duration": 10, "algorithm": "leaky_bucket", "bucket_size": 1}}),
        keyspace=redis_prefix,
    )
    gateway = ASGIGateway(config, app=app, cache_provider=provider)
    try:
        assert await asyncio.gather(lookup("a"), lookup("a"), lookup("b")) == ["A", "A", "B"]
        for path in ("/cached", "/cached", "/fixed", "/token", "/leaky"):
            assert (await call(gateway, path=path)).status == 200

        keyed = [args for args in commands if args[0] not in ("SCRIPT LOAD",)]
        assert keyed, commands
        for args in keyed:
            name = args[0].upper()
            key = args[3] if name == "EVALSHA" else args[1]  # EVALSHA sha numkeys key ...
            key = key.decode() if isinstance(key, bytes) else key
            assert key.startswith(f"{redis_prefix}:"), args

        stored = [key async for key in provider.client.scan_iter(match=f"{redis_prefix}:*")]
        assert len(stored) >= 6  # 2 cached values, 1 limiter of lookup, 1 HTTP entry, 3 route limiters
        for key in stored:
            assert 0 < await provider.client.pttl(key) <= 60_000, key
    finally:
        await provider.close()
