"""Choosing the backend for a request among those that are healthy now.

- :class:`RoundRobin` (``round_robin``, ``weighted_round_robin``): each backend gets turns in proportion
  to its weight, spread evenly (nginx's smooth weighted round robin: weights 5, 1, 1 give
  a a b a c a a, not a a a a a b c). With equal weights it is a plain rotation.
- :class:`LeastConnections`: the backend with the fewest requests in flight per unit of weight; ties go
  round the list, so an idle pool still spreads its requests.

``pick(now, exclude)`` skips backends a failing request already tried, and returns ``None`` when no
healthy backend is left.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from premier.proxy.pool import Backend

__all__ = ["Balancer", "LeastConnections", "RoundRobin", "make_balancer"]


class Balancer:
    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._next = 0

    def pick(self, now: float, exclude: Collection[Backend] = ()) -> Backend | None:
        raise NotImplementedError


class RoundRobin(Balancer):
    def __init__(self, backends: Sequence[Backend]) -> None:
        super().__init__(backends)
        self._weighted = len({b.weight for b in self.backends}) > 1
        self._current = dict.fromkeys(self.backends, 0)

    def pick(self, now: float, exclude: Collection[Backend] = ()) -> Backend | None:
        if self._weighted:
            return self._pick_weighted(now, exclude)
        backends = self.backends
        count = len(backends)
        start = self._next
        for offset in range(count):
            backend = backends[(start + offset) % count]
            if backend.health.available(now) and backend not in exclude:
                self._next = (start + offset + 1) % count
                return backend
        return None

    def _pick_weighted(self, now: float, exclude: Collection[Backend]) -> Backend | None:
        current = self._current
        best: Backend | None = None
        total = 0
        for backend in self.backends:
            if not backend.health.available(now) or backend in exclude:
                continue
            current[backend] += backend.weight
            total += backend.weight
            if best is None or current[backend] > current[best]:
                best = backend
        if best is not None:
            current[best] -= total
        return best


class LeastConnections(Balancer):
    def pick(self, now: float, exclude: Collection[Backend] = ()) -> Backend | None:
        backends = self.backends
        count = len(backends)
        start = self._next
        self._next = (start + 1) % count
        best: Backend | None = None
        best_load = 0.0
        for offset in range(count):
            backend = backends[(start + offset) % count]
            if not backend.health.available(now) or backend in exclude:
                continue
            load = backend.in_flight / backend.weight
            if best is None or load < best_load:
                best, best_load = backend, load
        return best


def make_balancer(name: str, backends: Sequence[Backend]) -> Balancer:
    if name == "least_connections":
        return LeastConnections(backends)
    return RoundRobin(backends)  # round_robin and weighted_round_robin: weights always count
