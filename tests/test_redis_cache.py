"""The HTTP cache on one Redis shared by several gateway processes: each gateway here has its own
provider and client, as each worker of a server would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from _asgi import Backend, call, paths
from premier.asgi import ASGIGateway

pytestmark = pytest.mark.redis


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[ASGIGateway, ASGIGateway]]:
    from premier.providers.redis import AsyncRedisCache

    app = Backend(headers=[("vary", "accept")], body=lambda n: f"call {n}".encode())
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


async def test_long_key_parts_make_short_keys_that_an_unsafe_request_still_clears(
    workers: tuple[ASGIGateway, ASGIGateway], redis_prefix: str,
) -> None:
    # The path, the query and the Vary'd values are each keyed by their SHA-256 past 200 characters; the
    # path's prefix, computed alike, still finds every key of the path.
    a, b = workers
    long_path, long_query, long_value = "/" + "p" * 3000, "q=" + "x" * 3000, "v" * 3000
    for worker, query in ((a, long_query), (b, "")):
        assert (await call(worker, "GET", long_path, query=query, headers=[("accept", long_value)])).x_cache == "MISS"
    client = b.provider.client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}:http:*")]
    assert len(keys) == 4 and max(len(key) for key in keys) < 400  # two Vary markers, two entries
    assert (await call(b, "GET", long_path, query=long_query, headers=[("accept", long_value)])).x_cache == "HIT"
    await call(a, "DELETE", long_path)
    assert [key async for key in client.scan_iter(match=f"{redis_prefix}:http:*")] == []


async def test_no_request_header_value_makes_the_key_of_a_lock(workers: tuple[ASGIGateway, ASGIGateway]) -> None:
    # The lock that holds the other processes' misses while one fetches was at the key of the variant
    # whose Vary'd value is "lock": once stored, every miss of the URL waited for a fetch that never came.
    a, b = workers
    assert (await call(a, "GET", "/item", headers=[("accept", "lock")])).x_cache == "MISS"
    miss = await asyncio.wait_for(call(b, "GET", "/item", headers=[("accept", "text/html")]), 2)  # (5 s before)
    assert (miss.x_cache, miss.body) == ("MISS", b"call 2")
