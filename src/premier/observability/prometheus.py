"""The Prometheus text exposition (format 0.0.4) of a :class:`~premier.observability.stats.StatsCollector`
and the gateway's live state. Labels are route *patterns* and backend URLs, both bounded by the
configuration, never raw paths.

Each worker process exposes its own figures; with ``--workers N`` Prometheus sees whichever worker answers
a scrape, so run one scrape target per worker (or one worker per port), or aggregate with ``sum`` over the
workers' series.
"""

from __future__ import annotations

from typing import Any

from premier.observability.stats import PROMETHEUS_BUCKETS, RouteStats, StatsCollector

__all__ = ["CONTENT_TYPE", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def exposition(stats: StatsCollector, gateway: Any = None) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    routes: list[tuple[str, RouteStats]] = sorted(stats.routes.items())
    family("premier_requests_total", "counter", "HTTP requests handled, by route pattern and status class.")
    for route, r in routes:
        for status_class, count in r.status.items():
            if count:
                lines.append(f'premier_requests_total{{route="{_label(route)}",status="{status_class}"}} {count}')
    family("premier_rate_limited_total", "counter", "Requests rejected by a rate limit, by route pattern.")
    for route, r in routes:
        lines.append(f'premier_rate_limited_total{{route="{_label(route)}"}} {r.rate_limited}')
    family("premier_timed_out_total", "counter", "Requests that ran past their timeout, by route pattern.")
    for route, r in routes:
        lines.append(f'premier_timed_out_total{{route="{_label(route)}"}} {r.timed_out}')
    family("premier_cache_lookups_total", "counter", "HTTP cache lookups by route pattern and result.")
    for route, r in routes:
        if r.cache_hits or r.cache_misses:
            lines.append(f'premier_cache_lookups_total{{route="{_label(route)}",result="hit"}} {r.cache_hits}')
            lines.append(f'premier_cache_lookups_total{{route="{_label(route)}",result="miss"}} {r.cache_misses}')
    family("premier_request_duration_seconds", "histogram", "Time from request to response end, by route pattern.")
    for route, r in routes:
        label = _label(route)
        cumulative = 0
        for bound, count in zip(PROMETHEUS_BUCKETS, r.prometheus, strict=False):
            cumulative += count
            lines.append(f'premier_request_duration_seconds_bucket{{route="{label}",le="{bound}"}} {cumulative}')
        lines.append(f'premier_request_duration_seconds_bucket{{route="{label}",le="+Inf"}} {r.requests}')
        lines.append(f'premier_request_duration_seconds_sum{{route="{label}"}} {_number(r.duration_sum)}')
        lines.append(f'premier_request_duration_seconds_count{{route="{label}"}} {r.requests}')
    family("premier_websocket_connections_open", "gauge", "WebSocket connections open now.")
    lines.append(f"premier_websocket_connections_open {stats.websockets_open}")
    family("premier_websocket_connections_total", "counter", "WebSocket connections accepted.")
    lines.append(f"premier_websocket_connections_total {stats.websockets_total}")
    if gateway is not None:
        snapshot = stats.snapshot(gateway)
        family("premier_circuit_breaker_open", "gauge", "1 while a route's circuit breaker is open or half-open.")
        for breaker in snapshot["breakers"]:
            lines.append(f'premier_circuit_breaker_open{{route="{_label(breaker["route"])}"}} '
                         f'{int(breaker["state"] != "closed")}')
        family("premier_backend_healthy", "gauge", "1 while a backend is in the rotation (standalone mode).")
        for backend in snapshot["backends"]:
            lines.append(f'premier_backend_healthy{{backend="{_label(backend["url"])}"}} {int(backend["healthy"])}')
        family("premier_backend_in_flight", "gauge", "Requests in flight to a backend (standalone mode).")
        for backend in snapshot["backends"]:
            lines.append(f'premier_backend_in_flight{{backend="{_label(backend["url"])}"}} {backend["in_flight"]}')
    family("premier_uptime_seconds", "gauge", "Seconds since the statistics started.")
    lines.append(f"premier_uptime_seconds {_number(float(stats.clock() - stats.started))}")
    return "\n".join(lines) + "\n"
