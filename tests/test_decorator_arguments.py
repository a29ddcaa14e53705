"""Decorator arguments are checked when the decorator is applied: a mistake is a ConfigError naming the
option, never a crash (or a silently shared entry) at the first call."""

from __future__ import annotations

import sys
import threading

import pytest

from premier import ConfigError, cache, circuit_breaker, rate_limit, retry
from premier.errors import CircuitOpenError


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: rate_limit(1, 1, key=5), "rate_limit.key"),
        (lambda: rate_limit(1, 1, keyspace=None), "rate_limit.keyspace"),
        (lambda: cache(cache_key=""), "cache.cache_key"),
        (lambda: cache(cache_key=5), "cache.cache_key"),
        (lambda: cache(keyspace=""), "cache.keyspace"),
        (lambda: retry(wait=None), "retry.wait"),
        (lambda: retry(wait=float("nan")), "retry.wait"),
        (lambda: circuit_breaker(expected_exception=5), "circuit_breaker.expected_exception"),
        (lambda: circuit_breaker(expected_exception="..x"), "circuit_breaker.expected_exception"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(make, option) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.issues[0].path == option


def test_a_malformed_cache_key_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cache\.cache_key"):
        cache(cache_key="{")(lambda x: x)


async def test_a_key_function_may_return_a_number() -> None:
    @rate_limit(quota=1, duration=60, key=lambda user_id: user_id)
    async def fetch_user(user_id: int) -> int:
        return user_id

    assert await fetch_user(1) == 1
    assert await fetch_user(2) == 2  # its own quota


def test_a_generator_of_waits_is_read_once_and_kept() -> None:
    calls = []

    @retry(max_attempts=3, wait=(w for w in [0.0, 0.0]))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert flaky() == "ok"


def test_exception_names_work_as_expected_exception() -> None:
    @circuit_breaker(failure_threshold=1, expected_exception=("ValueError",))
    def broken() -> None:
        raise ValueError

    with pytest.raises(ValueError):
        broken()
    with pytest.raises(CircuitOpenError):
        broken()


def test_half_open_probes_are_bounded_across_threads() -> None:
    now = [0.0]
    inside = threading.Semaphore(0)
    release = threading.Event()
    probes = []

    @circuit_breaker(failure_threshold=1, recovery_timeout=10, half_open_max_calls=1, clock=lambda: now[0])
    def service(fail: bool) -> None:
        if fail:
            raise ConnectionError
        probes.append(1)
        inside.release()
        release.wait(5)

    with pytest.raises(ConnectionError):
        service(True)
    now[0] = 10.0  # half-open: exactly one probe may run
    refused = []

    def call() -> None:
        try:
            service(False)
        except CircuitOpenError:
            refused.append(1)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # make the threads interleave as much as possible
    try:
        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        assert inside.acquire(timeout=5)
        release.set()
        for thread in threads:
            thread.join(5)
    finally:
        sys.setswitchinterval(interval)
    assert len(probes) == 1
    assert len(refused) == 15
