"""Storage for Premier's features: the protocols a backend implements, and the in-memory default.

One provider object serves every feature: it stores cache entries and runs rate-limit algorithms
atomically. ``AsyncInMemoryCache`` (this process only) is the default; ``premier.providers.redis``
shares state between processes and machines.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm
from premier.providers.memory import AsyncInMemoryCache

__all__ = ["AsyncInMemoryCache", "CacheProvider", "LocalProvider"]


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
class LocalProvider(CacheProvider, Protocol):
    """A provider living in this process, which can answer without awaiting (the fast path)."""

    def get_nowait(self, key: str) -> Any | None: ...

    def set_nowait(self, key: str, value: Any, *, ttl: float | None = None) -> None: ...

    def acquire_nowait(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision: ...
