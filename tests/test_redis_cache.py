"""The HTTP cache on one Redis shared by several gateway processes: each gateway here has its own
provider and client, as each worker of a server would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _asgi import Backend, call, paths
from _servers import RedisServer
from premier.asgi import ASGIGateway
from premier.providers import GroupingProvider

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def two_workers(
    url: str, keyspace: str, app: Any = None, cache: dict[str, Any] | None = None, wrap: Any = None
) -> AsyncIterator[tuple[ASGIGateway, ASGIGateway]]:
    """Two gateways on the Redis at ``url``, each with its own provider and client (``wrap``ped)."""
    from premier.providers.redis import AsyncRedisCache

    app = app or Backend(headers=[("vary", "accept")], body=lambda n: f"call {n}".encode())
    cfg = paths(("/*", {"cache": cache or {"expire_s": 60}}), keyspace=keyspace)
    providers = [AsyncRedisCache.from_url(url, timeout=10) for _ in range(2)]
    try:
        first, second = (ASGIGateway(cfg, app=app, cache_provider=wrap(p) if wrap else p) for p in providers)
        yield first, second
    finally:
        for provider in providers:
            await provider.close()


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[ASGIGateway, ASGIGateway]]:
    async with two_workers(redis_url, redis_prefix) as pair:
        yield pair


async def cache_keys(gateway: ASGIGateway, keyspace: str) -> dict[bytes, bytes]:
    """The HTTP cache's keys in Redis, each with its type (``zset``: the record of a path's keys)."""
    client = gateway.provider.client
    return {key: await client.type(key) async for key in client.scan_iter(match=f"{keyspace}:http:*")}


async def test_an_unsafe_request_removes_every_worker_s_entries_of_its_path(
    workers: tuple[ASGIGateway, ASGIGateway],
) -> None:
    a, b = workers
    html = [("accept", "text/html")]
    assert (await call(a, "GET", "/item")).x_cache == "MISS"
    assert (await call(b, "GET", "/item", query="lang=fr")).x_cache == "MISS"  # an entry only b stored
    assert (await call(b, "GET", "/item", headers=html)).x_cache == "MISS"  # a variant only b stored
    assert (await call(b, "GET", "/other")).x_cache == "MISS"
    assert (await call(a, "GET", "/item", query="lang=fr")).x_cache == "HIT"  # (one store for both)
    assert (await call(a, "POST", "/item")).status == 200  # a has stored /item itself, not b's variants
    after = [await call(b, "GET", "/item", query="lang=fr"), await call(a, "GET", "/item", headers=html),
             await call(b, "GET", "/item")]
    assert [(r.x_cache, r.body) for r in after] == [("MISS", b"call 6"), ("MISS", b"call 7"), ("MISS", b"call 8")]
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
    assert len(keys) == 5 and max(len(key) for key in keys) < 400  # two Vary markers, two entries, the path's record
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


async def test_an_unsafe_request_costs_its_path_s_keys_not_a_scan_of_the_database(own_redis: RedisServer) -> None:
    # 50,000 other keys: a clear by prefix would SCAN them in 100 round trips before the POST's answer.
    import redis

    client = redis.Redis(port=own_redis.port)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(50_000):
            pipe.set(f"unrelated:{i}", b"x")
        pipe.execute()
        async with two_workers(own_redis.url, "ks") as (a, b):
            html = [("accept", "text/html")]
            await call(a, "GET", "/item")
            await call(b, "GET", "/item", query="lang=fr")
            await call(b, "GET", "/item", headers=html)
            await call(b, "POST", "/warm")  # (loads the script: its first call is not the one measured)
            client.config_resetstat()
            assert (await call(a, "POST", "/item")).status == 200
            stats = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in client.info("commandstats").items()}
            # one round trip, a script: its commands are counted too (each on the path's keys)
            assert {k: v for k, v in stats.items() if not k.startswith(("config", "info"))} == {
                "evalsha": 1, "zpopmin": 1, "unlink": 1}
            after = [await call(b, "GET", "/item", query="lang=fr"), await call(a, "GET", "/item", headers=html),
                     await call(b, "GET", "/item")]
            assert [r.x_cache for r in after] == ["MISS"] * 3
    finally:
        client.close()


async def test_a_path_s_record_lives_as_long_as_its_longest_lived_entry_and_no_longer(
    redis_url: str, redis_prefix: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        # ?ttl=N: the response says max-age=N; otherwise nothing, and the route's expire_s (300 ms) applies
        ttl = scope["query_string"].decode().removeprefix("ttl=")
        headers = [(b"cache-control", b"max-age=" + ttl.encode())] if ttl.isdigit() else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async with two_workers(redis_url, redis_prefix, app, {"expire_s": 0.3}) as (a, b):
        client = a.provider.client
        await call(a, "GET", "/item", query="x")
        await call(b, "GET", "/item", query="y")
        (record,) = [key for key, kind in (await cache_keys(a, redis_prefix)).items() if kind == b"zset"]
        assert 0 < await client.pttl(record) <= 302
        deadline = time.monotonic() + 1.0
        while await cache_keys(a, redis_prefix):  # the entries expire, and their record with them
            assert time.monotonic() < deadline, "the record outlived its entries"
            await asyncio.sleep(0.01)

        await call(a, "GET", "/item", query="ttl=300")
        await call(b, "GET", "/item", query="ttl=60")
        entries = [key for key, kind in (await cache_keys(a, redis_prefix)).items() if kind == b"string"]
        assert 299_000 < await client.pttl(record) <= 300_002  # (the 60 s entry, stored last, did not shorten it)
        assert max([await client.pexpiretime(key) for key in entries]) <= await client.pexpiretime(record)
        await call(b, "POST", "/item")
        assert await cache_keys(a, redis_prefix) == {}


class PrefixOnly:
    """A third-party provider without groups: the Redis provider's storage, none of its records."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.client = inner.client
        for name in ("get", "set", "delete", "clear", "acquire", "close", "lock", "unlock"):
            setattr(self, name, getattr(inner, name))


async def test_a_shared_provider_without_groups_is_cleared_by_the_path_s_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    async with two_workers(redis_url, redis_prefix, wrap=PrefixOnly) as (a, b):
        assert not isinstance(a.provider, GroupingProvider)
        html = [("accept", "text/html")]
        await call(a, "GET", "/item")
        await call(b, "GET", "/item", query="lang=fr")
        await call(b, "GET", "/item", headers=html)
        await call(b, "GET", "/other")
        assert set((await cache_keys(a, redis_prefix)).values()) == {b"string"}  # no record kept
        await call(a, "POST", "/item")
        after = [await call(b, "GET", "/item", query="lang=fr"), await call(a, "GET", "/item", headers=html),
                 await call(b, "GET", "/item"), await call(a, "GET", "/other")]
        assert [r.x_cache for r in after] == ["MISS", "MISS", "MISS", "HIT"]
