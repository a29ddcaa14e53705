"""Monitoring through the gateway: one RequestEvent per request for subscribers, and slow requests
logged on the ``premier`` logger."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from _asgi import Backend, call, paths
from conftest import FakeClock
from premier.asgi import ASGIGateway, GatewayConfig
from premier.observability.events import RequestEvent
from premier.providers import AsyncInMemoryCache


async def test_one_event_per_request_with_what_happened(provider: AsyncInMemoryCache, clock: FakeClock) -> None:
    cfg = paths(("/items/*", {"cache": {}, "rate_limit": {"quota": 2, "duration": 100}}), ("/plain", {}))
    gateway = ASGIGateway(cfg, app=Backend(), cache_provider=provider, wall_clock=clock)
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    client = ("198.51.100.7", 4000)
    for path in ("/items/1", "/items/1", "/items/2", "/plain", "/nowhere"):
        await call(gateway, path=path, client=client)
    summary = [(e.route, e.method, e.path, e.status, e.cache, e.rate_limited, e.client) for e in events]
    assert summary == [
        ("/items/*", "GET", "/items/1", 200, "MISS", False, "198.51.100.7"),
        ("/items/*", "GET", "/items/1", 200, "HIT", False, "198.51.100.7"),
        ("/items/*", "GET", "/items/2", 429, "", True, "198.51.100.7"),
        ("/plain", "GET", "/plain", 200, "", False, "198.51.100.7"),
        ("(unmatched)", "GET", "/nowhere", 200, "", False, "198.51.100.7"),
    ]
    assert all(e.duration > 0 for e in events)
    assert not any(e.timed_out for e in events)


async def test_events_for_a_gateway_without_any_policy() -> None:
    gateway = ASGIGateway(GatewayConfig(), app=Backend(status=201))
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    await call(gateway, "POST", "/a//b")
    (event,) = events
    assert (event.route, event.method, event.path, event.status) == ("(unmatched)", "POST", "/a/b", 201)


async def test_unsubscribe_stops_the_events() -> None:
    gateway = ASGIGateway(paths(("/*", {"monitoring": {"log_threshold": 10}})), app=Backend())
    events: list[RequestEvent] = []
    unsubscribe = gateway.events.subscribe(events.append)
    await call(gateway)
    unsubscribe()
    await call(gateway)
    await call(gateway, path="/x")
    assert len(events) == 1


async def test_a_failing_subscriber_is_dropped_and_the_request_unharmed(caplog: pytest.LogCaptureFixture) -> None:
    gateway = ASGIGateway(GatewayConfig(), app=Backend())
    good: list[RequestEvent] = []

    def bad(event: Any) -> None:
        raise RuntimeError("subscriber bug")

    gateway.events.subscribe(bad)
    gateway.events.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="premier"):
        assert (await call(gateway)).status == 200
    assert (await call(gateway)).status == 200
    assert len(good) == 2
    assert len([r for r in caplog.records if "subscriber" in r.getMessage()]) == 1


async def test_an_event_is_emitted_when_the_app_raises() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    gateway = ASGIGateway(paths(("/*", {"timeout": {"seconds": 5}})), app=broken)
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    with pytest.raises(RuntimeError):
        await call(gateway)
    (event,) = events
    assert event.status != 200


async def test_slow_requests_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.04)
        await Backend(status=202)(scope, receive, send)

    gateway = ASGIGateway(paths(("/slow/*", {"monitoring": {"log_threshold": 0.03}})), app=slow)
    with caplog.at_level(logging.DEBUG, logger="premier"):
        await call(gateway, "PUT", "/slow/x", client=("10.1.2.3", 999))
    (record,) = caplog.records
    message = record.getMessage()
    assert record.name == "premier"
    assert record.levelno == logging.WARNING
    for part in ("PUT", "/slow/x", "202", "10.1.2.3"):
        assert part in message
    seconds = float(message.split(" in ")[1].split("s")[0])
    assert 0.04 <= seconds < 1


async def test_a_newline_in_the_path_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    # /x%0A2025-01-01 ... WARNING premier: admin login ok: a decoded path keeps its control characters
    gateway = ASGIGateway(paths(("/*", {"monitoring": {"log_threshold": 0}})), app=Backend())
    with caplog.at_level(logging.WARNING, logger="premier"):
        await call(gateway, path="/x\n2025-01-01 00:00:00 WARNING premier: admin login ok\r\x1b[2J")
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert "/x\\n2025-01-01 00:00:00 WARNING premier: admin login ok\\r\\x1b[2J" in message


async def test_fast_requests_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    gateway = ASGIGateway(paths(("/*", {"monitoring": {"log_threshold": 5}})), app=Backend())
    with caplog.at_level(logging.DEBUG, logger="premier"):
        for _ in range(5):
            await call(gateway)
    assert caplog.records == []


async def test_log_threshold_zero_logs_every_request_including_rejections(
    provider: AsyncInMemoryCache, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = paths(("/*", {"monitoring": {"log_threshold": 0}, "rate_limit": {"quota": 1, "duration": 100}}))
    gateway = ASGIGateway(cfg, app=Backend(), cache_provider=provider)
    with caplog.at_level(logging.WARNING, logger="premier"):
        await call(gateway, path="/a")
        await call(gateway, path="/a")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "-> 200" in messages[0]
    assert "-> 429" in messages[1]


async def test_default_monitoring_applies_to_unmatched_paths(caplog: pytest.LogCaptureFixture) -> None:
    cfg = paths(("/quiet", {"monitoring": None}), default_features={"monitoring": {"log_threshold": 0}})
    gateway = ASGIGateway(cfg, app=Backend())
    with caplog.at_level(logging.WARNING, logger="premier"):
        await call(gateway, path="/anything")
        await call(gateway, path="/quiet")
    assert [("/anything" in r.getMessage()) for r in caplog.records] == [True]


async def test_an_app_exception_is_reported_as_status_500() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    gateway = ASGIGateway(paths(("/*", {"monitoring": {"log_threshold": 10}})), app=broken)
    events: list[Any] = []
    gateway.events.subscribe(events.append)
    with pytest.raises(RuntimeError, match="boom"):
        await call(gateway, path="/x")
    assert [(e.route, e.status) for e in events] == [("/*", 500)]
