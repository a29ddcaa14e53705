"""The retry feature: a pure policy that says, after a failed attempt, whether and how long to wait,
and the decorator that follows it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from premier.config.loader import build, require
from premier.config.schema import RetryConfig, exception_classes, resolve_exception

__all__ = ["RetryPolicy", "retry"]

F = TypeVar("F", bound=Callable[..., Any])
Wait = float | Sequence[float] | Callable[[int], float]

logger = logging.getLogger("premier")

# Never retried, whatever `exceptions` says: they mean "stop", not "failed".
_NEVER_RETRIED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


class RetryPolicy:
    """When to try again. ``wait`` is seconds between attempts: a number, a list (its last value
    repeats when attempts outnumber it) or a function of the failed attempt's number (1-based)."""

    __slots__ = ("exceptions", "max_attempts", "wait")

    def __init__(
        self, max_attempts: int = 3, wait: Wait = 1.0, exceptions: tuple[type[BaseException], ...] = (Exception,)
    ) -> None:
        self.max_attempts = max_attempts
        self.wait = wait
        self.exceptions = exceptions

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.wait, tuple(resolve_exception(n) for n in config.exceptions))

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wait = self.wait
        if callable(wait):
            return max(0.0, float(wait(attempt)))
        if isinstance(wait, (int, float)):
            return float(wait)
        return float(wait[min(attempt, len(wait)) - 1])

    def decide(self, attempt: int, error: BaseException) -> float | None:
        """After attempt ``attempt`` failed with ``error``: seconds to wait before the next one, or
        ``None`` to give up (attempts used up, or an error that is not retried)."""
        if attempt >= self.max_attempts or isinstance(error, _NEVER_RETRIED):
            return None
        if not isinstance(error, self.exceptions):
            return None
        return self.wait_after(attempt)


def retry(
    max_attempts: int = 3,
    wait: Wait = 1.0,
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
) -> Callable[[F], F]:
    """Call the decorated function up to ``max_attempts`` times while it raises one of ``exceptions``.

    ``wait``: seconds between attempts — a number, a list such as ``[1, 2, 4]`` (its last value
    repeats), or a function of the failed attempt's number. Cancellation is never retried. When the
    attempts are used up, the last exception propagates unchanged.
    """
    if not callable(wait) and not isinstance(wait, (int, float)):
        require(isinstance(wait, Iterable) and not isinstance(wait, (str, bytes)), "retry.wait",
                f"must be seconds, a list of seconds or a function of the attempt, got {wait!r}")
        wait = tuple(wait)  # read once: a generator must not be used up by this check
    numeric_wait = 0.0 if callable(wait) else wait if isinstance(wait, (int, float)) else list(wait)
    build(RetryConfig, {"max_attempts": max_attempts, "wait": numeric_wait}, path="retry")
    policy = RetryPolicy(max_attempts, wait, exception_classes(exceptions, "retry.exceptions"))

    def decorate(func: F) -> F:
        name = func.__qualname__

        def next_wait(attempt: int, error: BaseException) -> float | None:
            delay = policy.decide(attempt, error)
            if delay is not None:
                logger.info("retrying %s in %.3gs after attempt %d/%d failed: %r", name, delay, attempt, max_attempts, error)
            return delay

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                attempt = 1
                while True:
                    try:
                        return await func(*args, **kwargs)
                    except BaseException as error:
                        delay = next_wait(attempt, error)
                        if delay is None:
                            raise
                    await asyncio.sleep(delay)
                    attempt += 1

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            attempt = 1
            while True:
                try:
                    return func(*args, **kwargs)
                except BaseException as error:
                    delay = next_wait(attempt, error)
                    if delay is None:
                        raise
                time.sleep(delay)
                attempt += 1

        return wrapper  # type: ignore[return-value]

    return decorate
