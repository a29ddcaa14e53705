"""The in-memory provider: bounded, expiring maps for cache entries and rate-limit states.

Bounds: at most ``max_entries`` cache entries and ``max_limiter_keys`` rate-limit keys. Expired entries
are swept on a schedule (every ``sweep_interval`` seconds, by whichever operation comes first after
that), not only when read; when a map is full of live entries, the least recently used cache entry or
the least recently created limiter key is evicted. Evicting a live limiter key forgets that key's usage
(it starts afresh), which is why its bound is generous by default.

Everything here is synchronous under one lock, so a check is atomic for coroutines and threads alike;
the ``async`` methods exist to satisfy :class:`~premier.providers.CacheProvider`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm

__all__ = ["AsyncInMemoryCache"]

_ABSENT: Any = object()


class _ExpiringMap:
    """A dict of ``key -> [expires_at, value]`` with a size bound and scheduled sweeps."""

    __slots__ = ("data", "max_entries", "next_sweep", "sweep_interval")

    def __init__(self, max_entries: int, sweep_interval: float) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries must be greater than 0, got {max_entries!r}")
        self.data: dict[str, list[Any]] = {}
        self.max_entries = max_entries
        self.sweep_interval = sweep_interval
        self.next_sweep = float("-inf")

    def sweep(self, now: float) -> None:
        self.next_sweep = now + self.sweep_interval
        expired = [key for key, entry in self.data.items() if entry[0] <= now]
        for key in expired:
            del self.data[key]

    def make_room(self, now: float) -> None:
        if now >= self.next_sweep:
            self.sweep(now)
        while len(self.data) >= self.max_entries:
            del self.data[next(iter(self.data))]


class AsyncInMemoryCache:
    """This process's storage: the default provider of every feature.

    ``clock`` gives the current time in seconds for expiry and rate limiting (default ``time.time``);
    tests pass a fake clock.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_limiter_keys: int = 100_000,
        sweep_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries = _ExpiringMap(max_entries, sweep_interval)
        self._limits = _ExpiringMap(max_limiter_keys, sweep_interval)
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries.data)

    @property
    def limiter_keys(self) -> int:
        return len(self._limits.data)

    # -- cache ---------------------------------------------------------------------------------
    def get_nowait(self, key: str) -> Any | None:
        now = self._clock()
        entries = self._entries
        lock = self._lock
        lock.acquire()  # (a bare acquire/release is measurably cheaper than `with` on this hot path)
        try:
            if now >= entries.next_sweep:
                entries.sweep(now)
            entry = entries.data.pop(key, None)
            if entry is None or entry[0] <= now:
                return None
            entries.data[key] = entry  # re-inserted last: the dict's order is least recently used first
            return entry[1]
        finally:
            lock.release()

    def set_nowait(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        now = self._clock()
        expires_at = float("inf") if ttl is None else now + ttl
        entries = self._entries
        with self._lock:
            if now >= entries.next_sweep:  # a write-only workload must not keep expired entries either
                entries.sweep(now)
            if entries.data.pop(key, None) is None and len(entries.data) >= entries.max_entries:
                entries.make_room(now)
            entries.data[key] = [expires_at, value]

    def delete_nowait(self, key: str) -> None:
        with self._lock:
            self._entries.data.pop(key, None)

    def clear_nowait(self, prefix: str = "") -> None:
        with self._lock:
            for data in (self._entries.data, self._limits.data):
                if not prefix:
                    data.clear()
                    continue
                for key in [k for k in data if k.startswith(prefix)]:
                    del data[key]

    async def get(self, key: str) -> Any | None:
        return self.get_nowait(key)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        self.set_nowait(key, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        self.delete_nowait(key)

    async def clear(self, prefix: str = "") -> None:
        self.clear_nowait(prefix)

    # -- rate limiting -------------------------------------------------------------------------
    def acquire_nowait(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision:
        now = self._clock()
        limits = self._limits
        lock = self._lock
        lock.acquire()
        try:
            if now >= limits.next_sweep:
                limits.sweep(now)
            state = limits.data.get(key)
            if state is None or state[0] <= now:
                if state is None and len(limits.data) >= limits.max_entries:
                    limits.make_room(now)
                state = limits.data[key] = algorithm.new_state()
            return algorithm.acquire(state, now, cost)
        finally:
            lock.release()

    async def acquire(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision:
        return self.acquire_nowait(key, algorithm, cost)

    async def close(self) -> None:
        self.clear_nowait()
