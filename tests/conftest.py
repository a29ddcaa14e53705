"""Fixtures shared by Premier's tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from premier.providers import AsyncInMemoryCache


class FakeClock:
    """A clock for tests: ``clock()`` returns the current fake time in seconds; nothing moves it but
    :meth:`advance` and :meth:`set`, so windows, buckets and breakers are tested without sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def set(self, now: float) -> float:
        self.now = float(now)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    # A round start (a multiple of every window length the tests use) keeps fixed-window edges exact.
    return FakeClock(1_000_000.0)


@pytest.fixture
def provider(clock: FakeClock) -> AsyncInMemoryCache:
    """An in-memory provider running on the fake clock."""
    return AsyncInMemoryCache(clock=clock)


# -- Redis -----------------------------------------------------------------------------------------
# Tests marked `redis` use the Redis server at PREMIER_TEST_REDIS_URL (default 127.0.0.1:6379, db 0),
# each under its own key prefix, removed after the test. Without a server they skip with the reason;
# with PREMIER_REQUIRE_REDIS=1 (as CI sets) a skipped Redis test is a failure instead.

REDIS_URL = os.environ.get("PREMIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("PREMIER_REQUIRE_REDIS") == "1"


def _redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install -e '.[dev]')"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError as error:
        return f"no Redis server answers at {REDIS_URL} ({error})"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL; skips the test (fails it, under PREMIER_REQUIRE_REDIS=1) without one."""
    problem = _redis_problem()
    if problem:
        if REQUIRE_REDIS:
            pytest.fail(f"PREMIER_REQUIRE_REDIS=1 but {problem}")
        pytest.skip(problem)
    return REDIS_URL


@pytest.fixture
def own_redis(redis_url: str) -> Iterator[Any]:
    """A redis-server of the test's own, on a free port (``_servers.RedisServer``): its data and command
    statistics are the test's alone, and it may be stopped and restarted."""
    import shutil

    from _servers import redis_server

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix (use it as the keyspace) that no other test uses; its keys are deleted afterwards."""
    import redis

    prefix = f"premier-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_REDIS and report.skipped and item.get_closest_marker("redis") is not None:
        report.outcome = "failed"
        report.longrepr = f"PREMIER_REQUIRE_REDIS=1: a Redis test may not skip ({report.longrepr})"
