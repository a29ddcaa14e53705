"""The statistics collector: subscribes to the gateway's events and keeps, in constant memory, what the
dashboard and ``/metrics`` show.

- Latencies go into fixed-bucket histograms (log-spaced buckets from 50 µs to 2 min, 15% apart), so
  a percentile costs one pass over ~100 counters and never holds individual samples. The live figures
  (rate, p50/p95/p99, the chart series) come from a ring of one-second buckets covering the last minute.
- Per route (route *patterns*, whose number the configuration bounds; never raw paths): requests by
  status class, rate-limited and timed-out counts (whatever status they answered), cache hits and
  misses, latency over the last minute, and cumulative Prometheus histograms.
- The last 20 requests slower than ``slow_threshold``.

``time`` is a wall clock (seconds since the epoch) passed in, so tests drive the windows with a fake one.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from premier.asgi.websocket import WebSocketEvent
from premier.observability.events import RequestEvent

__all__ = ["PROMETHEUS_BUCKETS", "Histogram", "StatsCollector"]

_BOUNDS: list[float] = []
_bound = 0.00005
while _bound < 120:
    _BOUNDS.append(_bound)
    _bound *= 1.15
PROMETHEUS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW = 60  # seconds of live figures
SLOW_KEPT = 20
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    """Counts of durations in log-spaced buckets; percentiles read from the counts."""

    __slots__ = ("count", "counts")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS) + 1)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self.count += 1

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for i, n in enumerate(other.counts):
            if n:
                counts[i] += n
        self.count += other.count

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile in seconds (the upper bound of its bucket); 0 without samples."""
        if not self.count:
            return 0.0
        rank = math.ceil(p / 100 * self.count)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return _BOUNDS[i] if i < len(_BOUNDS) else _BOUNDS[-1]
        return _BOUNDS[-1]


class _Second:
    __slots__ = ("histogram", "number")

    def __init__(self) -> None:
        self.number = -1
        self.histogram = Histogram()


class _Window:
    """The last ``WINDOW`` seconds, one histogram each, reused in a ring."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = [_Second() for _ in range(WINDOW)]

    def add(self, now: float, duration: float) -> None:
        number = int(now)
        second = self.seconds[number % WINDOW]
        if second.number != number:
            second.number = number
            second.histogram = Histogram()
        second.histogram.add(duration)

    def merged(self, now: float) -> Histogram:
        total = Histogram()
        oldest = int(now) - WINDOW + 1
        for second in self.seconds:
            if second.number >= oldest:
                total.merge(second.histogram)
        return total

    def series(self, now: float) -> list[dict[str, float]]:
        newest = int(now)
        by_number = {s.number: s.histogram for s in self.seconds}
        points = []
        for number in range(newest - WINDOW + 1, newest + 1):
            histogram = by_number.get(number) or Histogram()
            points.append({
                "t": number, "requests": histogram.count,
                "p50_ms": _ms(histogram.percentile(50)), "p95_ms": _ms(histogram.percentile(95)),
                "p99_ms": _ms(histogram.percentile(99)),
            })
        return points


class RouteStats:
    """Everything counted for one route pattern."""

    __slots__ = ("cache_hits", "cache_misses", "duration_sum", "prometheus", "rate_limited", "requests", "status",
                 "timed_out", "window")

    def __init__(self) -> None:
        self.requests = 0
        self.status = dict.fromkeys(STATUS_CLASSES, 0)
        self.rate_limited = self.timed_out = self.cache_hits = self.cache_misses = 0
        self.window = _Window()
        self.prometheus = [0] * (len(PROMETHEUS_BUCKETS) + 1)  # per bucket, not cumulative
        self.duration_sum = 0.0


class StatsCollector:
    """Subscribe it to a gateway: ``gateway.events.subscribe(collector)``."""

    def __init__(self, *, slow_threshold: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.slow_threshold = slow_threshold
        self.clock = clock
        self.started = clock()
        self.routes: dict[str, RouteStats] = {}
        self.total = RouteStats()
        self.slow: deque[dict[str, Any]] = deque(maxlen=SLOW_KEPT)
        self.websockets_open = 0
        self.websockets_total = 0

    def __call__(self, event: Any) -> None:
        if isinstance(event, RequestEvent):
            self.record(event)
        elif isinstance(event, WebSocketEvent):
            if event.state == "open":
                self.websockets_open += 1
                self.websockets_total += 1
            elif event.accepted:
                self.websockets_open = max(0, self.websockets_open - 1)

    def record(self, event: RequestEvent) -> None:
        now = self.clock()
        route = self.routes.get(event.route)
        if route is None:
            route = self.routes[event.route] = RouteStats()
        status_class = f"{event.status // 100}xx" if 100 <= event.status < 600 else "5xx"
        bucket = bisect.bisect_left(PROMETHEUS_BUCKETS, event.duration)
        for stats in (route, self.total):
            stats.requests += 1
            stats.status[status_class] += 1
            stats.rate_limited += event.rate_limited
            stats.timed_out += event.timed_out
            if event.cache == "HIT":
                stats.cache_hits += 1
            elif event.cache == "MISS":
                stats.cache_misses += 1
            stats.window.add(now, event.duration)
            stats.prometheus[bucket] += 1
            stats.duration_sum += event.duration
        if event.duration >= self.slow_threshold:
            self.slow.append({
                "time": now, "method": event.method, "path": event.path, "status": event.status,
                "duration_ms": _ms(event.duration), "route": event.route,
            })

    def snapshot(self, gateway: Any = None) -> dict[str, Any]:
        """The dashboard's JSON: totals, the last minute's series, per route, breakers, backends, slow."""
        now = self.clock()
        window = self.total.window.merged(now)
        elapsed = min(WINDOW, max(1.0, now - self.started))
        routes = []
        for name, stats in sorted(self.routes.items()):
            merged = stats.window.merged(now)
            lookups = stats.cache_hits + stats.cache_misses
            routes.append({
                "route": name, "requests": stats.requests,
                "status": {k: v for k, v in stats.status.items() if v},
                "rate_limited": stats.rate_limited, "timed_out": stats.timed_out, "latency_ms": _percentiles(merged),
                "cache": {"hits": stats.cache_hits, "misses": stats.cache_misses,
                          "hit_ratio": round(stats.cache_hits / lookups, 4) if lookups else 0.0} if lookups else None,
            })
        return {
            "uptime_s": round(now - self.started, 3),
            "time": now,
            "totals": {
                "requests": self.total.requests, "rate_per_s": round(window.count / elapsed, 2),
                "status": dict(self.total.status), "rate_limited": self.total.rate_limited,
                "timed_out": self.total.timed_out, "latency_ms": _percentiles(window),
            },
            "series": self.total.window.series(now),
            "routes": routes,
            "breakers": _breakers(gateway) if gateway is not None else [],
            "backends": _backends(gateway) if gateway is not None else [],
            "websockets": {"open": self.websockets_open, "total": self.websockets_total},
            "slow": list(self.slow)[::-1],
        }


def _breakers(gateway: Any) -> list[dict[str, Any]]:
    monotonic = gateway.clock()  # breakers run on the gateway's monotonic clock, not the stats' wall clock
    return [
        {"route": pattern, "state": route.breaker.state(monotonic)}
        for pattern, route in gateway.routes.items() if route.breaker is not None
    ]


def _backends(gateway: Any) -> list[dict[str, Any]]:
    found = []
    for pool in gateway.pools:
        now = pool.clock()
        for backend in pool.backends:
            found.append({
                "url": backend.url, "healthy": backend.health.available(now), "in_flight": backend.in_flight,
                "breaker": backend.health.breaker.state(now), "checks_pass": backend.health.checks_pass,
            })
    return found


def _percentiles(histogram: Histogram) -> dict[str, float]:
    return {f"p{p}": _ms(histogram.percentile(p)) for p in (50, 95, 99)}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
