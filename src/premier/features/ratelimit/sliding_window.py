"""Sliding window: at most ``quota`` calls in *any* interval of ``duration`` seconds — exactly.

Implemented as a sliding log kept in a ring buffer of the last ``quota`` admission times. A call is
admitted when the oldest of those ``quota`` admissions is at least ``duration`` old, so no window can
ever hold more than ``quota`` calls (unlike the weighted two-window approximation, which can). A check is
O(1): one comparison and one write; no list is scanned or grown per call.

Memory is ``quota`` floats per active key (8 bytes each): for very large quotas per client, prefer
``token_bucket``, which keeps two numbers.
"""

from __future__ import annotations

from typing import ClassVar

from premier.features.ratelimit.algorithm import Decision

__all__ = ["SlidingWindow"]

# state: [expires_at, pos, expired, t_0, ..., t_{quota-1}]
#   the ring of admission times starts at index 3; `pos` is the ring index of the oldest admission,
#   `expired` counts how many ring entries from `pos` on are known to be older than the window.
_RING = 3


class SlidingWindow:
    name: ClassVar[str] = "sliding_window"
    __slots__ = ("duration", "quota")

    def __init__(self, quota: int, duration: float) -> None:
        self.quota = quota
        self.duration = duration

    def new_state(self) -> list[float]:
        return [0.0, 0, self.quota, *([float("-inf")] * self.quota)]

    def acquire(self, state: list[float], now: float, cost: int = 1) -> Decision:
        quota = self.quota
        if len(state) != _RING + quota:
            state[:] = _resized(state, quota)
        pos = int(state[1])
        horizon = now - self.duration
        expired = int(state[2])
        # Entries age in ring order (oldest first), so advancing the count of expired ones is
        # amortised O(1): usually one comparison.
        while expired < quota:
            index = pos + expired
            if index >= quota:
                index -= quota
            if state[_RING + index] > horizon:
                break
            expired += 1
        if cost <= expired:
            for _ in range(cost):
                state[_RING + pos] = now
                pos += 1
                if pos == quota:
                    pos = 0
            state[1] = pos
            state[2] = expired - cost
            state[0] = now + self.duration
            return Decision(True, quota, expired - cost, self.duration)
        state[2] = expired
        newest = state[_RING + (pos - 1) % quota]
        if cost > quota:
            retry_after = float("inf")
        else:
            # The call fits once the `cost`-th oldest live admission has left the window.
            retry_after = state[_RING + (pos + cost - 1) % quota] - horizon
        return Decision(False, quota, expired, newest - horizon, retry_after)


def _resized(state: list[float], quota: int) -> list[float]:
    """The state for a new quota (after a reload), keeping the most recent admissions."""
    old_quota = len(state) - _RING
    pos = int(state[1])
    times = [state[_RING + (pos + i) % old_quota] for i in range(old_quota)] if old_quota > 0 else []
    kept = times[-quota:] if quota <= len(times) else [float("-inf")] * (quota - len(times)) + times
    return [state[0], 0, 0, *kept]
