"""Rate limiting and circuit breaking through the gateway, as clients see them: who shares a counter,
the 429/503 answers and their headers, leaky-bucket delays, and what survives a hot reload."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from _asgi import Backend, ClientLeft, call, config, paths, upload
from conftest import FakeClock
from premier.asgi import ASGIGateway
from premier.errors import ConfigError
from premier.providers import AsyncInMemoryCache


def limit(quota: int = 2, duration: float = 100, **options: Any) -> dict[str, Any]:
    return {"rate_limit": {"quota": quota, "duration": duration, **options}}


def limited_gateway(provider: AsyncInMemoryCache, app: Any = None, **options: Any) -> ASGIGateway:
    trusted = options.pop("trusted_proxies", None)
    top = {"trusted_proxies": trusted} if trusted else {}
    return ASGIGateway(paths(("/*", limit(**options)), **top), app=app or Backend(), cache_provider=provider)


async def statuses(gateway: ASGIGateway, n: int, path: str = "/r", **kwargs: Any) -> list[int]:
    return [(await call(gateway, "GET", path, **kwargs)).status for _ in range(n)]


# -- whose counter ---------------------------------------------------------------------------------
async def test_each_client_address_has_its_own_quota(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider)
    alice, bob = ("10.0.0.1", 5000), ("10.0.0.2", 5000)
    assert await statuses(gateway, 3, client=alice) == [200, 200, 429]
    assert await statuses(gateway, 2, client=bob) == [200, 200]
    assert await statuses(gateway, 1, client=("10.0.0.1", 6000)) == [429]  # the port is not the client


async def test_each_route_has_its_own_counters(provider: AsyncInMemoryCache) -> None:
    gateway = ASGIGateway(paths(("/a/*", limit(1)), ("/b/*", limit(1))), app=Backend(), cache_provider=provider)
    assert await statuses(gateway, 1, "/a/1") == [200]
    assert await statuses(gateway, 1, "/b/1") == [200]
    assert await statuses(gateway, 1, "/a/2") == [429]  # paths of one route share its counter
    assert await statuses(gateway, 1, "/b") == [429]


async def test_global_key_shares_one_counter(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, key="global")
    assert (await call(gateway, client=("1.1.1.1", 1))).status == 200
    assert (await call(gateway, client=("2.2.2.2", 1))).status == 200
    assert (await call(gateway, client=("3.3.3.3", 1))).status == 429
    assert (await call(gateway, client=None)).status == 429


async def test_header_key_counts_per_header_value(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1, key="header:X-Api-Key")
    k1, k2 = [("x-api-key", "k1")], [("X-API-KEY", "k2")]
    assert (await call(gateway, headers=k1, client=("1.1.1.1", 1))).status == 200
    assert (await call(gateway, headers=k1, client=("2.2.2.2", 1))).status == 429  # same key, other address
    assert (await call(gateway, headers=k2, client=("1.1.1.1", 1))).status == 200
    # without the header, the client address is the key (and a key named like an address is not it)
    assert (await call(gateway, client=("1.1.1.1", 1))).status == 200
    assert (await call(gateway, client=("1.1.1.1", 1))).status == 429
    assert (await call(gateway, client=("3.3.3.3", 1))).status == 200
    assert (await call(gateway, headers=[("x-api-key", "3.3.3.3")], client=("4.4.4.4", 1))).status == 200


async def test_a_long_header_key_is_kept_as_its_digest(provider: AsyncInMemoryCache) -> None:
    # Servers accept headers of hundreds of KB: the rate-limit key must not keep one per client.
    gateway = limited_gateway(provider, quota=1, key="header:X-Api-Key")
    long_key = [("x-api-key", "k" * 100_000)]
    assert (await call(gateway, headers=long_key)).status == 200
    assert (await call(gateway, headers=long_key)).status == 429  # still one counter per value
    assert (await call(gateway, headers=[("x-api-key", "k" * 99_999 + "j")])).status == 200
    assert max(len(key) for key in provider._limits.data) < 200


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1)
    peer = ("203.0.113.9", 1)
    assert (await call(gateway, headers=[("x-forwarded-for", "1.1.1.1")], client=peer)).status == 200
    # a client cannot get a fresh quota by inventing addresses
    assert (await call(gateway, headers=[("x-forwarded-for", "2.2.2.2")], client=peer)).status == 429


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1, trusted_proxies=["10.0.0.0/8"])
    peer = ("203.0.113.9", 1)
    assert (await call(gateway, headers=[("x-forwarded-for", "1.1.1.1")], client=peer)).status == 200
    assert (await call(gateway, headers=[("x-forwarded-for", "2.2.2.2")], client=peer)).status == 429


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1, trusted_proxies=["10.0.0.0/8", "192.168.1.1"])
    proxy = ("10.1.2.3", 1)

    async def status(forwarded: str, peer: tuple[str, int] = proxy) -> int:
        return (await call(gateway, headers=[("x-forwarded-for", forwarded)], client=peer)).status

    assert await status("1.1.1.1") == 200
    assert await status("2.2.2.2") == 200  # another client behind the same proxy
    assert await status("1.1.1.1") == 429
    # the rightmost address that is not a trusted proxy is the client; what it claims before that is
    # its own invention
    assert await status("6.6.6.6, 2.2.2.2") == 429
    assert await status("7.7.7.7, 2.2.2.2, 10.9.9.9, 192.168.1.1") == 429
    assert await status("5.5.5.5", peer=("192.168.1.1", 1)) == 200
    assert await status("5.5.5.5, 10.0.0.7") == 429


async def test_x_forwarded_for_split_over_several_headers(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1, trusted_proxies=["10.0.0.0/8"])
    proxy = ("10.1.2.3", 1)
    first = await call(gateway, headers=[("x-forwarded-for", "8.8.8.8"), ("x-forwarded-for", "10.0.0.9")], client=proxy)
    assert first.status == 200
    assert (await call(gateway, headers=[("x-forwarded-for", "8.8.8.8")], client=proxy)).status == 429


# -- what a rejected or admitted client gets ------------------------------------------------------
async def test_rejection_is_json_with_the_configured_message(provider: AsyncInMemoryCache) -> None:
    message = 'Slow "down", \\ bitte — für Sie ✓'
    gateway = limited_gateway(provider, quota=1, error_message=message)
    await call(gateway)
    rejected = await call(gateway)
    assert rejected.status == 429
    assert rejected.json() == {"error": message, "status": 429}
    assert json.loads(rejected.body.decode("utf-8"))["error"] == message


async def test_custom_error_status(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1, error_status=503)
    await call(gateway)
    rejected = await call(gateway)
    assert rejected.status == 503
    assert rejected.json() == {"error": "Rate limit exceeded", "status": 503}


async def test_rate_limit_headers(provider: AsyncInMemoryCache, clock: FakeClock) -> None:
    gateway = limited_gateway(provider, quota=2, duration=100)
    clock.advance(30)  # 70 s left in the fixed window
    first, second, rejected = [await call(gateway) for _ in range(3)]
    assert first.header("ratelimit-policy") == '"premier";q=2;w=100'
    assert first.header("ratelimit") == '"premier";r=1;t=70'
    assert second.header("ratelimit") == '"premier";r=0;t=70'
    assert first.header("retry-after") is None
    assert rejected.status == 429
    assert rejected.header("retry-after") == "70"
    assert rejected.header("ratelimit") == '"premier";r=0;t=70'
    assert rejected.header("ratelimit-policy") == '"premier";q=2;w=100'
    assert len(rejected.headers_named("ratelimit")) == 1
    clock.advance(70)  # the next window
    again = await call(gateway)
    assert again.status == 200
    assert again.header("ratelimit") == '"premier";r=1;t=100'


async def test_app_never_sees_rejected_requests(provider: AsyncInMemoryCache) -> None:
    app = Backend()
    gateway = limited_gateway(provider, app, quota=2)
    await statuses(gateway, 5)
    assert app.calls == 2


async def test_concurrent_requests_never_exceed_the_quota(provider: AsyncInMemoryCache) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold)
    gateway = limited_gateway(provider, app, quota=10)
    tasks = [asyncio.create_task(call(gateway)) for _ in range(50)]
    await asyncio.sleep(0)
    hold.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.status for r in results) == [200] * 10 + [429] * 40
    assert app.calls == 10


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
async def test_every_algorithm_limits_through_the_gateway(provider: AsyncInMemoryCache, algorithm: str) -> None:
    gateway = limited_gateway(provider, quota=3, algorithm=algorithm)
    assert await statuses(gateway, 4) == [200, 200, 200, 429]


async def test_leaky_bucket_delays_then_rejects(provider: AsyncInMemoryCache) -> None:
    # quota 20 per second drains one request every 50 ms; the fake clock stands still, so the delays
    # asked for are exact, and they are real sleeps of the gateway.
    gateway = limited_gateway(provider, quota=20, duration=1, algorithm="leaky_bucket", bucket_size=1)
    elapsed = []
    results = []
    for _ in range(3):
        started = time.perf_counter()
        results.append(await call(gateway))
        elapsed.append(time.perf_counter() - started)
    assert [r.status for r in results] == [200, 200, 429]
    assert elapsed[0] < 0.04
    assert 0.045 <= elapsed[1] < 0.5
    assert elapsed[2] < 0.04  # a rejection is not delayed
    assert int(results[2].header("retry-after") or 0) >= 1


async def test_leaky_bucket_queues_concurrent_requests(provider: AsyncInMemoryCache) -> None:
    app = Backend()
    gateway = limited_gateway(provider, app, quota=20, duration=1, algorithm="leaky_bucket", bucket_size=2)
    finished: list[float] = []
    started = time.perf_counter()

    async def one() -> int:
        result = await call(gateway)
        finished.append(time.perf_counter() - started)
        return result.status

    codes = await asyncio.gather(*(one() for _ in range(4)))
    assert sorted(codes) == [200, 200, 200, 429]
    done = sorted(finished)
    assert done[0] < 0.04  # the rejection and the first request do not wait
    assert done[1] < 0.04
    assert 0.045 <= done[2] < 0.5
    assert 0.095 <= done[3] < 0.5


# -- reload ----------------------------------------------------------------------------------------
async def test_rate_limit_state_survives_an_identical_reload(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=2)
    assert await statuses(gateway, 2) == [200, 200]
    gateway.reload(gateway.config)
    assert await statuses(gateway, 1) == [429]
    gateway.reload(paths(("/*", limit(2))))  # an equal configuration built anew
    assert await statuses(gateway, 1) == [429]


async def test_rate_limit_state_survives_a_changed_quota(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=2)
    assert await statuses(gateway, 2) == [200, 200]
    gateway.reload(paths(("/*", {**limit(3), "monitoring": {"log_threshold": 5}})))
    assert await statuses(gateway, 2) == [200, 429]  # two of the three already used


async def test_changed_pattern_starts_fresh_counters(provider: AsyncInMemoryCache) -> None:
    gateway = ASGIGateway(paths(("/api/*", limit(1))), app=Backend(), cache_provider=provider)
    assert await statuses(gateway, 2, "/api/x") == [200, 429]
    gateway.reload(paths(("/api/{name}", limit(1))))
    assert await statuses(gateway, 2, "/api/x") == [200, 429]


async def test_invalid_configuration_never_reaches_reload(provider: AsyncInMemoryCache) -> None:
    gateway = limited_gateway(provider, quota=1)
    before = gateway.config
    with pytest.raises(ConfigError, match=r"premier\.paths\[0\]\.features\.rate_limit\.quota"):
        gateway.reload(config({"paths": [{"pattern": "/*", "features": limit(0)}]}))
    with pytest.raises(ConfigError, match="algorithm"):
        config({"paths": [{"pattern": "/*", "features": limit(1, algorithm="leaky")}]})
    assert gateway.config is before
    assert await statuses(gateway, 2) == [200, 429]


async def test_requests_in_flight_finish_on_their_policy(provider: AsyncInMemoryCache) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold)
    gateway = limited_gateway(provider, app, quota=5)
    running = asyncio.create_task(call(gateway))
    await app.entered.wait()
    gateway.reload(paths(("/*", limit(7))))
    hold.set()
    assert (await running).header("ratelimit-policy") == '"premier";q=5;w=100'
    assert (await call(gateway)).header("ratelimit-policy") == '"premier";q=7;w=100'


# -- circuit breaker -------------------------------------------------------------------------------
def breaker(threshold: int = 2, recovery: float = 30, **options: Any) -> dict[str, Any]:
    return {"circuit_breaker": {"failure_threshold": threshold, "recovery_timeout": recovery, **options}}


def breaker_gateway(app: Any, clock: FakeClock, features: dict[str, Any] | None = None) -> ASGIGateway:
    return ASGIGateway(paths(("/fragile/*", features or breaker()), ("/other", breaker())), app=app, clock=clock)


async def test_breaker_opens_on_5xx_and_answers_503(clock: FakeClock) -> None:
    app = Backend(status=500)
    gateway = breaker_gateway(app, clock)
    assert await statuses(gateway, 2, "/fragile") == [500, 500]
    refused = await call(gateway, path="/fragile/x")
    assert refused.status == 503
    assert refused.json() == {"error": "Service unavailable: circuit breaker is open", "status": 503}
    assert refused.header("retry-after") == "30"
    assert app.calls == 2
    clock.advance(10.5)
    assert (await call(gateway, path="/fragile")).header("retry-after") == "20"
    assert (await call(gateway, path="/other")).status == 500  # each route has its own breaker


async def test_breaker_counts_exceptions(clock: FakeClock) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ConnectionError("database is down")

    gateway = breaker_gateway(broken, clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await call(gateway, path="/fragile")
    assert (await call(gateway, path="/fragile")).status == 503


async def test_breaker_ignores_client_errors_and_resets_on_success(clock: FakeClock) -> None:
    app = Backend(status=lambda n: {1: 500, 2: 200, 3: 500}.get(n, 404))
    gateway = breaker_gateway(app, clock)
    assert await statuses(gateway, 6, "/fragile") == [500, 200, 500, 404, 404, 404]


async def test_breaker_counts_timeouts(clock: FakeClock) -> None:
    never = asyncio.Event()
    app = Backend(hold=never)
    features = {**breaker(), "timeout": {"seconds": 0.02}}
    gateway = breaker_gateway(app, clock, features)
    assert await statuses(gateway, 2, "/fragile") == [504, 504]
    assert (await call(gateway, path="/fragile")).status == 503
    assert app.calls == 2


async def abandon(gateway: ASGIGateway, path: str = "/fragile") -> None:
    """An upload whose client leaves after its first part."""
    gone = asyncio.Event()
    gone.set()
    try:
        await call(gateway, "POST", path, body=b"first part", more_body=True, disconnect=gone)
    except ClientLeft:
        pass


@pytest.mark.parametrize("ends", ["raises", "answers 500, raises", "returns"])
async def test_clients_that_abandon_uploads_are_no_breaker_failures(clock: FakeClock, ends: str) -> None:
    gateway = breaker_gateway(upload(ends), clock)
    for _ in range(3):
        await abandon(gateway)
    assert (await call(gateway, "POST", "/fragile", body=b"whole")).status == 200
    assert gateway.routes["/fragile/*"].breaker.failures == 0  # type: ignore[union-attr]


async def test_a_probe_whose_client_left_gives_its_place_to_the_next(clock: FakeClock) -> None:
    gateway = breaker_gateway(upload("answers 500, raises", status=lambda n: 500 if n <= 2 else 200), clock)
    assert await statuses(gateway, 2, "/fragile") == [500, 500]
    clock.advance(30)  # half-open: one probe at a time
    await abandon(gateway)  # the probe's client left: no verdict, the breaker stays half-open
    assert (await call(gateway, path="/fragile")).status == 200  # the next probe, which closes it
    assert await statuses(gateway, 2, "/fragile") == [200, 200]


async def test_half_open_admits_a_bounded_number_of_probes(clock: FakeClock) -> None:
    hold = asyncio.Event()
    hold.set()
    app = Backend(status=lambda n: 500 if n <= 2 else 200, hold=hold)
    gateway = breaker_gateway(app, clock, breaker(half_open_max_calls=2))
    assert await statuses(gateway, 2, "/fragile") == [500, 500]
    clock.advance(30)
    hold.clear()
    probes = [asyncio.create_task(call(gateway, path="/fragile")) for _ in range(2)]
    while app.calls < 4:
        await asyncio.sleep(0)
    extra = await call(gateway, path="/fragile")
    assert extra.status == 503
    assert extra.header("retry-after") == "1"
    assert app.calls == 4  # the third request never reached the app
    hold.set()
    assert [r.status for r in await asyncio.gather(*probes)] == [200, 200]
    assert await statuses(gateway, 3, "/fragile") == [200, 200, 200]  # closed again


async def test_a_failed_probe_opens_the_breaker_again(clock: FakeClock) -> None:
    app = Backend(status=500)
    gateway = breaker_gateway(app, clock)
    await statuses(gateway, 2, "/fragile")
    clock.advance(30)
    assert await statuses(gateway, 2, "/fragile") == [500, 503]
    assert (await call(gateway, path="/fragile")).header("retry-after") == "30"


async def test_breaker_state_survives_reload_when_unchanged(clock: FakeClock) -> None:
    app = Backend(status=500)
    gateway = breaker_gateway(app, clock)
    await statuses(gateway, 2, "/fragile")
    # Other features change; the breaker's settings do not: still open.
    gateway.reload(paths(("/fragile/*", {**breaker(), "monitoring": {"log_threshold": 1}}), ("/other", breaker())))
    assert (await call(gateway, path="/fragile")).status == 503


async def test_breaker_resets_when_its_settings_change(clock: FakeClock) -> None:
    app = Backend(status=500)
    gateway = breaker_gateway(app, clock)
    await statuses(gateway, 2, "/fragile")
    gateway.reload(paths(("/fragile/*", breaker(threshold=3)), ("/other", breaker())))
    assert await statuses(gateway, 4, "/fragile") == [500, 500, 500, 503]


async def test_breaker_open_is_not_retried(clock: FakeClock) -> None:
    app = Backend(status=500)
    features = {**breaker(threshold=1), "retry": {"max_attempts": 3, "wait": 0, "retry_on_status": [500]}}
    gateway = breaker_gateway(app, clock, features)
    first = await call(gateway, path="/fragile")
    # the first attempt's 500 opened the breaker; the retry's next attempt was refused, and that
    # refusal is passed on rather than retried again
    assert first.status == 503
    assert app.calls == 1
    assert (await call(gateway, path="/fragile")).status == 503
    assert app.calls == 1


async def test_a_breaker_refusal_on_a_limited_route_carries_the_limit_without_spending_it() -> None:
    clock = FakeClock()
    app = Backend(status=lambda n: 500)
    gateway = ASGIGateway(
        paths(("/api/*", {
            "rate_limit": {"quota": 5, "duration": 60},
            "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30},
        })),
        app=app, clock=clock, cache_provider=AsyncInMemoryCache(clock=clock),
    )
    assert (await call(gateway, path="/api/x")).status == 500  # opens the breaker; spends 1 of 5
    refused = await call(gateway, path="/api/x")
    assert refused.status == 503
    assert refused.header("ratelimit-policy") == '"premier";q=5;w=60'
    assert refused.header("ratelimit").startswith('"premier";r=4;')  # seen, not spent
    assert (await call(gateway, path="/api/x")).header("ratelimit").startswith('"premier";r=4;')


def test_a_config_that_is_not_a_gateway_config_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"GatewayConfig\.from_file"):
        ASGIGateway("gateway.yaml", app=Backend())  # type: ignore[arg-type]
