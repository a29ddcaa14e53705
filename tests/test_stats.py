"""The statistics collector's arithmetic with a fake clock, and the configuration's round trip to YAML
(what the dashboard's editor shows must load back to the same configuration)."""

from __future__ import annotations

import pytest

from conftest import FakeClock
from premier.config import GatewayConfig
from premier.config.dump import to_yaml
from premier.observability.events import RequestEvent
from premier.observability.stats import Histogram, StatsCollector


def event(route: str = "/a/*", status: int = 200, duration: float = 0.01, **kwargs: object) -> RequestEvent:
    return RequestEvent(route, "GET", "/a/1", status, duration, "127.0.0.1", **kwargs)  # type: ignore[arg-type]


def test_percentiles_are_within_a_bucket_of_the_truth() -> None:
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    for p, truth in ((50, 0.5), (95, 0.95), (99, 0.99)):
        assert truth <= histogram.percentile(p) <= truth * 1.16


def test_the_live_window_slides_and_totals_do_not(clock: FakeClock) -> None:
    stats = StatsCollector(clock=clock)
    for _ in range(30):
        stats(event(duration=0.2))
    clock.advance(30)
    live = stats.snapshot()["totals"]
    assert live["requests"] == 30 and live["rate_per_s"] == 1.0 and live["latency_ms"]["p50"] >= 200
    clock.advance(31)
    later = stats.snapshot()
    assert later["totals"]["requests"] == 30
    assert later["totals"]["rate_per_s"] == 0 and later["totals"]["latency_ms"] == {"p50": 0, "p95": 0, "p99": 0}
    assert sum(point["requests"] for point in later["series"]) == 0


def test_status_classes_limits_timeouts_cache_and_slow_requests(clock: FakeClock) -> None:
    stats = StatsCollector(slow_threshold=1.0, clock=clock)
    stats(event(status=503, rate_limited=True))
    stats(event(status=504, timed_out=True, duration=1.5))
    stats(event(route="/c", cache="HIT"))
    stats(event(route="/c", cache="MISS"))
    snapshot = stats.snapshot()
    assert snapshot["totals"]["status"] == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 2}
    assert (snapshot["totals"]["rate_limited"], snapshot["totals"]["timed_out"]) == (1, 1)
    routes = {r["route"]: r for r in snapshot["routes"]}
    assert routes["/a/*"]["cache"] is None
    assert routes["/c"]["cache"] == {"hits": 1, "misses": 1, "hit_ratio": 0.5}
    assert [s["status"] for s in snapshot["slow"]] == [504]


def test_memory_follows_route_patterns_not_traffic(clock: FakeClock) -> None:
    stats = StatsCollector(clock=clock)
    for i in range(5000):
        stats(event(route=("/a/*", "/b/*")[i % 2], duration=i / 5000))
        if i % 100 == 0:
            clock.advance(1)
    assert set(stats.routes) == {"/a/*", "/b/*"}
    assert len(stats.slow) <= 20
    assert all(len(second.histogram.counts) == len(Histogram().counts) for second in stats.total.window.seconds)


RICH = """
premier:
  keyspace: shop
  servers: ["http://b1:8000", {url: "http://b2:8000/base", weight: 3}]
  upstream:
    load_balancing: least_connections
    read_timeout: 12.5
    preserve_host: true
    health_check: {path: /healthz, interval: 2}
    passive_health: {failure_threshold: 4, failure_ratio: 0.25}
  trusted_proxies: ["10.0.0.0/8"]
  storage: {url: "redis://127.0.0.1:6379/3", on_backend_error: deny}
  dashboard: {open_on_loopback: true, save_config: true, metrics_path: null}
  default_features: {timeout: {seconds: 9}, monitoring: {log_threshold: 0.2}}
  paths:
    - pattern: "/api/users/{user_id}"
      servers: ["http://users:9000"]
      strip_prefix: /api
      features:
        cache: {expire_s: 30, cache_key: "user:{user_id}", max_entry_bytes: 2048}
        rate_limit: {quota: 10, duration: 1.5, algorithm: leaky_bucket, bucket_size: 4, key: "header:X-Api-Key",
                     error_status: 503, error_message: 'Slow "down"'}
        retry: {max_attempts: 4, wait: [0.1, 0.2], exceptions: [ConnectionError], retry_on_status: [503]}
        circuit_breaker: {failure_threshold: 2, recovery_timeout: 5, half_open_max_calls: 2, shared: true}
        websocket: {message_rate: {quota: 5, duration: 1}, idle_timeout: 30, max_message_bytes: 1000}
        timeout: null
    - pattern: "^/v[0-9]+/items$"
      features: {monitoring: null}
"""


def test_every_setting_survives_a_round_trip_through_yaml() -> None:
    config = GatewayConfig.from_yaml(RICH)
    assert GatewayConfig.from_yaml(to_yaml(config)) == config
    assert GatewayConfig.from_yaml(to_yaml(GatewayConfig())) == GatewayConfig()


def test_the_dump_leaves_the_token_out() -> None:
    config = GatewayConfig.from_yaml("premier: {dashboard: {token: hunter2}}")
    assert "hunter2" not in to_yaml(config)
    with pytest.raises(ValueError, match=r"dashboard\.token"):
        GatewayConfig.from_yaml(to_yaml(config))  # which is why the dashboard puts the running one back
