"""The retry decorator (``from premier.retry import retry``) and its pure policy."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

import pytest

from premier.errors import ConfigError
from premier.retry import RetryPolicy, retry


@pytest.fixture
def sync_sleeps(monkeypatch):
    """The waits the sync decorator sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def async_sleeps(monkeypatch):
    """The waits the async decorator sleeps, recorded; the loop is still yielded to."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay, result=None):
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", record)
    return slept


def failing(times, error=ConnectionError, result="ok"):
    """A sync function failing ``times`` times, then returning ``result``; ``.calls`` counts calls."""

    def func():
        func.calls += 1
        if func.calls <= times:
            raise error(f"attempt {func.calls}")
        return result

    func.calls = 0
    return func


def test_signature_and_name_are_kept():
    def fetch(url: str, *, retries_left: int = 0) -> bytes:
        return b""

    async def afetch(url: str) -> bytes:
        return b""

    wrapped = retry(max_attempts=2, wait=0)(fetch)
    awrapped = retry(max_attempts=2, wait=0)(afetch)
    assert wrapped.__name__ == "fetch" and awrapped.__name__ == "afetch"
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert inspect.signature(awrapped) == inspect.signature(afetch)
    assert not inspect.iscoroutinefunction(wrapped)
    assert inspect.iscoroutinefunction(awrapped)


def test_sync_succeeds_after_failures_with_numeric_wait(sync_sleeps):
    func = failing(2)
    assert retry(max_attempts=3, wait=0.5)(func)() == "ok"
    assert func.calls == 3
    assert sync_sleeps == [0.5, 0.5]


async def test_async_succeeds_after_failures_with_numeric_wait(async_sleeps):
    calls = 0

    @retry(max_attempts=3, wait=2)
    async def work(x):
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow")
        return x * 2

    assert await work(21) == 42
    assert calls == 3
    assert async_sleeps == [2.0, 2.0]


def test_wait_list_shorter_than_attempts_reuses_its_last_value(sync_sleeps):
    func = failing(10)
    with pytest.raises(ConnectionError):
        retry(max_attempts=6, wait=[1, 2, 4])(func)()
    assert func.calls == 6
    assert sync_sleeps == [1, 2, 4, 4, 4]


async def test_async_wait_list(async_sleeps):
    calls = 0

    @retry(max_attempts=4, wait=[0.1, 0.3])
    async def work():
        nonlocal calls
        calls += 1
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await work()
    assert calls == 4
    assert async_sleeps == [0.1, 0.3, 0.3]


def test_wait_callable_gets_the_failed_attempt_number(sync_sleeps):
    seen = []

    def backoff(attempt):
        seen.append(attempt)
        return attempt * 0.25

    func = failing(10)
    with pytest.raises(ConnectionError):
        retry(max_attempts=4, wait=backoff)(func)()
    assert seen == [1, 2, 3]
    assert sync_sleeps == [0.25, 0.5, 0.75]


async def test_wait_callable_for_async_functions_with_real_tiny_waits():
    seen = []

    @retry(max_attempts=3, wait=lambda attempt: seen.append(attempt) or 0.001)
    async def work():
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await work()
    assert seen == [1, 2]


def test_only_listed_exceptions_are_retried(sync_sleeps):
    func = failing(5, error=ValueError)
    with pytest.raises(ValueError):
        retry(max_attempts=5, wait=0, exceptions=(ConnectionError, TimeoutError))(func)()
    assert func.calls == 1
    assert sync_sleeps == []

    subclass = failing(1, error=ConnectionRefusedError)  # a subclass of a listed exception is retried
    assert retry(max_attempts=5, wait=0, exceptions=ConnectionError)(subclass)() == "ok"
    assert subclass.calls == 2


def test_exceptions_may_be_named(sync_sleeps):
    func = failing(1, error=ConnectionResetError)
    assert retry(max_attempts=2, wait=0, exceptions=("ConnectionError",))(func)() == "ok"
    with pytest.raises(ConfigError, match=r"retry\.exceptions: names no importable exception class: 'NoSuchError'"):
        retry(exceptions=("NoSuchError",))
    with pytest.raises(ConfigError, match=r"retry\.exceptions: must be exception classes"):
        retry(exceptions=(int,))


def test_last_exception_is_re_raised_unchanged(sync_sleeps):
    raised = []

    @retry(max_attempts=3, wait=0)
    def work():
        error = ConnectionError(f"attempt {len(raised) + 1}")
        raised.append(error)
        raise error

    with pytest.raises(ConnectionError) as info:
        work()
    assert len(raised) == 3
    assert info.value is raised[-1]
    assert str(info.value) == "attempt 3"


async def test_async_last_exception_is_re_raised_unchanged(async_sleeps):
    raised = []

    @retry(max_attempts=2, wait=0)
    async def work():
        raised.append(KeyError(len(raised)))
        raise raised[-1]

    with pytest.raises(KeyError) as info:
        await work()
    assert info.value is raised[-1]


async def test_cancelling_a_task_while_it_waits_stops_the_retries():
    calls = 0
    failed = asyncio.Event()

    @retry(max_attempts=50, wait=0.05)
    async def work():
        nonlocal calls
        calls += 1
        failed.set()
        raise ConnectionError

    task = asyncio.create_task(work())
    await failed.wait()  # attempt 1 failed; the task now waits before attempt 2
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    assert task in done and task.cancelled()
    await asyncio.sleep(0.1)  # long enough for two more attempts, had it gone on
    assert calls == 1


async def test_cancelling_a_running_attempt_is_never_retried():
    calls = 0
    running = asyncio.Event()

    @retry(max_attempts=5, wait=0, exceptions=(BaseException,))
    async def work():
        nonlocal calls
        calls += 1
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await running.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    assert task in done and task.cancelled()
    await asyncio.sleep(0.01)
    assert calls == 1


async def test_a_function_raising_cancelled_error_is_not_retried():
    calls = 0

    @retry(max_attempts=5, wait=0, exceptions=(BaseException,))
    async def work():
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await work()
    assert calls == 1


def test_keyboard_interrupt_is_never_retried(sync_sleeps):
    func = failing(5, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        retry(max_attempts=5, wait=0, exceptions=(BaseException,))(func)()
    assert func.calls == 1


def test_retries_are_logged_on_the_premier_logger(sync_sleeps, caplog):
    func = failing(1)
    with caplog.at_level(logging.INFO, logger="premier"):
        retry(max_attempts=2, wait=0.5)(func)()
    [record] = [r for r in caplog.records if r.name == "premier"]
    assert "attempt 1/2" in record.getMessage()
    assert "0.5s" in record.getMessage()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"wait": -1}, "retry.wait"),
        ({"wait": [1, -0.5]}, "retry.wait"),
        ({"wait": []}, "retry.wait"),
    ],
)
def test_invalid_options_are_config_errors(options, field):
    with pytest.raises(ConfigError) as info:
        retry(**options)
    assert field in str(info.value)


class TestRetryPolicy:
    def test_decide_gives_up_after_max_attempts(self):
        policy = RetryPolicy(max_attempts=3, wait=[1, 2])
        error = ConnectionError()
        assert [policy.decide(n, error) for n in (1, 2, 3, 4)] == [1.0, 2.0, None, None]

    def test_wait_after(self):
        assert RetryPolicy(wait=3).wait_after(7) == 3.0
        assert [RetryPolicy(wait=[1, 2, 4]).wait_after(n) for n in range(1, 6)] == [1, 2, 4, 4, 4]
        assert RetryPolicy(wait=lambda n: -n).wait_after(2) == 0.0  # a negative wait is no wait

    def test_unlisted_and_stopping_errors_are_not_retried(self):
        policy = RetryPolicy(max_attempts=5, wait=1, exceptions=(BaseException,))
        assert policy.decide(1, asyncio.CancelledError()) is None
        assert policy.decide(1, SystemExit()) is None
        assert RetryPolicy(exceptions=(ValueError,)).decide(1, TypeError()) is None

    def test_from_config_resolves_exception_names(self):
        from premier.config import RetryConfig

        policy = RetryPolicy.from_config(RetryConfig(max_attempts=2, wait=(0.5,), exceptions=("ConnectionError",)))
        assert policy.decide(1, ConnectionResetError()) == 0.5
        assert policy.decide(1, ValueError()) is None
