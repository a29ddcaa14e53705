"""Fixed window: at most ``quota`` calls in each window of ``duration`` seconds, aligned to the clock
(windows start at multiples of ``duration`` since the epoch, so a 60 s window is a wall-clock minute).

Cheapest and easiest to explain; allows a burst of up to ``2 * quota`` across a window edge.
"""

from __future__ import annotations

from typing import Any, ClassVar

from premier.features.ratelimit.algorithm import Decision

__all__ = ["FixedWindow"]

# state: [expires_at, window_start, count]


class FixedWindow:
    name: ClassVar[str] = "fixed_window"
    __slots__ = ("duration", "quota")

    def __init__(self, quota: int, duration: float) -> None:
        self.quota = quota
        self.duration = duration

    def new_state(self) -> list[Any]:
        return [0.0, float("-inf"), 0]

    def acquire(self, state: list[Any], now: float, cost: int = 1) -> Decision:
        duration = self.duration
        window_start = now - now % duration
        if state[1] != window_start:
            state[1] = window_start
            state[2] = 0
        window_end = window_start + duration
        state[0] = window_end
        reset_after = window_end - now
        count = state[2] + cost
        if count <= self.quota:
            state[2] = count
            return Decision(True, self.quota, int(self.quota - count), reset_after)
        retry_after = reset_after if cost <= self.quota else float("inf")
        return Decision(False, self.quota, int(self.quota - state[2]), reset_after, retry_after)
