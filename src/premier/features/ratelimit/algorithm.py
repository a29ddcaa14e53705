"""What every rate-limit algorithm shares: the :class:`Decision` it returns and the contract it keeps.

An algorithm is pure logic: ``acquire(state, now, cost)`` reads and updates a small mutable ``state``
list for one key at time ``now`` (seconds) and returns a :class:`Decision`. It does no I/O and reads no
clock, so a store can run it atomically (in memory under a lock; on Redis as the same logic in Lua), and
tests can drive it with any sequence of times. ``state[0]`` is always the absolute time after which the
state equals a fresh one, so a store may forget the key then.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

__all__ = ["EPSILON", "Decision", "RateLimitAlgorithm"]

# Float slack for comparisons of accumulated fractional time and tokens.
EPSILON = 1e-9


class Decision:
    """The answer to one check.

    ``allowed``: admitted or not. ``remaining``: further calls the key could make right now.
    ``reset_after``: seconds until the key is back to its full quota. ``retry_after``: seconds until a
    rejected call could succeed (0 when allowed). ``delay``: seconds an admitted call must wait before it
    proceeds (``leaky_bucket`` only; 0 otherwise).
    """

    __slots__ = ("allowed", "delay", "limit", "remaining", "reset_after", "retry_after")

    def __init__(
        self,
        allowed: bool,
        limit: int,
        remaining: int,
        reset_after: float,
        retry_after: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.delay = delay

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, limit={self.limit}, remaining={self.remaining}, "
            f"reset_after={self.reset_after:.3f}, retry_after={self.retry_after:.3f}, delay={self.delay:.3f})"
        )


class RateLimitAlgorithm(Protocol):
    name: ClassVar[str]
    quota: int
    duration: float

    def new_state(self) -> list[Any]:
        """The state of a key never seen (or forgotten after its ``state[0]``)."""
        ...

    def acquire(self, state: list[Any], now: float, cost: int = 1) -> Decision:
        """Take ``cost`` units for the key whose ``state`` is given, at time ``now``; update ``state``."""
        ...
