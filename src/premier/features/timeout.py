"""The timeout feature: a call that runs past its deadline raises :class:`PremierTimeoutError`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from premier.config.loader import build
from premier.config.schema import TimeoutConfig
from premier.errors import PremierTimeoutError

__all__ = ["timeout"]

F = TypeVar("F", bound=Callable[..., Any])


def timeout(seconds: float) -> Callable[[F], F]:
    """Fail the decorated call with :class:`~premier.errors.PremierTimeoutError` (a ``TimeoutError``)
    after ``seconds``.

    An async function is cancelled at the deadline. A sync function runs in a worker thread that the
    caller stops waiting for at the deadline; Python cannot stop a thread, so the function itself runs
    on to its end in the background (its result is discarded).
    """
    seconds = build(TimeoutConfig, {"seconds": seconds}, path="timeout").seconds

    def decorate(func: F) -> F:
        message = f"{func.__qualname__} timed out after {seconds:g}s"

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if sys.version_info >= (3, 11):
                    deadline = asyncio.timeout(seconds)
                    try:
                        async with deadline:
                            return await func(*args, **kwargs)
                    except TimeoutError as exc:
                        # Only our deadline is ours to report; the function's own TimeoutError passes unchanged.
                        if deadline.expired():
                            raise PremierTimeoutError(message, seconds=seconds) from exc
                        raise
                try:
                    return await asyncio.wait_for(func(*args, **kwargs), seconds)
                except asyncio.TimeoutError as exc:  # not the built-in TimeoutError before Python 3.11
                    raise PremierTimeoutError(message, seconds=seconds) from exc

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outcome: list[Any] = []
            done = threading.Event()

            def run() -> None:
                try:
                    outcome.append((True, func(*args, **kwargs)))
                except BaseException as exc:
                    outcome.append((False, exc))
                finally:
                    done.set()

            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(run,), daemon=True, name=f"premier-timeout-{func.__name__}").start()
            if not done.wait(seconds):
                raise PremierTimeoutError(message, seconds=seconds)
            ok, value = outcome[0]
            if ok:
                return value
            raise value

        return wrapper  # type: ignore[return-value]

    return decorate
