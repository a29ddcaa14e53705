"""The HTTP cache on one Redis shared by several gateway processes: each gateway here has its own
provider and client, as each worker of a server would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from _asgi import Backend, call, paths
from premier.asgi import ASGIGateway

pytestmark = pytest.mark.redis


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[ASGIGateway, ASGIGateway]]:
    from premier.providers.redis import AsyncRedisCache

    app = Backend(body=lambda n: f"call {n}".encode())
    cfg = paths(("/*", {"cache": {"expire_s": 60}}), keyspace=redis_prefix)
    providers = [AsyncRedisCache.from_url(redis_url, timeout=10) for _ in range(2)]
    try:
        first, second = (ASGIGateway(cfg, app=app, cache_provider=provider) for provider in providers)
        yield first, second
    finally:
        for provider in providers:
            await provider.close()


async def test_an_unsafe_request_removes_every_worker_s_entries_of_its_path(
    workers: tuple[ASGIGateway, ASGIGateway],
) -> None:
    a, b = workers
    assert (await call(a, "GET", "/item")).x_cache == "MISS"
    assert (await call(b, "GET", "/item", query="lang=fr")).x_cache == "MISS"  # an entry only b stored
    assert (await call(b, "GET", "/other")).x_cache == "MISS"
    assert (await call(a, "POST", "/item")).status == 200  # a has stored /item itself, not b's variant
    assert (await call(b, "GET", "/item", query="lang=fr")).x_cache == "MISS"
    assert (await call(b, "GET", "/item")).x_cache == "MISS"
    assert (await call(a, "GET", "/other")).x_cache == "HIT"  # other paths keep their entries
