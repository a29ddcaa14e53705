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

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm

__all__ = ["AsyncInMemoryCache"]

_SWEEP_SLICE = 2_000  # keys checked per operation while a sweep round is under way

_ABSENT: Any = object()


class _ExpiringMap:
    """A dict of ``key -> [expires_at, value, size]`` bounded in entries and bytes, swept on a schedule.

    A sweep runs in slices: a round takes a snapshot of the keys, then each operation checks at most
    ``_SWEEP_SLICE`` of them, so even a map of 100,000 keys never holds the lock for long."""

    __slots__ = ("data", "max_bytes", "max_entries", "nbytes", "next_sweep", "pending", "sized", "sweep_interval")

    def __init__(self, max_entries: int, sweep_interval: float, max_bytes: float | None = None) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries must be greater than 0, got {max_entries!r}")
        self.data: dict[str, list[Any]] = {}
        self.max_entries = max_entries
        # Sized maps (the cache) keep [expires_at, value, size]; unsized ones (limiter states) keep the
        # algorithm's state list, whose first item is its expiry.
        self.sized = max_bytes is not None
        self.max_bytes = math.inf if max_bytes is None else max_bytes
        self.nbytes = 0
        self.sweep_interval = sweep_interval
        self.next_sweep = float("-inf")
        self.pending: list[str] = []

    def sweep(self, now: float) -> None:
        if not self.pending:
            self.pending = list(self.data)  # a new round
        data = self.data
        for _ in range(min(_SWEEP_SLICE, len(self.pending))):
            key = self.pending.pop()
            entry = data.get(key)
            if entry is not None and entry[0] <= now:
                self.remove(key)
        # Mid-round, the next operation goes on with the next slice; after it, wait for the schedule.
        self.next_sweep = now if self.pending else now + self.sweep_interval

    def remove(self, key: str) -> list[Any] | None:
        entry = self.data.pop(key, None)
        if entry is not None and self.sized:
            self.nbytes -= entry[2]
        return entry

    def put(self, key: str, entry: list[Any], now: float) -> None:
        """Store ``entry`` (replacing ``key``'s), evicting from the front — least recently used (cache)
        or created (limiter keys) — while the map is over either bound."""
        self.remove(key)
        size = entry[2] if self.sized else 0
        if size > self.max_bytes:
            return  # larger than the whole budget: not stored
        data = self.data
        if len(data) >= self.max_entries or self.nbytes + size > self.max_bytes:
            if now >= self.next_sweep:
                self.sweep(now)
            while data and (len(data) >= self.max_entries or self.nbytes + size > self.max_bytes):
                self.remove(next(iter(data)))
        data[key] = entry
        self.nbytes += size


def _size_of(value: Any) -> int:
    """The bytes a cached value stands for, where it says (a cached response's ``nbytes``) or is bytes."""
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    return int(getattr(value, "nbytes", 0))


class AsyncInMemoryCache:
    """This process's storage: the default provider of every feature.

    ``max_bytes`` bounds what cached responses (and bytes or text values) hold in all, with their keys;
    the sizes of other Python values are not known, so they count only towards ``max_entries``. ``clock`` gives the
    current time in seconds for expiry and rate limiting (default ``time.time``); tests pass a fake one.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_limiter_keys: int = 100_000,
        sweep_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries = _ExpiringMap(max_entries, sweep_interval, max_bytes)
        self._limits = _ExpiringMap(max_limiter_keys, sweep_interval)
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries.data)

    @property
    def limiter_keys(self) -> int:
        return len(self._limits.data)

    @property
    def nbytes(self) -> int:
        """The bytes the cached entries hold, their keys included (bounded by ``max_bytes``); a value
    that reports no size counts as its key only."""
        return self._entries.nbytes

    # -- cache ---------------------------------------------------------------------------------
    def get_nowait(self, key: str) -> Any | None:
        now = self._clock()
        entries = self._entries
        lock = self._lock
        lock.acquire()  # (a bare acquire/release is measurably cheaper than `with` on this hot path)
        try:
            if now >= entries.next_sweep:
                entries.sweep(now)
            data = entries.data
            entry = data.pop(key, None)
            if entry is None:
                return None
            if entry[0] <= now:
                entries.nbytes -= entry[2]
                return None
            data[key] = entry  # re-inserted last: the dict's order is least recently used first
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
            entries.put(key, [expires_at, value, len(key) + _size_of(value)], now)  # (a key holds a query)

    def delete_nowait(self, key: str) -> None:
        with self._lock:
            self._entries.remove(key)

    def clear_nowait(self, prefix: str = "") -> None:
        with self._lock:
            for store in (self._entries, self._limits):
                for key in [k for k in store.data if k.startswith(prefix)]:
                    store.remove(key)

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
                state = algorithm.new_state()
                limits.put(key, state, now)
            return algorithm.acquire(state, now, cost)
        finally:
            lock.release()

    async def acquire(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision:
        return self.acquire_nowait(key, algorithm, cost)

    async def close(self) -> None:
        self.clear_nowait()
