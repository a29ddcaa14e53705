"""The upstream pool's decisions without a network: balancing, passive health, active-check thresholds.
Time is a fake clock."""

from __future__ import annotations

from collections import Counter

from conftest import FakeClock
from premier.config.schema import HealthCheckConfig, PassiveHealthConfig, ServerConfig, UpstreamConfig
from premier.proxy import UpstreamPool
from premier.proxy.health import record


def _pool(clock: FakeClock, *weights: int, **upstream: object) -> UpstreamPool:
    servers = [ServerConfig(f"http://10.0.0.{i}:80", weight) for i, weight in enumerate(weights, 1)]
    return UpstreamPool(servers, UpstreamConfig(**upstream), clock=clock)  # type: ignore[arg-type]


def _names(pool: UpstreamPool, n: int) -> list[str]:
    names = []
    for _ in range(n):
        backend = pool.pick()
        assert backend is not None
        names.append(backend.host.rsplit(".", 1)[1])
    return names


def test_round_robin_rotates_through_equal_servers(clock: FakeClock) -> None:
    assert _names(_pool(clock, 1, 1, 1), 7) == ["1", "2", "3", "1", "2", "3", "1"]


def test_weights_are_honoured_and_spread_evenly(clock: FakeClock) -> None:
    pool = _pool(clock, 5, 1, 1)
    picks = _names(pool, 7)
    assert Counter(picks) == {"1": 5, "2": 1, "3": 1}
    assert picks != ["1"] * 5 + ["2", "3"]  # smooth: the light servers are not left for the end
    assert Counter(_names(pool, 700)) == {"1": 500, "2": 100, "3": 100}


def test_weighted_round_robin_is_the_same_rotation(clock: FakeClock) -> None:
    assert _names(_pool(clock, 2, 1, load_balancing="weighted_round_robin"), 6) == _names(_pool(clock, 2, 1), 6)


def test_least_connections_prefers_the_idle_server(clock: FakeClock) -> None:
    pool = _pool(clock, 1, 1, 1, load_balancing="least_connections")
    busy, also_busy, idle = pool.backends
    busy.in_flight, also_busy.in_flight = 4, 1
    assert {pool.pick() for _ in range(5)} == {idle}
    idle.in_flight = 2
    assert pool.pick() is also_busy


def test_least_connections_weighs_load_by_weight(clock: FakeClock) -> None:
    pool = _pool(clock, 4, 1, load_balancing="least_connections")
    big, small = pool.backends
    big.in_flight, small.in_flight = 3, 1  # 0.75 per unit of weight against 1.0
    assert pool.pick() is big


def test_consecutive_failures_take_a_backend_out_and_a_probe_brings_it_back(clock: FakeClock) -> None:
    pool = _pool(clock, 1, 1, passive_health=PassiveHealthConfig(failure_threshold=3, recovery_timeout=10))
    bad, good = pool.backends
    for _ in range(3):
        bad.health.failure(clock())
    assert {pool.pick() for _ in range(4)} == {good}
    clock.advance(10)
    assert pool.pick(exclude=[good]) is bad  # half-open: one probe
    assert pool.pick(exclude=[good]) is None  # only one at a time
    bad.health.success(clock())
    assert {pool.pick() for _ in range(4)} == {bad, good}


def test_a_failed_probe_reopens_the_breaker(clock: FakeClock) -> None:
    pool = _pool(clock, 1, passive_health=PassiveHealthConfig(failure_threshold=1, recovery_timeout=5))
    (backend,) = pool.backends
    backend.health.failure(clock())
    clock.advance(5)
    assert pool.pick() is backend
    backend.health.failure(clock())
    assert pool.pick() is None
    assert 4 <= pool.retry_after() <= 5


def test_a_high_failure_ratio_opens_without_consecutive_failures(clock: FakeClock) -> None:
    config = PassiveHealthConfig(failure_threshold=100, failure_ratio=0.5, window=10, min_requests=10)
    (backend,) = _pool(clock, 1, passive_health=config).backends
    for _ in range(6):  # alternate: never two failures in a row
        backend.health.success(clock())
        backend.health.failure(clock())
        clock.advance(0.5)
    assert not backend.health.available(clock())


def test_old_failures_leave_the_window(clock: FakeClock) -> None:
    config = PassiveHealthConfig(failure_threshold=100, failure_ratio=0.5, window=10, min_requests=10)
    (backend,) = _pool(clock, 1, passive_health=config).backends
    for _ in range(9):
        backend.health.failure(clock())
        backend.health.success(clock())
    clock.advance(11)
    for _ in range(20):
        backend.health.success(clock())
    backend.health.failure(clock())
    assert backend.health.available(clock())


def test_active_checks_flip_after_their_thresholds(clock: FakeClock) -> None:
    config = HealthCheckConfig(unhealthy_threshold=2, healthy_threshold=2)
    pool = _pool(clock, 1, 1, health_check=config)
    sick, well = pool.backends
    record(sick.health, False, config, sick.url)
    assert sick.health.available(clock())
    record(sick.health, False, config, sick.url)
    assert {pool.pick() for _ in range(3)} == {well}
    record(sick.health, True, config, sick.url)
    assert not sick.health.available(clock())
    record(sick.health, True, config, sick.url)
    assert sick.health.available(clock())


def test_no_healthy_backend_gives_none(clock: FakeClock) -> None:
    pool = _pool(clock, 1, 1, passive_health=PassiveHealthConfig(failure_threshold=1))
    for backend in pool.backends:
        backend.health.failure(clock())
    assert pool.pick() is None


async def test_a_cancelled_attempt_gives_its_half_open_probe_back(clock: FakeClock) -> None:
    """A route timeout cancelling a request while it connects must not keep the backend's only
    half-open probe: the backend would never be tried again."""
    import asyncio
    import contextlib
    import socket

    from premier.asgi.client import ClientIdentity
    from premier.proxy import ReverseProxy

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(4):  # fill the accept queue: later connections hang in the handshake
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    try:
        upstream = UpstreamConfig(passive_health=PassiveHealthConfig(failure_threshold=1, recovery_timeout=10))
        pool = UpstreamPool([ServerConfig(f"http://127.0.0.1:{address[1]}")], upstream, clock=clock)
        (backend,) = pool.backends
        backend.health.failure(clock())
        clock.advance(10)  # half-open: one probe allowed
        proxy = ReverseProxy(pool, identity=ClientIdentity())
        scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"",
                 "headers": [], "client": ("127.0.0.1", 1), "scheme": "http"}

        async def receive() -> dict[str, object]:
            return {"type": "http.disconnect"}

        async def send(message: object) -> None:
            pass

        task = asyncio.create_task(proxy(scope, receive, send))
        await asyncio.sleep(0.2)
        assert not backend.health.available(clock())  # the probe is out
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert backend.health.available(clock())  # and back
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
