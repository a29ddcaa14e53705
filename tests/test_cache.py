"""The cache decorator: expiry, None results, exceptions, key templates and single flight."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from premier import cache
from premier.errors import ConfigError
from premier.features.cache import SingleFlight
from premier.providers import AsyncInMemoryCache


def test_sync_function_keeps_name_signature_and_caches(provider):
    calls = []

    def square(x: int, *, offset: int = 0) -> int:
        calls.append(x)
        return x * x + offset

    cached = cache(expire_s=60, provider=provider)(square)
    assert cached.__name__ == "square"
    assert inspect.signature(cached) == inspect.signature(square)
    assert not inspect.iscoroutinefunction(cached)
    assert cached(3) == 9 and cached(3) == 9
    assert cached(4) == 16
    assert cached(3, offset=1) == 10
    assert calls == [3, 4, 3]


async def test_async_function_keeps_name_signature_and_caches(provider):
    calls = []

    async def load(user_id: int) -> dict:
        calls.append(user_id)
        return {"id": user_id}

    cached = cache(expire_s=60, provider=provider)(load)
    assert cached.__name__ == "load"
    assert inspect.signature(cached) == inspect.signature(load)
    assert inspect.iscoroutinefunction(cached)
    assert await cached(1) == {"id": 1}
    assert await cached(1) == {"id": 1}
    assert calls == [1]


async def test_expire_s_is_honoured(provider, clock):
    calls = []

    @cache(expire_s=10, provider=provider)
    async def load():
        calls.append(clock())
        return len(calls)

    assert await load() == 1
    clock.advance(9.999)
    assert await load() == 1
    clock.advance(0.001)
    assert await load() == 2  # expired exactly expire_s after it was stored
    assert len(calls) == 2


def test_expire_s_is_honoured_for_sync_functions(provider, clock):
    calls = []

    @cache(expire_s=5, provider=provider)
    def load():
        calls.append(1)
        return len(calls)

    assert load() == 1
    clock.advance(4)
    assert load() == 1
    clock.advance(1)
    assert load() == 2


def test_no_expiry_by_default(provider, clock):
    calls = []

    @cache(provider=provider)
    def load():
        calls.append(1)
        return "v"

    load()
    clock.advance(365 * 86400)
    load()
    assert len(calls) == 1


async def test_none_results_are_cached(provider):
    calls = []

    @cache(expire_s=60, provider=provider)
    async def lookup(name):
        calls.append(name)
        return None

    assert await lookup("missing") is None
    assert await lookup("missing") is None
    assert calls == ["missing"]


def test_none_results_are_cached_for_sync_functions(provider):
    calls = []

    @cache(expire_s=60, provider=provider)
    def lookup():
        calls.append(1)

    lookup()
    lookup()
    assert len(calls) == 1


async def test_exceptions_are_not_cached(provider):
    outcomes = [ValueError("first"), "second"]

    @cache(expire_s=60, provider=provider)
    async def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with pytest.raises(ValueError, match="first"):
        await flaky()
    assert await flaky() == "second"
    assert await flaky() == "second"
    assert outcomes == []


def test_exceptions_are_not_cached_for_sync_functions(provider):
    outcomes = [KeyError("first"), "second"]

    @cache(expire_s=60, provider=provider)
    def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with pytest.raises(KeyError):
        flaky()
    assert flaky() == "second"
    assert flaky() == "second"


async def test_cache_key_template_fills_from_arguments_and_defaults(provider):
    calls = []

    @cache(expire_s=60, cache_key="user:{user_id}:{fmt}", keyspace="app", provider=provider)
    async def profile(user_id, fmt="json", *, trace_id=None):
        calls.append((user_id, fmt, trace_id))
        return f"{user_id}/{fmt}/{trace_id}"

    assert await profile(1) == "1/json/None"
    # Same template values: same entry, whatever the other arguments or how they were passed.
    assert await profile(user_id=1, trace_id="t") == "1/json/None"
    assert await profile(1, "json") == "1/json/None"
    assert await profile(1, fmt="xml") == "1/xml/None"
    assert calls == [(1, "json", None), (1, "xml", None)]
    assert await provider.get("app:cache:user:1:json") == ("1/json/None",)
    assert await provider.get("app:cache:user:1:xml") == ("1/xml/None",)


def test_cache_key_callable(provider):
    calls = []

    @cache(expire_s=60, cache_key=lambda user, **_: f"u:{user['id']}", provider=provider)
    def render(user, *, lang="en"):
        calls.append(lang)
        return lang

    assert render({"id": 1}, lang="en") == "en"
    assert render({"id": 1}, lang="fr") == "en"  # the key ignores lang
    assert calls == ["en"]


def test_unknown_template_name_is_a_config_error_at_decoration_time():
    def profile(user_id):
        return user_id

    with pytest.raises(ConfigError, match=r"cache\.cache_key: names 'userid'") as info:
        cache(expire_s=60, cache_key="user:{userid}")(profile)
    assert "not a parameter" in str(info.value)


@pytest.mark.parametrize("expire_s", [0, -5])
def test_non_positive_expiry_is_a_config_error(expire_s):
    with pytest.raises(ConfigError, match=r"cache\.expire_s: must be greater than 0"):
        cache(expire_s=expire_s)


async def test_values_live_under_the_keyspace_and_clear_forgets_them(provider):
    calls = []

    @cache(expire_s=60, keyspace="ks-one", provider=provider)
    async def one():
        calls.append("one")
        return 1

    @cache(expire_s=60, keyspace="ks-two", provider=provider)
    async def two():
        calls.append("two")
        return 2

    await one()
    await two()
    await provider.clear("ks-one:")
    await one()
    await two()
    assert calls == ["one", "two", "one"]
    await one.cache.clear()
    await one()
    assert calls == ["one", "two", "one", "one"]


def test_default_provider_is_a_bounded_memory_cache():
    @cache(expire_s=60)
    def work():
        return 1

    assert isinstance(work.cache.provider, AsyncInMemoryCache)


async def test_50_concurrent_async_misses_call_the_function_once(provider):
    calls = 0

    @cache(expire_s=60, provider=provider)
    async def slow(key):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return f"value-{key}"

    results = await asyncio.gather(*(slow("k") for _ in range(50)))
    assert results == ["value-k"] * 50
    assert calls == 1


async def test_concurrent_async_misses_share_a_failure_and_a_later_call_retries(provider):
    calls = 0

    @cache(expire_s=60, provider=provider)
    async def fails_once():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("down")
        return "up"

    results = await asyncio.gather(*(fails_once() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    assert await fails_once() == "up"


async def test_a_cancelled_computation_lets_a_waiting_caller_compute(provider):
    release = asyncio.Event()
    calls = 0

    @cache(expire_s=60, provider=provider)
    async def slow():
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    first = asyncio.create_task(slow())
    await asyncio.sleep(0)
    second = asyncio.create_task(slow())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(second, 1) == "value"
    assert calls == 2


async def test_single_flight_runs_distinct_keys_independently():
    flights = SingleFlight()
    order = []

    async def compute(name):
        order.append(name)
        await asyncio.sleep(0.01)
        return name

    results = await asyncio.gather(flights.run("a", lambda: compute("a")), flights.run("b", lambda: compute("b")))
    assert results == ["a", "b"]
    assert sorted(order) == ["a", "b"]


def test_concurrent_thread_misses_call_the_function_once(provider):
    calls = 0
    calls_lock = threading.Lock()

    @cache(expire_s=60, provider=provider)
    def slow():
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)
        return "value"

    results = []
    barrier = threading.Barrier(16)

    def call():
        barrier.wait()
        results.append(slow())

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["value"] * 16
    assert calls == 1


def test_concurrent_thread_misses_share_a_failure(provider):
    calls = 0
    started = threading.Event()

    @cache(expire_s=60, provider=provider)
    def fails():
        nonlocal calls
        calls += 1
        started.set()
        time.sleep(0.1)  # the other callers join the flight meanwhile
        raise ConnectionError("down")

    errors = []

    def call():
        try:
            fails()
        except ConnectionError as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    started.wait(1)
    others = [threading.Thread(target=call) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert len(errors) == 6
    assert calls == 1


class AwaitOnlyProvider:
    def __init__(self):
        self.data = {}

    async def get(self, key):
        await asyncio.sleep(0)
        return self.data.get(key)

    async def set(self, key, value, *, ttl=None):
        self.data[key] = value

    async def clear(self, prefix=""):
        self.data = {k: v for k, v in self.data.items() if not k.startswith(prefix)}


async def test_async_function_with_an_awaited_provider():
    store = AwaitOnlyProvider()
    calls = []

    @cache(expire_s=60, cache_key="k:{x}", keyspace="ks", provider=store)
    async def work(x):
        calls.append(x)
        return None

    assert await work(1) is None
    assert await work(1) is None
    assert calls == [1]
    assert store.data == {"ks:cache:k:1": (None,)}


def test_sync_function_needs_an_in_process_provider():
    with pytest.raises(TypeError, match="in-process provider"):

        @cache(expire_s=60, provider=AwaitOnlyProvider())
        def work():
            pass
