"""Groups on Redis (``AsyncRedisCache.set_in_group``, ``clear_group``): the keys stored in a group are
recorded at the group's key, so clearing it costs its keys, not a SCAN; the record lives as long as its
longest-lived key and no longer; and no key stored while a group is cleared is left out of the record."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from premier.providers import GroupingProvider

pytestmark = pytest.mark.redis


@pytest.fixture
async def providers(redis_url: str) -> AsyncIterator[list[Any]]:
    """Two providers, each with its own client: two processes."""
    from premier.providers.redis import AsyncRedisCache

    made = [AsyncRedisCache.from_url(redis_url, timeout=10) for _ in range(2)]
    try:
        yield made
    finally:
        for provider in made:
            await provider.close()


async def until_gone(client: Any, key: str) -> None:
    deadline = time.monotonic() + 1.0
    while await client.exists(key):
        assert time.monotonic() < deadline, f"{key} outlived its TTL"
        await asyncio.sleep(0.01)


async def test_the_redis_provider_keeps_groups(providers: list[Any]) -> None:
    assert isinstance(providers[0], GroupingProvider)


async def test_clearing_a_group_removes_its_keys_and_its_record_and_nothing_else(
    providers: list[Any], redis_prefix: str
) -> None:
    a, b = providers
    group, other = f"{redis_prefix}:item", f"{redis_prefix}:other"
    await a.set_in_group(group, group + "?a", "a", ttl=60)
    await b.set_in_group(group, group + "?b", "b")  # another process, no TTL
    await b.set_in_group(other, other + "?a", "other")
    await a.set(group + "?unrecorded", "kept")  # under the prefix, not in the group
    assert await b.get(group + "?a") == "a"

    await b.clear_group(group)
    assert [await a.get(group + q) for q in ("?a", "?b", "?unrecorded")] == [None, None, "kept"]
    assert not await a.client.exists(group)  # the record went with its keys
    assert await a.get(other + "?a") == "other"
    await a.clear_group(group)  # an empty group clears at once


async def test_a_group_larger_than_a_batch_is_cleared_whole(providers: list[Any], redis_prefix: str) -> None:
    from premier.providers import redis as redis_provider

    a, b = providers
    group = f"{redis_prefix}:big"
    count = 2 * redis_provider._GROUP_BATCH + 1
    await asyncio.gather(*(a.set_in_group(group, f"{group}?{i}", i, ttl=60) for i in range(count)))
    assert await b.client.zcard(group) == count
    await b.clear_group(group)
    assert [key async for key in a.client.scan_iter(match=f"{redis_prefix}:*")] == []


async def test_the_record_lives_as_long_as_its_longest_lived_key(providers: list[Any], redis_prefix: str) -> None:
    a, b = providers
    client, group = a.client, f"{redis_prefix}:item"
    await a.set_in_group(group, group + "?60", 1, ttl=60)
    assert 59_000 < await client.pttl(group) <= 60_002
    await b.set_in_group(group, group + "?300", 1, ttl=300)
    assert 299_000 < await client.pttl(group) <= 300_002
    await a.set_in_group(group, group + "?10", 1, ttl=10)  # a shorter TTL does not shorten it
    assert 299_000 < await client.pttl(group) <= 300_002
    assert await client.pexpiretime(group) >= await client.pexpiretime(group + "?300")
    await b.set_in_group(group, group + "?forever", 1)  # a key without TTL: the record has none either
    assert await client.pttl(group) == -1
    await a.set_in_group(group, group + "?20", 1, ttl=20)
    assert await client.pttl(group) == -1
    await a.set_in_group(group, group + "?forever", 1, ttl=30)  # stored again with a TTL: the longest is 300 s
    assert 299_000 < await client.pttl(group) <= 300_002


async def test_expired_keys_leave_the_record_and_the_record_goes_with_the_last(
    providers: list[Any], redis_prefix: str
) -> None:
    a, b = providers
    client, group = a.client, f"{redis_prefix}:item"
    await a.set_in_group(group, group + "?a", 1, ttl=0.05)
    await b.set_in_group(group, group + "?b", 1, ttl=0.05)
    remaining = await client.pttl(group)
    assert remaining == -2 or 0 < remaining <= 52  # (-2: gone with its keys already, on a busy machine)
    await until_gone(client, group)
    assert not await client.exists(group + "?a", group + "?b")

    # a key whose entry expired leaves the record when the next is stored: it keeps live keys, not history
    await a.set_in_group(group, group + "?short", 1, ttl=0.05)
    await until_gone(client, group + "?short")
    # (the record keeps a key a millisecond past its entry: wait until Redis's clock is past that too,
    # unless the record, which lives as long as that key, has gone with it)
    recorded = await client.zscore(group, group + "?short")
    while recorded is not None and (now := await client.time())[0] * 1000 + now[1] // 1000 <= recorded:
        await asyncio.sleep(0.005)
    await b.set_in_group(group, group + "?long", 1, ttl=60)
    assert await client.zrange(group, 0, -1) == [(group + "?long").encode()]


async def test_keys_stored_while_their_group_is_cleared_are_removed_or_stay_recorded(
    providers: list[Any], redis_prefix: str
) -> None:
    # Two processes store keys of one group while both clear it: whatever the interleaving, a key in
    # Redis is in the record, so the next clear finds it.
    group = f"{redis_prefix}:item"
    rng = random.Random(7)

    async def store(i: int) -> None:
        await rng.choice(providers).set_in_group(group, f"{group}?{i % 50}", i, ttl=60)

    for _ in range(10):
        work = [store(i) for i in range(200)] + [provider.clear_group(group) for provider in providers * 5]
        rng.shuffle(work)
        await asyncio.gather(*work)
        client = providers[0].client
        stored = {key async for key in client.scan_iter(match=f"{group}?*")}
        assert stored <= set(await client.zrange(group, 0, -1))
    await providers[1].clear_group(group)
    assert [key async for key in providers[0].client.scan_iter(match=f"{redis_prefix}:*")] == []
