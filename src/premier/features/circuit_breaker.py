"""The circuit breaker: after ``failure_threshold`` consecutive failures it opens and refuses calls for
``recovery_timeout`` seconds; then it is half-open and admits up to ``half_open_max_calls`` probes at a
time. A probe that succeeds closes it; one that fails opens it again.

:class:`CircuitBreaker` is the state machine alone: every method takes the time, nothing sleeps or
reads a clock, so tests drive it with any times they like.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from premier.config.loader import build
from premier.config.schema import CircuitBreakerConfig, exception_classes
from premier.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "circuit_breaker"]

F = TypeVar("F", bound=Callable[..., Any])
State = Literal["closed", "open", "half_open"]

logger = logging.getLogger("premier")

# Endings that say nothing about the callee's health: they neither open nor close the circuit.
_NO_VERDICT = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


class CircuitBreaker:
    __slots__ = (
        "_state",
        "failure_threshold",
        "failures",
        "half_open_max_calls",
        "name",
        "on_state_change",
        "opened_at",
        "probes",
        "recovery_timeout",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        *,
        half_open_max_calls: int = 1,
        name: str = "",
        on_state_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.name = name
        self.on_state_change = on_state_change
        self._state: State = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probes = 0

    @classmethod
    def from_config(cls, config: CircuitBreakerConfig, *, name: str = "") -> CircuitBreaker:
        return cls(
            config.failure_threshold,
            config.recovery_timeout,
            half_open_max_calls=config.half_open_max_calls,
            name=name,
        )

    def state(self, now: float) -> State:
        if self._state == "open" and now >= self.opened_at + self.recovery_timeout:
            self._move("half_open")
            self.probes = 0
        return self._state

    def before_call(self, now: float) -> float:
        """0 if a call may go ahead now (a half-open probe is then counted); otherwise the seconds
        after which to try again."""
        state = self.state(now)
        if state == "closed":
            return 0.0
        if state == "open":
            return self.opened_at + self.recovery_timeout - now
        if self.probes < self.half_open_max_calls:
            self.probes += 1
            return 0.0
        return min(1.0, self.recovery_timeout)  # probes are out; their verdict should come soon

    def on_success(self, now: float) -> None:
        if self._state == "half_open":
            self._move("closed")
        self.failures = 0

    def on_failure(self, now: float) -> None:
        if self._state == "half_open":
            self._open(now)
            return
        self.failures += 1
        if self._state == "closed" and self.failures >= self.failure_threshold:
            self._open(now)

    def trip(self, now: float) -> None:
        """Open the circuit now, whatever its state (another process found the callee failing)."""
        if self._state != "open":
            self._open(now)

    def on_abandoned(self) -> None:
        """A call admitted by :meth:`before_call` ended with no verdict (it was cancelled)."""
        if self._state == "half_open" and self.probes > 0:
            self.probes -= 1

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.failures = 0
        self._move("open")

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if old == new:
            return
        log = logger.warning if new == "open" else logger.info
        log("circuit %s: %s -> %s", self.name or "breaker", old, new)
        if self.on_state_change is not None:
            self.on_state_change(self.name, old, new)


def circuit_breaker(
    failure_threshold: int = 5,
    recovery_timeout: float = 60.0,
    *,
    half_open_max_calls: int = 1,
    expected_exception: type[BaseException] | tuple[type[BaseException], ...] | str = Exception,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[F], F]:
    """Stop calling the decorated function after ``failure_threshold`` consecutive failures (calls that
    raise ``expected_exception``); refuse calls with :class:`~premier.errors.CircuitOpenError` (carrying
    ``retry_after``) for ``recovery_timeout`` seconds, then let ``half_open_max_calls`` probes through.
    Other exceptions propagate without counting as failures. The breaker is at ``wrapper.breaker``."""
    build(
        CircuitBreakerConfig,
        {"failure_threshold": failure_threshold, "recovery_timeout": recovery_timeout,
         "half_open_max_calls": half_open_max_calls},
        path="circuit_breaker",
    )
    expected = exception_classes(expected_exception, "circuit_breaker.expected_exception")

    def decorate(func: F) -> F:
        breaker = CircuitBreaker(
            failure_threshold, recovery_timeout, half_open_max_calls=half_open_max_calls, name=func.__qualname__
        )

        # The state machine is shared by every caller; sync functions may be called from many threads.
        lock = threading.Lock()

        def admit() -> None:
            now = clock()
            with lock:
                retry_after = breaker.before_call(now)
                state = breaker.state(now)
            if retry_after:
                raise CircuitOpenError(f"circuit {breaker.name} is {state}", retry_after=retry_after)

        def settle(error: BaseException | None) -> None:
            with lock:
                if error is None:
                    breaker.on_success(clock())
                elif isinstance(error, _NO_VERDICT):
                    breaker.on_abandoned()
                elif isinstance(error, expected):
                    breaker.on_failure(clock())
                else:
                    breaker.on_success(clock())  # the callee answered; the error is the caller's business

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                admit()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as error:
                    settle(error)
                    raise
                settle(None)
                return result

            async_wrapper.breaker = breaker  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            admit()
            try:
                result = func(*args, **kwargs)
            except BaseException as error:
                settle(error)
                raise
            settle(None)
            return result

        wrapper.breaker = breaker  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
