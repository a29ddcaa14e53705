"""The circuit breaker: the state machine driven with chosen times, and the decorator on a fake clock."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from premier import CircuitBreaker, CircuitOpenError, circuit_breaker
from premier.config import CircuitBreakerConfig
from premier.errors import ConfigError, PremierError


class Backend:
    """A callee whose next outcomes the test decides; counts the calls that reached it."""

    def __init__(self):
        self.calls = 0
        self.failing = False
        self.error = ConnectionError

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.failing:
            raise self.error("backend down")
        return "ok"


def breaker_for(backend, clock, **options):
    options.setdefault("failure_threshold", 3)
    options.setdefault("recovery_timeout", 30)

    @circuit_breaker(clock=clock, **options)
    def call():
        return backend()

    return call


def fail(call, times, error=ConnectionError):
    for _ in range(times):
        with pytest.raises(error):
            call()


# ---------------------------------------------------------------------------------------------------
# the decorator


def test_opens_after_failure_threshold_consecutive_failures(clock):
    backend = Backend()
    call = breaker_for(backend, clock)
    backend.failing = True
    fail(call, 3)
    assert backend.calls == 3
    with pytest.raises(CircuitOpenError) as info:
        call()
    assert backend.calls == 3  # refused without calling the backend
    assert info.value.retry_after == pytest.approx(30)
    assert isinstance(info.value, PremierError)
    clock.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        call()
    assert info.value.retry_after == pytest.approx(18)


def test_a_success_resets_the_consecutive_failure_count(clock):
    backend = Backend()
    call = breaker_for(backend, clock)
    backend.failing = True
    fail(call, 2)
    backend.failing = False
    assert call() == "ok"
    backend.failing = True
    fail(call, 2)
    backend.failing = False
    assert call() == "ok"  # never 3 failures in a row: still closed
    assert call.breaker.state(clock()) == "closed"


def test_half_open_after_recovery_timeout_and_a_successful_probe_closes(clock):
    backend = Backend()
    call = breaker_for(backend, clock)
    backend.failing = True
    fail(call, 3)
    clock.advance(29.999)
    with pytest.raises(CircuitOpenError):
        call()
    clock.advance(0.001)
    assert call.breaker.state(clock()) == "half_open"
    backend.failing = False
    assert call() == "ok"
    assert call.breaker.state(clock()) == "closed"
    assert [call() for _ in range(5)] == ["ok"] * 5


def test_a_failed_probe_reopens_for_a_full_recovery_timeout(clock):
    backend = Backend()
    call = breaker_for(backend, clock)
    backend.failing = True
    fail(call, 3)
    clock.advance(30)
    fail(call, 1)  # the probe reached the backend and failed
    assert backend.calls == 4
    with pytest.raises(CircuitOpenError) as info:
        call()
    assert info.value.retry_after == pytest.approx(30)
    assert backend.calls == 4


async def test_half_open_admits_a_bounded_number_of_probes(clock):
    release = asyncio.Event()
    calls = 0
    failing = True

    @circuit_breaker(failure_threshold=1, recovery_timeout=10, half_open_max_calls=2, clock=clock)
    async def backend():
        nonlocal calls
        calls += 1
        if failing:
            raise ConnectionError
        await release.wait()
        return "ok"

    with pytest.raises(ConnectionError):
        await backend()
    failing = False
    clock.advance(10)
    probes = [asyncio.create_task(backend()) for _ in range(2)]
    await asyncio.sleep(0)
    assert calls == 3
    with pytest.raises(CircuitOpenError) as info:
        await asyncio.wait_for(backend(), 1)  # both probes are out
    assert 0 < info.value.retry_after <= 10
    assert calls == 3
    release.set()
    assert await asyncio.gather(*probes) == ["ok", "ok"]
    assert await backend() == "ok"


async def test_a_cancelled_probe_frees_its_place(clock):
    calls = 0

    @circuit_breaker(failure_threshold=1, recovery_timeout=10, clock=clock)
    async def backend(block):
        nonlocal calls
        calls += 1
        if block is None:
            raise ConnectionError
        await block.wait()
        return "ok"

    with pytest.raises(ConnectionError):
        await backend(None)
    clock.advance(10)
    probe = asyncio.create_task(backend(asyncio.Event()))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert backend.breaker.state(clock()) == "half_open"  # cancellation is no verdict
    done = asyncio.Event()
    done.set()
    assert await backend(done) == "ok"


def test_exceptions_not_expected_do_not_count(clock):
    backend = Backend()
    call = breaker_for(backend, clock, expected_exception=ConnectionError)
    backend.failing = True
    backend.error = ValueError
    fail(call, 10, ValueError)
    assert call.breaker.state(clock()) == "closed"
    backend.error = ConnectionError
    fail(call, 3)
    with pytest.raises(CircuitOpenError):
        call()


def test_expected_exception_by_name(clock):
    backend = Backend()
    call = breaker_for(backend, clock, expected_exception="ConnectionError")
    backend.failing = True
    backend.error = ConnectionResetError
    fail(call, 3, ConnectionResetError)
    with pytest.raises(CircuitOpenError):
        call()


async def test_async_function_keeps_its_signature_and_opens(clock):
    calls = 0

    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError(url)

    call = circuit_breaker(failure_threshold=2, recovery_timeout=5, clock=clock)(fetch)
    assert inspect.iscoroutinefunction(call)
    assert inspect.signature(call) == inspect.signature(fetch)
    assert call.__name__ == "fetch"
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await call("http://x")
    with pytest.raises(CircuitOpenError) as info:
        await call("http://x")
    assert info.value.retry_after == pytest.approx(5)
    assert calls == 2


def test_sync_function_keeps_its_signature(clock):
    def compute(a: int, b: int = 2) -> int:
        return a + b

    call = circuit_breaker(clock=clock)(compute)
    assert inspect.signature(call) == inspect.signature(compute)
    assert not inspect.iscoroutinefunction(call)
    assert call(1) == 3


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure_threshold": 0}, "circuit_breaker.failure_threshold"),
        ({"recovery_timeout": 0}, "circuit_breaker.recovery_timeout"),
        ({"recovery_timeout": -1.5}, "circuit_breaker.recovery_timeout"),
        ({"half_open_max_calls": 0}, "circuit_breaker.half_open_max_calls"),
    ],
)
def test_invalid_options_are_config_errors(options, field):
    with pytest.raises(ConfigError) as info:
        circuit_breaker(**options)
    assert f"{field}: must be greater than 0" in str(info.value)


def test_unknown_expected_exception_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"circuit_breaker\.expected_exception: names no importable .*'NoSuchError'"):
        circuit_breaker(expected_exception="NoSuchError")


# ---------------------------------------------------------------------------------------------------
# the state machine


class TestCircuitBreakerStateMachine:
    def test_closed_until_threshold(self):
        breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=10)
        for now in (0.0, 1.0):
            assert breaker.before_call(now) == 0
            breaker.on_failure(now)
            assert breaker.state(now) == "closed"
        breaker.on_failure(2.0)
        assert breaker.state(2.0) == "open"
        assert breaker.before_call(2.0) == pytest.approx(10)
        assert breaker.before_call(7.0) == pytest.approx(5)

    def test_open_to_half_open_at_exactly_recovery_timeout(self):
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10)
        breaker.on_failure(100.0)
        assert breaker.state(109.999) == "open"
        assert breaker.state(110.0) == "half_open"

    def test_half_open_probes_are_bounded(self):
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10, half_open_max_calls=2)
        breaker.on_failure(0.0)
        assert breaker.before_call(10.0) == 0
        assert breaker.before_call(10.0) == 0
        wait = breaker.before_call(10.0)
        assert wait > 0
        breaker.on_abandoned()
        assert breaker.before_call(10.5) == 0  # the abandoned probe's place is free again

    def test_probe_success_closes_and_probe_failure_reopens(self):
        breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=10)
        breaker.on_failure(0.0)
        breaker.on_failure(0.0)
        assert breaker.before_call(10.0) == 0
        breaker.on_failure(10.5)  # one failed probe reopens at once, whatever the threshold
        assert breaker.state(10.5) == "open"
        assert breaker.before_call(15.5) == pytest.approx(5)
        assert breaker.before_call(20.5) == 0
        breaker.on_success(20.6)
        assert breaker.state(20.6) == "closed"
        breaker.on_failure(21.0)
        assert breaker.state(21.0) == "closed"  # the failure count started again from 0

    def test_a_new_half_open_period_gets_fresh_probes(self):
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10)
        breaker.on_failure(0.0)
        assert breaker.before_call(10.0) == 0
        breaker.on_failure(10.0)
        assert breaker.before_call(20.0) == 0

    def test_state_changes_are_reported_and_logged(self, caplog):
        changes = []
        breaker = CircuitBreaker(
            failure_threshold=1, recovery_timeout=10, name="users", on_state_change=lambda *c: changes.append(c)
        )
        with caplog.at_level(logging.INFO, logger="premier"):
            breaker.on_failure(0.0)
            breaker.before_call(10.0)
            breaker.on_success(10.0)
        assert changes == [
            ("users", "closed", "open"),
            ("users", "open", "half_open"),
            ("users", "half_open", "closed"),
        ]
        opened = [r for r in caplog.records if "closed -> open" in r.getMessage()]
        assert [r.levelno for r in opened] == [logging.WARNING]
        assert "users" in opened[0].getMessage()

    def test_from_config(self):
        config = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=5.0, half_open_max_calls=3)
        breaker = CircuitBreaker.from_config(config, name="route")
        assert (breaker.failure_threshold, breaker.recovery_timeout, breaker.half_open_max_calls) == (2, 5.0, 3)
        assert breaker.name == "route"
