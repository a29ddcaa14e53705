"""A circuit breaker with `shared: true` opens in every gateway process sharing the Redis storage."""

from __future__ import annotations

from typing import Any

import pytest

from _asgi import call, paths
from conftest import FakeClock
from premier.asgi import ASGIGateway

pytestmark = pytest.mark.redis


class Failing:
    """An app answering 500 while ``failing``; counts its calls."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        status = 500 if self.failing else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def test_one_process_opening_opens_them_all(redis_url: str, redis_prefix: str) -> None:
    from premier.providers.redis import AsyncRedisCache

    config = paths(
        ("/api/*", {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 30, "shared": True}}),
        keyspace=redis_prefix,
    )
    clock_a, clock_b = FakeClock(), FakeClock()
    app_a, app_b = Failing(), Failing()
    provider_a, provider_b = AsyncRedisCache.from_url(redis_url), AsyncRedisCache.from_url(redis_url)
    gateway_a = ASGIGateway(config, app=app_a, cache_provider=provider_a, clock=clock_a)
    gateway_b = ASGIGateway(config, app=app_b, cache_provider=provider_b, clock=clock_b)
    try:
        assert (await call(gateway_b, path="/api/x")).status == 500  # B has seen one failure of its own
        assert [(await call(gateway_a, path="/api/x")).status for _ in range(4)] == [500, 500, 500, 503]
        clock_b.advance(0.3)  # B looks at the shared state at most every 0.25 s
        refused = await call(gateway_b, path="/api/x")
        assert refused.status == 503
        assert app_b.calls == 1  # B opened without failing three times itself

        # A's probe, after recovery_timeout, succeeds and closes the circuit for everyone.
        app_a.failing = app_b.failing = False
        clock_a.advance(30)
        assert (await call(gateway_a, path="/api/x")).status == 200
        clock_b.advance(30)
        assert (await call(gateway_b, path="/api/x")).status == 200
        clock_b.advance(0.3)
        assert (await call(gateway_b, path="/api/x")).status == 200  # not re-opened from a stale key
    finally:
        await provider_a.close()
        await provider_b.close()


async def test_without_shared_each_process_counts_alone(redis_url: str, redis_prefix: str) -> None:
    from premier.providers.redis import AsyncRedisCache

    config = paths(
        ("/api/*", {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 30}}), keyspace=redis_prefix
    )
    clock = FakeClock()
    provider_a, provider_b = AsyncRedisCache.from_url(redis_url), AsyncRedisCache.from_url(redis_url)
    gateway_a = ASGIGateway(config, app=Failing(), cache_provider=provider_a, clock=clock)
    gateway_b = ASGIGateway(config, app=Failing(), cache_provider=provider_b, clock=clock)
    try:
        assert [(await call(gateway_a, path="/api/x")).status for _ in range(4)] == [500, 500, 500, 503]
        clock.advance(0.3)
        assert (await call(gateway_b, path="/api/x")).status == 500
    finally:
        await provider_a.close()
        await provider_b.close()
