"""Redis going away mid-run: each ``on_backend_error`` policy does what it says, nothing raises, the outage
is logged once when it starts and once when it ends, and the provider returns to Redis by itself.

These tests run their own ``redis-server`` on a free port, stop it (or freeze it) and start it again; the
shared server at 6379 is only used for the ``redis_url`` fixture's availability check and key cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from _asgi import Backend, call, paths
from _servers import RedisServer
from premier.asgi import ASGIGateway, GatewayConfig
from premier.errors import BackendError
from premier.features.ratelimit import FixedWindow, SlidingWindow

pytestmark = pytest.mark.redis

LONG = 1_000_000  # no fixed-window edge falls inside a test


@pytest.fixture
def server(own_redis: RedisServer) -> RedisServer:
    return own_redis


def outage_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "premier" and "Redis" in r.getMessage()]


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within time"
        await asyncio.sleep(0.02)


def provider_for(server: RedisServer, policy: str) -> Any:
    from premier.providers.redis import AsyncRedisCache

    return AsyncRedisCache.from_url(server.url, on_backend_error=policy, timeout=0.2, retry_interval=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["local", "allow", "deny"])
async def test_each_policy_during_an_outage_and_recovery(
    server: RedisServer, redis_prefix: str, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="premier")
    provider = provider_for(server, policy)
    limit = FixedWindow(5, LONG)
    key, cached = f"{redis_prefix}:rl:k", f"{redis_prefix}:cache:v"
    try:
        assert (await provider.acquire(key, limit)).remaining == 4  # on Redis
        await provider.set(cached, b"stored in Redis", ttl=60)
        assert server.command("EXISTS", key) == 1

        server.stop()
        decisions = []
        for _ in range(50):  # over ~0.3 s: Redis is tried again every 0.1 s, and still logged once
            decisions.append(await provider.acquire(key, limit))
            await asyncio.sleep(0.006)
        allowed = [d.allowed for d in decisions]
        if policy == "local":  # this process's memory enforces the quota (counting afresh)
            assert allowed == [True] * 5 + [False] * 45
        elif policy == "allow":
            assert allowed == [True] * 50
        else:
            assert allowed == [False] * 50
        assert all(d.retry_after > 0 for d in decisions if not d.allowed)

        # the cache neither raises nor serves what only Redis had
        assert await provider.get(cached) is None
        await provider.set(f"{redis_prefix}:cache:new", b"written during the outage", ttl=60)
        expected = b"written during the outage" if policy == "local" else None
        assert await provider.get(f"{redis_prefix}:cache:new") == expected
        await provider.delete(cached)
        token = await provider.lock(f"{redis_prefix}:lock", ttl=1)
        assert token is not None  # nobody waits on a Redis that is not there
        await provider.unlock(f"{redis_prefix}:lock", token)
        with pytest.raises(BackendError):
            await provider.clear(redis_prefix)  # an explicit clear says it could not clear
        assert len(outage_logs(caplog)) == 1
        assert "unreachable" in outage_logs(caplog)[0]

        server.start()  # empty: a restart without persistence forgets keys and scripts

        async def back_on_redis() -> bool:
            await provider.acquire(key, limit)
            return bool(server.command("EXISTS", key))

        await until(back_on_redis)  # by itself, after retry_interval
        logs = outage_logs(caplog)
        assert len(logs) == 2
        assert "reachable again" in logs[1]

        # shared counting resumed: another process's provider sees the same count
        other = provider_for(server, policy)
        try:
            used = int(server.command("HGET", key, "c"))
            assert (await other.acquire(key, limit)).remaining == 5 - used - 1
        finally:
            await other.close()
    finally:
        await provider.close()


async def test_a_frozen_redis_costs_one_timeout_per_retry_interval_not_one_per_request(
    server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="premier")
    provider = provider_for(server, "local")
    limit = SlidingWindow(100, LONG)
    key = f"{redis_prefix}:rl:frozen"
    try:
        assert (await provider.acquire(key, limit)).allowed
        server.freeze()
        started = time.monotonic()
        concurrent = await asyncio.gather(*(provider.acquire(key, limit) for _ in range(200)))
        assert sum(d.allowed for d in concurrent) == 100  # the local quota, counted afresh
        assert time.monotonic() - started < 1.0  # one timeout (0.2 s) for the batch, not one per queued call
        started = time.monotonic()
        for _ in range(50):
            await provider.get(f"{redis_prefix}:cache:x")
        assert time.monotonic() - started < 1.0
        assert len(outage_logs(caplog)) == 1

        server.thaw()

        async def back() -> bool:
            await provider.get(f"{redis_prefix}:cache:x")
            return len(outage_logs(caplog)) == 2

        await until(back)
        assert "reachable again" in outage_logs(caplog)[1]
        # Counting on Redis again. (Commands that timed out while it was frozen may still have run
        # when it thawed: a timeout does not say the command did not happen.)
        assert (await provider.acquire(key, limit)).remaining == 100 - int(server.command("LLEN", key))
    finally:
        await provider.close()


async def test_groups_fall_back_to_local_memory_and_a_clear_says_it_could_not_clear(
    server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="premier")
    provider = provider_for(server, "local")
    group = f"{redis_prefix}:item"
    try:
        await provider.set_in_group(group, group + "?a", "on Redis", ttl=60)
        server.stop()
        await provider.set_in_group(group, group + "?b", "in memory", ttl=60)
        assert await provider.get(group + "?b") == "in memory"
        with pytest.raises(BackendError, match="not cleared"):
            await provider.clear_group(group)  # as clear() says it
        assert await provider.get(group + "?b") is None  # the local fallback is cleared all the same
        assert len(outage_logs(caplog)) == 1

        server.start()  # empty, its scripts too

        async def back_on_redis() -> bool:
            await provider.set_in_group(group, group + "?c", "on Redis again", ttl=60)
            return bool(server.command("EXISTS", group + "?c"))

        await until(back_on_redis)
        assert server.command("ZCARD", group) == 1
        await provider.clear_group(group)
        assert server.command("EXISTS", group, group + "?c") == 0
    finally:
        await provider.close()


async def test_an_unsafe_request_during_an_outage_answers_then_raises_that_it_could_not_invalidate(
    server: RedisServer, redis_prefix: str
) -> None:
    provider = provider_for(server, "local")
    gateway = ASGIGateway(paths(("/*", {"cache": {"expire_s": 60}}), keyspace=redis_prefix), app=Backend(),
                          cache_provider=provider)
    try:
        await call(gateway, "GET", "/item")
        assert (await call(gateway, "GET", "/item")).x_cache == "HIT"
        server.stop()
        sent: list[dict[str, Any]] = []
        with pytest.raises(BackendError, match="not cleared"):  # raised once the app is done
            await call(gateway, "POST", "/item", on_send=sent.append)
        assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
        assert (await call(gateway, "GET", "/item")).x_cache == "MISS"
    finally:
        await provider.close()


async def test_scripts_are_loaded_again_after_script_flush(
    server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="premier")
    provider = provider_for(server, "deny")
    limit = FixedWindow(3, LONG)
    key = f"{redis_prefix}:rl:flushed"
    try:
        assert (await provider.acquire(key, limit)).remaining == 2
        assert server.command("SCRIPT", "FLUSH") in (True, b"OK", "OK")
        decision = await provider.acquire(key, limit)
        assert decision.allowed
        assert decision.remaining == 1
        assert outage_logs(caplog) == []
    finally:
        await provider.close()


GATEWAY_YAML = """
premier:
  keyspace: "{prefix}"
  storage: {{url: "{url}", on_backend_error: local, timeout: 0.2}}
  paths:
    - pattern: /limited
      features:
        rate_limit: {{quota: 3, duration: {duration}, algorithm: sliding_window, key: global}}
"""


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_a_gateway_with_yaml_storage_keeps_limiting_while_redis_is_down(
    server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="premier")
    config = GatewayConfig.from_yaml(GATEWAY_YAML.format(prefix=redis_prefix, url=server.url, duration=LONG))
    gateway = ASGIGateway(config, app=hello)
    try:
        assert [(await call(gateway, path="/limited")).status for _ in range(2)] == [200, 200]
        assert [k.decode() for k in server.command("KEYS", f"{redis_prefix}:*")] != []  # (our own server)

        server.stop()
        results = [await call(gateway, path="/limited") for _ in range(6)]
        assert [r.status for r in results] == [200, 200, 200, 429, 429, 429]  # counted afresh, in memory
        assert int(results[-1].header("retry-after") or 0) > 0
        assert (await call(gateway, path="/elsewhere")).status == 200  # unlimited routes never notice
        assert len(outage_logs(caplog)) == 1

        server.start()

        async def back() -> bool:
            return (await call(gateway, path="/limited")).status == 200 and len(outage_logs(caplog)) == 2

        await until(back)  # the gateway's provider retries every second by default
        assert [(await call(gateway, path="/limited")).status for _ in range(3)] == [200, 200, 429]
    finally:
        await gateway.provider.close()
