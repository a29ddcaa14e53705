"""The gateway as a well-behaved pure ASGI middleware: other scope types untouched, request bodies not
read unless a feature needs them, responses streamed, app exceptions propagated, and the middleware
form working under Starlette."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from _asgi import Backend, call, http_scope, paths
from conftest import FakeClock
from premier.asgi import ASGIGateway, GatewayConfig, PremierMiddleware
from premier.providers import AsyncInMemoryCache

EVERYTHING_BUT_RETRY = {
    "cache": {},
    "rate_limit": {"quota": 100, "duration": 100},
    "timeout": {"seconds": 5},
    "circuit_breaker": {"failure_threshold": 5},
    "monitoring": {"log_threshold": 5},
}


def busy_gateway(app: Any, **kwargs: Any) -> ASGIGateway:
    """Every feature on every path, by default and on a matching pattern."""
    cfg = paths(("/api/*", EVERYTHING_BUT_RETRY), default_features=EVERYTHING_BUT_RETRY)
    return ASGIGateway(cfg, app=app, **kwargs)


@pytest.mark.parametrize("scope_type", ["lifespan", "webtransport", "x-custom"])  # WebSockets: test_websocket.py
async def test_other_scopes_pass_straight_through(scope_type: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))
        await send({"type": "done"})

    gateway = busy_gateway(app)
    sent: list[Any] = []
    scope = {"type": scope_type, "path": "/api/x", "headers": [], "client": ("1.2.3.4", 1)}

    async def receive() -> Any:
        return {"type": f"{scope_type}.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    for _ in range(3):  # not counted by the rate limit, not cached, ...
        await gateway(scope, receive, send)
    assert len(seen) == 3
    assert all(s is scope and r is receive for s, r, _ in seen)
    # (lifespan messages pass through a send that watches for shutdown, to close what the gateway owns)
    assert sent == [{"type": "done"}] * 3
    assert scope == {"type": scope_type, "path": "/api/x", "headers": [], "client": ("1.2.3.4", 1)}


async def test_lifespan_runs_through_the_gateway() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await busy_gateway(app)({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_an_unmatched_request_reaches_the_app_as_it_came() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))
        await Backend()(scope, receive, send)

    gateway = ASGIGateway(paths(("/api/*", {"rate_limit": {"quota": 1, "duration": 100}})), app=app)
    scope = http_scope("GET", "/public")

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    await gateway(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert seen[0][0] is scope


@pytest.mark.parametrize("path", ["/api/upload", "/elsewhere"])
async def test_request_body_is_not_read_by_the_gateway(path: str) -> None:
    log: list[str] = []

    async def reads_itself(scope: Any, receive: Any, send: Any) -> None:
        log.append("app starts")
        while True:
            message = await receive()
            log.append(f"app got {message['body']!r}")
            if not message.get("more_body"):
                break
        await Backend()(scope, receive, send)

    gateway = busy_gateway(reads_itself)
    response = await call(gateway, "POST", path, body=[b"one", b"two", b"three"], receive_log=log)
    assert response.status == 200
    assert log == [
        "app starts",
        "receive b'one'", "app got b'one'",
        "receive b'two'", "app got b'two'",
        "receive b'three'", "app got b'three'",
    ]


FEATURE_SETS = {
    "rate_limit+timeout+monitoring": {
        "rate_limit": {"quota": 100, "duration": 100}, "timeout": {"seconds": 5}, "monitoring": {"log_threshold": 0.0},
    },
    "cache miss": {"cache": {}},
    "breaker+retry": {"circuit_breaker": {}, "retry": {"wait": 0}},
    "all": {**EVERYTHING_BUT_RETRY, "retry": {"wait": 0}},
}


@pytest.mark.parametrize("features", FEATURE_SETS.values(), ids=FEATURE_SETS.keys())
async def test_responses_stream_chunk_by_chunk(features: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    first_delivered = asyncio.Event()
    app_saw_it = []

    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await first_delivered.wait()  # the second chunk waits until the client has the first
        app_saw_it.append(True)
        await send({"type": "http.response.body", "body": b"second", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def on_send(message: Any) -> None:
        if message.get("body") == b"first":
            first_delivered.set()

    gateway = ASGIGateway(paths(("/*", features)), app=streaming)
    response = await asyncio.wait_for(call(gateway, path="/stream", on_send=on_send), 2)
    assert app_saw_it == [True]
    assert response.chunks == [b"first", b"second", b""]
    assert response.finished


@pytest.mark.parametrize(
    "features", [{}, EVERYTHING_BUT_RETRY, {**EVERYTHING_BUT_RETRY, "retry": {"wait": 0, "exceptions": ["OSError"]}}]
)
async def test_app_exceptions_propagate_unchanged(features: dict[str, Any]) -> None:
    error = LookupError("the app's own error")

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise error

    gateway = ASGIGateway(paths(("/*", features)), app=broken)
    with pytest.raises(LookupError) as raised:
        await call(gateway)
    assert raised.value is error


async def test_premier_middleware_with_starlette_add_middleware(provider: AsyncInMemoryCache, clock: FakeClock) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    calls = 0

    async def hello(request: Request) -> PlainTextResponse:
        nonlocal calls
        calls += 1
        return PlainTextResponse(f"hello {request.path_params['name']} {calls}")

    app = Starlette(routes=[Route("/hello/{name}", hello)])
    cfg = paths(("/hello/*", {"rate_limit": {"quota": 3, "duration": 100}, "cache": {}}))
    app.add_middleware(PremierMiddleware, config=cfg, cache_provider=provider)
    results = [await call(app, path="/hello/ann") for _ in range(4)]
    assert [r.status for r in results] == [200, 200, 200, 429]
    assert [r.x_cache for r in results[:3]] == ["MISS", "HIT", "HIT"]
    assert {r.body for r in results[:3]} == {b"hello ann 1"}
    assert calls == 1


async def test_premier_middleware_without_config_passes_everything() -> None:
    app = Backend()
    middleware = PremierMiddleware(app)
    assert isinstance(middleware.config, GatewayConfig)
    assert (await call(middleware, path="/x")).body == b"GET /x call 1"


async def test_lifespan_shutdown_closes_the_provider_the_gateway_made_only() -> None:
    from premier.providers import AsyncInMemoryCache

    class Provider(AsyncInMemoryCache):
        closed = False

        async def close(self) -> None:
            self.closed = True

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    async def run_lifespan(gateway: ASGIGateway) -> list[Any]:
        incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[Any] = []

        async def receive() -> Any:
            return next(incoming)

        async def send(message: Any) -> None:
            sent.append(message)

        await gateway({"type": "lifespan"}, receive, send)
        return sent

    mine = Provider()
    passed_in = ASGIGateway(paths(("/*", {"rate_limit": {"quota": 1, "duration": 1}})), app=app, cache_provider=mine)
    assert await run_lifespan(passed_in) == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert not mine.closed  # the caller's provider is the caller's to close

    owned = ASGIGateway(paths(("/*", {"rate_limit": {"quota": 1, "duration": 1}})), app=app)
    owned.provider = made = Provider()  # stands for the provider the gateway made from its config
    await run_lifespan(owned)
    assert made.closed
