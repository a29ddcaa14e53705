"""The cache feature: values kept in a provider under ``{keyspace}:cache:``, with concurrent misses for
one key computed once (single flight), in coroutines and threads alike."""

from __future__ import annotations

import asyncio
import functools
import inspect
import string
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from premier.config.loader import build, require
from premier.config.schema import CacheConfig
from premier.errors import ConfigError, ConfigIssue

__all__ = ["Cache", "SingleFlight", "cache"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class SingleFlight:
    """Runs one computation per key at a time; callers arriving meanwhile share its outcome.

    If the running computation is cancelled, a waiting caller runs it anew instead of failing.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        while (running := self._running.get(key)) is not None:
            await asyncio.wait((running,))  # raises only if *this* caller is cancelled
            if not running.cancelled():
                return running.result()  # type: ignore[no-any-return]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._running[key]


class _ThreadSingleFlight:
    """:class:`SingleFlight` for threads calling a sync function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[threading.Event, list[Any]]] = {}

    def run(self, key: str, compute: Callable[[], T]) -> T:
        while True:
            with self._lock:
                running = self._running.get(key)
                if running is None:
                    done, outcome = self._running[key] = (threading.Event(), [])
                    break
            running[0].wait()
            if running[1]:
                ok, value = running[1]
                if ok:
                    return value  # type: ignore[no-any-return]
                raise value
        try:
            result = compute()
        except BaseException as exc:
            outcome.extend((False, exc))
            raise
        else:
            outcome.extend((True, result))
            return result
        finally:
            with self._lock:
                del self._running[key]
            done.set()


class Cache:
    """Caches values in ``provider`` under ``{keyspace}:cache:{key}`` for ``config.expire_s`` seconds."""

    def __init__(self, config: CacheConfig, *, provider: Any = None, keyspace: str = "premier") -> None:
        from premier.providers import AsyncInMemoryCache, LocalProvider

        self.config = config
        self.provider = AsyncInMemoryCache() if provider is None else provider
        self.prefix = f"{keyspace}:cache:"
        self.is_local = isinstance(self.provider, LocalProvider)
        self.flights = SingleFlight()
        self._thread_flights = _ThreadSingleFlight()

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """The cached value of ``key``, or ``compute()``'s, stored (``None`` included) before it returns."""
        full_key = self.prefix + key
        provider = self.provider
        boxed = provider.get_nowait(full_key) if self.is_local else await provider.get(full_key)
        if boxed is not None:
            return boxed[0]  # type: ignore[no-any-return]

        async def compute_and_store() -> T:
            value = await compute()
            await provider.set(full_key, (value,), ttl=self.config.expire_s)
            return value

        return await self.flights.run(full_key, compute_and_store)

    def get_or_compute_nowait(self, key: str, compute: Callable[[], T]) -> T:
        """:meth:`get_or_compute` for sync callers; needs an in-process provider."""
        full_key = self.prefix + key
        boxed = self.provider.get_nowait(full_key)
        if boxed is not None:
            return boxed[0]  # type: ignore[no-any-return]

        def compute_and_store() -> T:
            value = compute()
            self.provider.set_nowait(full_key, (value,), ttl=self.config.expire_s)
            return value

        return self._thread_flights.run(full_key, compute_and_store)

    async def clear(self) -> None:
        """Forget every value of this cache's keyspace."""
        await self.provider.clear(self.prefix)


def _key_builder(func: Callable[..., Any], cache_key: str | Callable[..., str] | None) -> Callable[..., str]:
    """A function of a call's arguments that returns its cache key."""
    if callable(cache_key):
        return cache_key
    name = f"{func.__module__}.{func.__qualname__}"
    if cache_key is None:
        return lambda *args, **kwargs: f"{name}:{args!r}:{kwargs!r}"
    parameters = inspect.signature(func).parameters
    try:
        parsed = list(string.Formatter().parse(cache_key))
    except ValueError as exc:
        raise ConfigError(ConfigIssue("cache.cache_key", f"is not a valid template ({exc}): {cache_key!r}")) from None
    fields = {f for _, f, _, _ in parsed if f is not None}
    unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in parameters)
    if unknown:
        raise ConfigError(
            ConfigIssue("cache.cache_key", f"names {unknown[0]!r}, which is not a parameter of {name}")
        )
    positional = [p.name for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    defaults = {p.name: p.default for p in parameters.values() if p.default is not p.empty}
    template: str = cache_key

    def build_key(*args: Any, **kwargs: Any) -> str:
        values = dict(defaults)
        values.update(zip(positional, args, strict=False))
        values.update(kwargs)
        return template.format_map(values)

    if not all(f in positional for f in fields):
        return build_key
    # Every field is a plain positional parameter: "user:{user_id}" becomes "user:{0}", filled straight
    # from the positional arguments when the call gives them all (no dict built on the hot path).
    pieces = []
    for literal, field, spec, conversion in parsed:
        pieces.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is not None:
            pieces.append("{" + str(positional.index(field)) + (f"!{conversion}" if conversion else "")
                          + (f":{spec}" if spec else "") + "}")
    by_position = "".join(pieces).format
    needed = 1 + max((positional.index(f) for f in fields), default=-1)

    def build_key_fast(*args: Any, **kwargs: Any) -> str:
        if kwargs or len(args) < needed:
            return build_key(*args, **kwargs)
        return by_position(*args)

    return build_key_fast


def cache(
    expire_s: float | None = None,
    *,
    cache_key: str | Callable[..., str] | None = None,
    keyspace: str = "premier",
    provider: Any = None,
) -> Callable[[F], F]:
    """Cache the decorated function's results for ``expire_s`` seconds (``None``: until evicted).

    ``cache_key``: a template such as ``"user:{user_id}"`` filled from the call's arguments, or a
    function of the arguments returning the key (default: the function's name and the arguments'
    ``repr``). ``None`` results are cached like any other; exceptions are not. Concurrent calls that
    miss the same key run the function once and share its result.
    """
    require(cache_key is None or isinstance(cache_key, str) or callable(cache_key), "cache.cache_key",
            f"must be a template string or a function of the call's arguments, got {cache_key!r}")
    require(isinstance(keyspace, str) and bool(keyspace), "cache.keyspace", f"must be a non-empty string, got {keyspace!r}")
    template = cache_key if isinstance(cache_key, str) else None
    config = build(CacheConfig, {"expire_s": expire_s, "cache_key": template}, path="cache")

    def decorate(func: F) -> F:
        feature = Cache(config, provider=provider, keyspace=keyspace)
        key_of = _key_builder(func, cache_key)

        get_nowait = feature.provider.get_nowait if feature.is_local else None
        prefix = feature.prefix

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                key = key_of(*args, **kwargs)
                if get_nowait is not None and (boxed := get_nowait(prefix + key)) is not None:
                    return boxed[0]  # a hit, answered without awaiting
                return await feature.get_or_compute(key, lambda: func(*args, **kwargs))

            async_wrapper.cache = feature  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        if not feature.is_local:
            raise TypeError(f"cache on the sync function {func.__qualname__} needs an in-process provider")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = key_of(*args, **kwargs)
            if (boxed := get_nowait(prefix + key)) is not None:  # type: ignore[misc]
                return boxed[0]
            return feature.get_or_compute_nowait(key, lambda: func(*args, **kwargs))

        wrapper.cache = feature  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
