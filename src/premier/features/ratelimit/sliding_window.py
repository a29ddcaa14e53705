"""Sliding window: at most ``quota`` calls in *any* interval of ``duration`` seconds — exactly.

Implemented as a sliding log: the times of the admissions still inside the window, oldest first, in a
deque. A check drops the admissions that have left the half-open window ``(now - duration, now]``
(amortised O(1): each admission leaves once) and admits the call if fewer than ``quota`` remain. No list
is scanned or shifted per call, so no window can ever hold more than ``quota`` calls (unlike the
weighted two-window approximation, which can).

Memory is one float per admission still in the window — at most ``quota`` per key, and only as many as
the key's traffic really made: a key seen once holds one number, whatever the quota.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from premier.features.ratelimit.algorithm import Decision

__all__ = ["SlidingWindow"]

# state: [expires_at, log]: log is a deque of admission times, oldest first.


class SlidingWindow:
    name: ClassVar[str] = "sliding_window"
    __slots__ = ("duration", "quota")

    def __init__(self, quota: int, duration: float) -> None:
        self.quota = quota
        self.duration = duration

    def new_state(self) -> list[Any]:
        return [0.0, deque()]

    def acquire(self, state: list[Any], now: float, cost: int = 1) -> Decision:
        quota = self.quota
        log: deque[float] = state[1]
        horizon = now - self.duration
        while log and log[0] <= horizon:
            log.popleft()
        live = len(log)
        if live + cost <= quota:
            for _ in range(cost):
                log.append(now)
            state[0] = now + self.duration
            return Decision(True, quota, quota - live - cost, self.duration)
        if cost > quota:
            retry_after = float("inf")
        else:
            # The call fits once enough of the oldest admissions have left the window (after a reload
            # that lowered the quota, more than one may have to).
            retry_after = log[live + cost - quota - 1] - horizon
        reset_after = log[-1] - horizon if log else 0.0
        return Decision(False, quota, max(0, quota - live), reset_after, retry_after)
