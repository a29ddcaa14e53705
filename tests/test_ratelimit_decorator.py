"""The rate_limit decorator and RateLimiter: sync and async functions, keys, keyspaces, atomicity."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from premier import RateLimiter, RateLimitExceeded, rate_limit
from premier.config import RateLimitConfig
from premier.errors import ConfigError
from premier.providers import AsyncInMemoryCache

NON_QUEUEING = ["fixed_window", "sliding_window", "token_bucket"]


def test_sync_function_keeps_name_signature_and_stays_sync(provider):
    def greet(name: str, *, punctuation: str = "!") -> str:
        """Say hello."""
        return f"hello {name}{punctuation}"

    limited = rate_limit(quota=5, duration=60, provider=provider)(greet)
    assert limited.__name__ == "greet"
    assert limited.__doc__ == "Say hello."
    assert inspect.signature(limited) == inspect.signature(greet)
    assert not inspect.iscoroutinefunction(limited)
    assert limited("ann", punctuation="?") == "hello ann?"


async def test_async_function_keeps_name_signature_and_stays_a_coroutine_function(provider):
    async def fetch(user_id: int, verbose: bool = False) -> dict:
        return {"id": user_id, "verbose": verbose}

    limited = rate_limit(quota=5, duration=60, provider=provider)(fetch)
    assert limited.__name__ == "fetch"
    assert inspect.signature(limited) == inspect.signature(fetch)
    assert inspect.iscoroutinefunction(limited)
    assert await limited(7, verbose=True) == {"id": 7, "verbose": True}


@pytest.mark.parametrize("algorithm", NON_QUEUEING)
def test_sync_over_quota_raises_with_retry_after(provider, clock, algorithm):
    calls = []

    @rate_limit(quota=2, duration=10, algorithm=algorithm, provider=provider)
    def work():
        calls.append(1)
        return "done"

    assert work() == "done" and work() == "done"
    with pytest.raises(RateLimitExceeded) as info:
        work()
    assert len(calls) == 2  # the rejected call did not run
    assert info.value.retry_after > 0
    assert str(info.value) == "Rate limit exceeded"
    clock.advance(info.value.retry_after)
    assert work() == "done"


async def test_async_over_quota_raises_with_exact_retry_after(provider, clock):
    @rate_limit(quota=2, duration=10, provider=provider, error_message="slow down")
    async def work():
        return "done"

    await work()
    await work()
    clock.advance(4)
    with pytest.raises(RateLimitExceeded, match="slow down") as info:
        await work()
    assert info.value.retry_after == pytest.approx(6)  # fixed window: the clock started on an edge
    clock.advance(6)
    assert await work() == "done"


def test_key_function_gives_each_key_its_own_quota(provider):
    @rate_limit(quota=1, duration=60, key=lambda user, **_: f"user:{user}", provider=provider)
    def call(user, *, payload=None):
        return user

    assert call("ann") == "ann"
    assert call("bob", payload=1) == "bob"
    with pytest.raises(RateLimitExceeded) as info:
        call("ann")
    assert info.value.key.endswith("user:ann")
    with pytest.raises(RateLimitExceeded):
        call("bob")


def test_fixed_key_string_is_shared_across_functions_in_one_keyspace(provider):
    @rate_limit(quota=2, duration=60, key="shared", provider=provider)
    def first():
        return 1

    @rate_limit(quota=2, duration=60, key="shared", provider=provider)
    def second():
        return 2

    # Different functions count separately even with the same key string: the name is in the prefix.
    assert [first(), first(), second(), second()] == [1, 1, 2, 2]


def _make_limited(provider, keyspace):
    @rate_limit(quota=1, duration=60, keyspace=keyspace, provider=provider)
    def handler():
        return keyspace

    return handler


def test_keyspaces_do_not_interfere(provider):
    # Both functions have the same module and qualified name: only the keyspace tells them apart.
    in_a = _make_limited(provider, "app-a")
    in_a_again = _make_limited(provider, "app-a")
    in_b = _make_limited(provider, "app-b")
    assert in_a() == "app-a"
    with pytest.raises(RateLimitExceeded):
        in_a_again()  # same keyspace, same name: same counter
    assert in_b() == "app-b"


async def test_keys_live_under_the_keyspace(provider):
    limited = _make_limited(provider, "app-a")
    limited()
    with pytest.raises(RateLimitExceeded) as info:
        limited()
    assert info.value.key.startswith("app-a:rl:")
    await provider.clear("app-b:")
    with pytest.raises(RateLimitExceeded):
        limited()
    await provider.clear("app-a:")
    assert limited() == "app-a"


def test_invalid_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"rate_limit\.quota: must be greater than 0"):
        rate_limit(quota=0, duration=1)
    with pytest.raises(ConfigError, match=r"rate_limit\.duration"):
        rate_limit(quota=1, duration=-1)
    with pytest.raises(ConfigError, match=r"rate_limit\.algorithm.*did you mean 'token_bucket'"):
        rate_limit(quota=1, duration=1, algorithm="token_buckets")
    with pytest.raises(ConfigError, match=r"rate_limit\.bucket_size"):
        rate_limit(quota=1, duration=1, algorithm="leaky_bucket", bucket_size=0)


class AwaitOnlyProvider:
    """A provider that can only be awaited, like a network backend."""

    def __init__(self, clock):
        self.inner = AsyncInMemoryCache(clock=clock)

    async def acquire(self, key, algorithm, cost=1):
        await asyncio.sleep(0)
        return self.inner.acquire_nowait(key, algorithm, cost)


def test_sync_function_needs_an_in_process_provider(clock):
    with pytest.raises(TypeError, match="in-process provider"):

        @rate_limit(quota=1, duration=1, provider=AwaitOnlyProvider(clock))
        def work():
            pass


async def test_async_function_works_with_an_awaited_provider(clock):
    @rate_limit(quota=2, duration=60, provider=AwaitOnlyProvider(clock))
    async def work():
        return "ok"

    assert [await work(), await work()] == ["ok", "ok"]
    with pytest.raises(RateLimitExceeded):
        await work()


async def test_rate_limiter_check_and_check_nowait(clock):
    config = RateLimitConfig(quota=2, duration=10)
    local = RateLimiter(config, provider=AsyncInMemoryCache(clock=clock), keyspace="ks", name="route")
    assert local.is_local
    assert local.prefix.startswith("ks:rl:route:")
    assert local.check_nowait("client").remaining == 1
    assert (await local.check("client")).remaining == 0
    assert not local.check_nowait("client").allowed
    assert local.check_nowait("other").allowed

    remote = RateLimiter(config, provider=AwaitOnlyProvider(clock))
    assert not remote.is_local
    with pytest.raises(TypeError, match="use check"):
        remote.check_nowait()
    assert (await remote.check()).allowed


# ---------------------------------------------------------------------------------------------------
# atomicity


@pytest.mark.parametrize("algorithm", NON_QUEUEING)
async def test_1000_concurrent_async_calls_admit_exactly_the_quota(provider, algorithm):
    @rate_limit(quota=10, duration=60, algorithm=algorithm, provider=provider)
    async def work():
        await asyncio.sleep(0)
        return True

    results = await asyncio.gather(*(work() for _ in range(1000)), return_exceptions=True)
    assert sum(r is True for r in results) == 10
    assert sum(isinstance(r, RateLimitExceeded) for r in results) == 990


@pytest.mark.parametrize("algorithm", NON_QUEUEING)
async def test_1000_concurrent_calls_through_an_awaited_provider_admit_exactly_the_quota(clock, algorithm):
    @rate_limit(quota=10, duration=60, algorithm=algorithm, provider=AwaitOnlyProvider(clock))
    async def work():
        return True

    results = await asyncio.gather(*(work() for _ in range(1000)), return_exceptions=True)
    assert sum(r is True for r in results) == 10


async def test_1000_concurrent_async_calls_leaky_bucket_queues_exactly_bucket_size(provider):
    # One call every 10 ms; 5 may wait, so the last admitted call waits 50 ms (real time).
    started: list[int] = []

    @rate_limit(quota=100, duration=1, algorithm="leaky_bucket", bucket_size=5, provider=provider)
    async def work(i):
        started.append(i)
        return True

    begin = time.perf_counter()
    results = await asyncio.gather(*(work(i) for i in range(1000)), return_exceptions=True)
    elapsed = time.perf_counter() - begin
    assert sum(r is True for r in results) == 1 + 5
    assert sum(isinstance(r, RateLimitExceeded) for r in results) == 994
    assert started == [0, 1, 2, 3, 4, 5]  # admitted in arrival order, each after its delay
    assert elapsed >= 0.045


@pytest.mark.parametrize("algorithm", NON_QUEUEING)
def test_8_threads_of_200_sync_calls_admit_exactly_the_quota(provider, algorithm):
    @rate_limit(quota=10, duration=60, algorithm=algorithm, provider=provider)
    def work():
        return True

    admitted = []
    rejected = []
    barrier = threading.Barrier(8)

    def hammer():
        barrier.wait()
        for _ in range(200):
            try:
                work()
            except RateLimitExceeded:
                rejected.append(1)
            else:
                admitted.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 10
    assert len(rejected) == 8 * 200 - 10


def test_8_threads_sync_leaky_bucket_admits_one_plus_bucket_size(provider):
    @rate_limit(quota=1000, duration=1, algorithm="leaky_bucket", bucket_size=4, provider=provider)
    def work():
        return True

    admitted = []
    barrier = threading.Barrier(8)

    def hammer():
        barrier.wait()
        for _ in range(200):
            try:
                work()
            except RateLimitExceeded:
                pass
            else:
                admitted.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 1 + 4


@pytest.mark.parametrize("algorithm", NON_QUEUEING)
def test_each_algorithm_recovers_after_its_window(provider, clock, algorithm):
    @rate_limit(quota=3, duration=6, algorithm=algorithm, provider=provider)
    def work():
        return True

    for _ in range(3):
        work()
    with pytest.raises(RateLimitExceeded):
        work()
    clock.advance(6)
    assert all(work() for _ in range(3))


def test_sync_leaky_bucket_sleeps_for_the_delay(provider):
    @rate_limit(quota=50, duration=1, algorithm="leaky_bucket", bucket_size=2, provider=provider)
    def work():
        return time.perf_counter()

    begin = time.perf_counter()
    finished = [work(), work(), work()]  # delays 0, 20 ms, 40 ms by the (frozen) fake clock
    assert finished[1] - finished[0] >= 0.019
    assert finished[2] - begin >= 0.039
    with pytest.raises(RateLimitExceeded) as info:
        work()
    assert info.value.retry_after == pytest.approx(0.02)
