"""Token bucket: a bucket of ``quota`` tokens refilled continuously at ``quota / duration`` tokens per
second; each call takes one. Bursts up to ``quota``, then a steady rate. Tokens are fractional, so idle
time refills exactly (no rounding to whole tokens).
"""

from __future__ import annotations

from typing import Any, ClassVar

from premier.features.ratelimit.algorithm import EPSILON, Decision

__all__ = ["TokenBucket"]

# state: [expires_at, tokens, last_refill]


class TokenBucket:
    name: ClassVar[str] = "token_bucket"
    __slots__ = ("duration", "quota", "rate")

    def __init__(self, quota: int, duration: float) -> None:
        self.quota = quota
        self.duration = duration
        self.rate = quota / duration

    def new_state(self) -> list[Any]:
        return [0.0, float(self.quota), float("-inf")]

    def acquire(self, state: list[Any], now: float, cost: int = 1) -> Decision:
        capacity = self.quota
        rate = self.rate
        elapsed = now - state[2]
        tokens = state[1] if elapsed <= 0 else min(capacity, state[1] + elapsed * rate)
        state[2] = max(now, state[2])
        allowed = tokens + EPSILON >= cost
        if allowed:
            tokens = max(0.0, tokens - cost)
        state[1] = tokens
        reset_after = (capacity - tokens) / rate
        state[0] = now + reset_after
        retry_after = 0.0 if allowed else (cost - tokens) / rate if cost <= capacity else float("inf")
        return Decision(allowed, capacity, int(tokens + EPSILON), reset_after, retry_after)
