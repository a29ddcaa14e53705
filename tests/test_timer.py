"""timeit and timeout (``from premier.timer import timeit, timeout``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time

import pytest

from premier.errors import ConfigError, PremierError, PremierTimeoutError
from premier.timer import timeit, timeout

# ---------------------------------------------------------------------------------------------------
# timeout


async def test_async_timeout_raises_premier_timeout_error_which_is_a_timeout_error():
    finished = []

    @timeout(seconds=0.05)
    async def slow():
        await asyncio.sleep(5)
        finished.append(True)

    started = time.perf_counter()
    with pytest.raises(PremierTimeoutError) as info:
        await slow()
    assert time.perf_counter() - started < 1
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, PremierError)
    assert info.value.seconds == 0.05
    assert "slow" in str(info.value) and "0.05s" in str(info.value)
    await asyncio.sleep(0)
    assert finished == []  # the coroutine was cancelled, not left running


async def test_async_timeout_is_caught_as_builtin_timeout_error():
    @timeout(seconds=0.01)
    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await slow()


async def test_async_timeout_passes_results_and_exceptions_through():
    @timeout(seconds=1)
    async def quick(x, *, y=1):
        return x + y

    @timeout(seconds=1)
    async def broken():
        raise KeyError("k")

    assert await quick(1, y=2) == 3
    with pytest.raises(KeyError):
        await broken()


async def test_async_functions_own_timeout_error_passes_unchanged():
    # The function's own TimeoutError (say, from its HTTP client) is not reported as the deadline's.
    own = TimeoutError("upstream read timed out")

    @timeout(seconds=5)
    async def upstream_timed_out():
        raise own

    with pytest.raises(TimeoutError) as info:
        await upstream_timed_out()
    assert info.value is own
    assert not isinstance(info.value, PremierTimeoutError)


def test_sync_timeout_raises_while_the_function_runs_on():
    release = threading.Event()
    finished = threading.Event()

    @timeout(seconds=0.05)
    def slow():
        release.wait(5)
        finished.set()
        return "late"

    started = time.perf_counter()
    with pytest.raises(PremierTimeoutError) as info:
        slow()
    assert time.perf_counter() - started < 1
    assert isinstance(info.value, TimeoutError)
    assert info.value.seconds == 0.05
    release.set()  # let the worker thread finish
    assert finished.wait(1)


def test_sync_timeout_passes_results_and_exceptions_through():
    @timeout(seconds=1)
    def quick(x, *, y=1):
        return x * y

    @timeout(seconds=1)
    def broken():
        raise ValueError("bad")

    assert quick(3, y=4) == 12
    with pytest.raises(ValueError, match="bad"):
        broken()


def test_timeout_keeps_name_and_signature():
    def f(a: int, b: str = "x") -> str:
        return b * a

    async def g(a: int) -> int:
        return a

    assert inspect.signature(timeout(seconds=1)(f)) == inspect.signature(f)
    assert timeout(seconds=1)(f).__name__ == "f"
    assert inspect.iscoroutinefunction(timeout(seconds=1)(g))
    assert not inspect.iscoroutinefunction(timeout(seconds=1)(f))


@pytest.mark.parametrize("seconds", [0, -1])
def test_non_positive_seconds_are_config_errors(seconds):
    with pytest.raises(ConfigError, match=r"timeout\.seconds: must be greater than 0"):
        timeout(seconds=seconds)


def test_seconds_of_the_wrong_type_are_config_errors():
    with pytest.raises(ConfigError, match=r"timeout\.seconds: must be a number, got the string '5'"):
        timeout(seconds="5")


# ---------------------------------------------------------------------------------------------------
# timeit


def premier_warnings(caplog):
    return [r for r in caplog.records if r.name == "premier" and r.levelno == logging.WARNING]


def test_timeit_logs_a_warning_only_over_the_threshold(caplog):
    @timeit(log_threshold=0.02)
    def slow():
        time.sleep(0.03)
        return "slow"

    @timeit(log_threshold=0.02)
    def fast():
        return "fast"

    with caplog.at_level(logging.INFO, logger="premier"):
        assert fast() == "fast"
        assert premier_warnings(caplog) == []
        assert slow() == "slow"
    [record] = premier_warnings(caplog)
    message = record.getMessage()
    assert "slow" in message and "threshold 0.020s" in message


async def test_timeit_on_async_functions(caplog):
    @timeit(log_threshold=0.02)
    async def slow():
        await asyncio.sleep(0.03)
        return 1

    @timeit(log_threshold=0.02)
    async def fast():
        return 2

    assert inspect.iscoroutinefunction(slow)
    with caplog.at_level(logging.WARNING, logger="premier"):
        assert await fast() == 2
        assert premier_warnings(caplog) == []
        assert await slow() == 1
    assert len(premier_warnings(caplog)) == 1


def test_timeit_bare_uses_the_default_threshold(caplog):
    @timeit
    def quick(x: int) -> int:
        return x

    @timeit
    def sluggish():
        time.sleep(0.11)

    assert quick.__name__ == "quick"
    assert inspect.signature(quick) == inspect.signature(quick.__wrapped__)
    with caplog.at_level(logging.WARNING, logger="premier"):
        assert quick(5) == 5
        assert premier_warnings(caplog) == []
        sluggish()
    [record] = premier_warnings(caplog)
    assert "sluggish" in record.getMessage() and "threshold 0.100s" in record.getMessage()


def test_timeit_times_exceptions_and_lets_them_through(caplog):
    @timeit(log_threshold=0)
    def broken():
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="premier"), pytest.raises(RuntimeError, match="boom"):
        broken()
    assert len(premier_warnings(caplog)) == 1


def test_timeit_can_log_to_another_logger(caplog):
    mine = logging.getLogger("tests.mine")

    @timeit(log_threshold=0, logger=mine)
    def work():
        return None

    with caplog.at_level(logging.WARNING):
        work()
    assert [r.name for r in caplog.records] == ["tests.mine"]


def test_timeit_negative_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match=r"monitoring\.log_threshold"):
        timeit(log_threshold=-1)
