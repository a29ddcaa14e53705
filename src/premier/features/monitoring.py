"""The monitoring feature: time calls and log the slow ones through the ``premier`` logger."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

from premier.config.loader import build
from premier.config.schema import MonitoringConfig

__all__ = ["timeit"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("premier")


@overload
def timeit(func: F, /) -> F: ...
@overload
def timeit(*, log_threshold: float = 0.1, logger: logging.Logger | None = None) -> Callable[[F], F]: ...


def timeit(
    func: Callable[..., Any] | None = None,
    /,
    *,
    log_threshold: float = 0.1,
    logger: logging.Logger | None = None,
) -> Any:
    """Log calls of the decorated function that take ``log_threshold`` seconds or more, as a warning on
    the ``premier`` logger (or ``logger``), with the function's name and the duration. Exceptions are
    timed too and propagate unchanged. Usable bare (``@timeit``) or with options."""
    threshold = build(MonitoringConfig, {"log_threshold": log_threshold}, path="monitoring").log_threshold
    log = logger or globals()["logger"]

    def decorate(func: F) -> F:
        name = f"{func.__module__}.{func.__qualname__}"

        def report(started: float) -> None:
            elapsed = time.perf_counter() - started
            if elapsed >= threshold:
                log.warning("%s took %.3fs (threshold %.3fs)", name, elapsed, threshold)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    report(started)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                report(started)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
