"""The rate-limit feature: an algorithm, a provider that runs it atomically, and the keys it counts."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from premier.config.loader import build, require
from premier.config.schema import RateLimitConfig
from premier.errors import RateLimitExceeded
from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm
from premier.features.ratelimit.fixed_window import FixedWindow
from premier.features.ratelimit.leaky_bucket import LeakyBucket
from premier.features.ratelimit.sliding_window import SlidingWindow
from premier.features.ratelimit.token_bucket import TokenBucket

__all__ = ["RateLimiter", "make_algorithm", "rate_limit"]

F = TypeVar("F", bound=Callable[..., Any])


def make_algorithm(config: RateLimitConfig) -> RateLimitAlgorithm:
    if config.algorithm == "leaky_bucket":
        return LeakyBucket(config.quota, config.duration, config.bucket_size)
    if config.algorithm == "sliding_window":
        return SlidingWindow(config.quota, config.duration)
    if config.algorithm == "token_bucket":
        return TokenBucket(config.quota, config.duration)
    return FixedWindow(config.quota, config.duration)


class RateLimiter:
    """Counts calls per key with one algorithm, in one provider, under ``{keyspace}:rl:{name}:``.

    ``check_nowait`` answers without awaiting when the provider lives in this process; ``check`` works
    with every provider.
    """

    __slots__ = ("_acquire_nowait", "algorithm", "config", "prefix", "provider")

    def __init__(self, config: RateLimitConfig, *, provider: Any = None, keyspace: str = "premier", name: str = "") -> None:
        from premier.providers import AsyncInMemoryCache, LocalProvider

        self.config = config
        self.algorithm = make_algorithm(config)
        self.provider = AsyncInMemoryCache() if provider is None else provider
        # The algorithm's name is part of the key: a reload that changes it starts fresh state.
        self.prefix = f"{keyspace}:rl:{name}:{config.algorithm}:"
        self._acquire_nowait = self.provider.acquire_nowait if isinstance(self.provider, LocalProvider) else None

    @property
    def is_local(self) -> bool:
        return self._acquire_nowait is not None

    def check_nowait(self, key: str = "", cost: int = 1) -> Decision:
        if self._acquire_nowait is None:
            raise TypeError(f"{type(self.provider).__name__} cannot answer without awaiting; use check()")
        return self._acquire_nowait(self.prefix + key, self.algorithm, cost)

    async def check(self, key: str = "", cost: int = 1) -> Decision:
        if self._acquire_nowait is not None:
            return self._acquire_nowait(self.prefix + key, self.algorithm, cost)
        decision: Decision = await self.provider.acquire(self.prefix + key, self.algorithm, cost)
        return decision

    def rejection(self, decision: Decision, key: str = "") -> RateLimitExceeded:
        return RateLimitExceeded(self.config.error_message, retry_after=decision.retry_after, key=self.prefix + key)


def rate_limit(
    quota: int,
    duration: float,
    *,
    algorithm: str = "fixed_window",
    bucket_size: int | None = None,
    key: str | Callable[..., str] | None = None,
    keyspace: str = "premier",
    provider: Any = None,
    error_message: str = "Rate limit exceeded",
) -> Callable[[F], F]:
    """Limit calls of the decorated function to ``quota`` per ``duration`` seconds.

    ``algorithm``: ``fixed_window`` (default), ``sliding_window``, ``token_bucket`` or ``leaky_bucket``
    (which delays calls to space them out, up to ``bucket_size`` waiting). ``key``: a fixed string or a
    function of the call's arguments returning one (default: the function's qualified name), so each key
    has its own quota. Over quota, raises :class:`~premier.errors.RateLimitExceeded` with ``retry_after``.
    """
    require(key is None or isinstance(key, str) or callable(key), "rate_limit.key",
            f"must be a string or a function of the call's arguments, got {key!r}")
    require(isinstance(keyspace, str) and bool(keyspace), "rate_limit.keyspace", f"must be a non-empty string, got {keyspace!r}")
    config = build(
        RateLimitConfig,
        {"quota": quota, "duration": duration, "algorithm": algorithm, "bucket_size": bucket_size,
         "error_message": error_message},
        path="rate_limit",
    )

    def decorate(func: F) -> F:
        name = f"{func.__module__}.{func.__qualname__}"
        limiter = RateLimiter(config, provider=provider, keyspace=keyspace, name=name)
        if callable(key):
            user_key = key

            def key_of(*args: Any, **kwargs: Any) -> str:
                return str(user_key(*args, **kwargs))  # a key function may return an int, a UUID...
        else:
            fixed = key or ""

            def key_of(*args: Any, **kwargs: Any) -> str:
                return fixed

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call_key = key_of(*args, **kwargs)
                decision = limiter.check_nowait(call_key) if limiter.is_local else await limiter.check(call_key)
                if not decision.allowed:
                    raise limiter.rejection(decision, call_key)
                if decision.delay:
                    await asyncio.sleep(decision.delay)
                return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        if not limiter.is_local:
            raise TypeError(f"rate_limit on the sync function {name} needs an in-process provider")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call_key = key_of(*args, **kwargs)
            decision = limiter.check_nowait(call_key)
            if not decision.allowed:
                raise limiter.rejection(decision, call_key)
            if decision.delay:
                time.sleep(decision.delay)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
