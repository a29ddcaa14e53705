"""Storage for Premier's features: the protocols a backend implements, and the in-memory default.

One provider object serves every feature: it stores cache entries and runs rate-limit algorithms
atomically. ``AsyncInMemoryCache`` (this process only) is the default; ``premier.providers.redis``
shares state between processes and machines.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm
from premier.providers.memory import AsyncInMemoryCache

__all__ = ["AsyncInMemoryCache", "CacheProvider", "GroupingProvider", "LocalProvider"]


@runtime_checkable
class CacheProvider(Protocol):
    """What a storage backend implements. Every method may raise :class:`premier.errors.BackendError`."""

    async def get(self, key: str) -> Any | None:
        """The value stored at ``key``, or ``None`` when there is none (or it expired)."""
        ...

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` at ``key`` for ``ttl`` seconds (``None``: until evicted)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def clear(self, prefix: str = "") -> None:
        """Remove every key starting with ``prefix`` (all of this provider's keys when empty)."""
        ...

    async def acquire(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision:
        """Run one rate-limit check for ``key`` atomically, by the provider's clock."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class GroupingProvider(CacheProvider, Protocol):
    """A provider that records which keys were stored in a group, so that removing them costs the group's
    own keys rather than a look at every key (``clear`` by prefix). Optional: the HTTP cache checks for
    it once, and clears a provider without it by the group's prefix.

    A group is named by a prefix of each of its keys, and no key is the group itself (the provider
    may keep its record there): a provider that cannot list a group may ``clear(group)`` instead."""

    async def set_in_group(self, group: str, key: str, value: Any, *, ttl: float | None = None) -> None:
        """``set``, and record ``key`` as one of ``group``'s, for as long as its value may live."""
        ...

    async def clear_group(self, group: str) -> None:
        """Remove every key recorded in ``group``, and the record. A key stored concurrently is either
        removed or stays recorded, never left out of the record."""
        ...


@runtime_checkable
class LocalProvider(CacheProvider, Protocol):
    """A provider living in this process, which can answer without awaiting (the fast path)."""

    def get_nowait(self, key: str) -> Any | None: ...

    def set_nowait(self, key: str, value: Any, *, ttl: float | None = None) -> None: ...

    def acquire_nowait(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision: ...
