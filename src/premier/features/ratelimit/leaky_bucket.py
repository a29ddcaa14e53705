"""Leaky bucket (as a queue): calls drain one every ``duration / quota`` seconds. A call that finds the
bucket empty proceeds at once; later ones are admitted with a ``delay`` that spaces them out, as long as
at most ``bucket_size`` calls are waiting; beyond that they are rejected.

Kept as one number, the time the bucket is next free (virtual scheduling, as GCRA does), so the state is
fractional and O(1) however many calls wait.
"""

from __future__ import annotations

from typing import Any, ClassVar

from premier.features.ratelimit.algorithm import EPSILON, Decision

__all__ = ["LeakyBucket"]

# state: [expires_at, next_free]


class LeakyBucket:
    name: ClassVar[str] = "leaky_bucket"
    __slots__ = ("bucket_size", "duration", "interval", "quota")

    def __init__(self, quota: int, duration: float, bucket_size: int | None = None) -> None:
        self.quota = quota
        self.duration = duration
        self.bucket_size = quota if bucket_size is None else bucket_size
        self.interval = duration / quota

    def new_state(self) -> list[Any]:
        return [0.0, float("-inf")]

    def acquire(self, state: list[Any], now: float, cost: int = 1) -> Decision:
        interval = self.interval
        capacity = self.bucket_size * interval  # the longest wait a queued call may be given
        start = max(now, state[1])
        delay = start - now
        if delay > capacity + EPSILON:
            return Decision(False, self.quota, 0, delay, delay - capacity)
        next_free = start + cost * interval
        state[1] = next_free
        state[0] = next_free
        backlog = next_free - now  # seconds of queued work, this call included
        remaining = max(0, int((capacity - backlog) / interval + 1 + EPSILON))
        return Decision(True, self.quota, remaining, backlog, 0.0, delay)
