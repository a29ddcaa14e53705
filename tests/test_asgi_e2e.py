"""Plugin mode end to end: FastAPI, Starlette and Django apps wrapped by ASGIGateway, served by a real
uvicorn on a loopback port, asserted through real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks  # (at module level: the route's annotation is resolved by name)

from _apps import FRAMEWORKS, AppState
from _servers import raw_get, serve
from premier.asgi import ASGIGateway, GatewayConfig, PremierMiddleware

CONFIG = """
premier:
  keyspace: e2e
  paths:
    - pattern: /api/limited
      features: {rate_limit: {quota: 3, duration: 60}}
    - pattern: /api/items/*
      features: {cache: {expire_s: 60}}
    - pattern: /api/search
      features: {cache: {expire_s: 60, cache_key: "{page}:{sort}"}}
    - pattern: /api/slow
      features: {timeout: {seconds: 0.3, error_message: 'Too "slow"'}}
    - pattern: /api/flaky
      features: {retry: {max_attempts: 3, wait: 0}}
    - pattern: /api/fragile
      features: {circuit_breaker: {failure_threshold: 2, recovery_timeout: 30}}
    - pattern: /api/admin/*
      features: {rate_limit: {quota: 1, duration: 60, key: global}}
  default_features:
    timeout: {seconds: 10}
"""


class Clock:
    """The gateway's breaker clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=sorted(FRAMEWORKS))
def site(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, AppState, str]]:
    state = AppState()
    app = FRAMEWORKS[request.param](state)
    state.clock = Clock()
    gateway = ASGIGateway(GatewayConfig.from_yaml(CONFIG), app=app, clock=state.clock)
    with serve(gateway) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client, state, base_url
    state.release.set()


def _json(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json")
    return json.loads(response.content)


def test_rate_limit_answers_429_after_quota_with_headers(site: tuple[httpx.Client, AppState, str]) -> None:
    client, _, _ = site
    remaining = []
    for _ in range(3):
        response = client.get("/api/limited")
        assert response.status_code == 200
        assert response.headers["ratelimit-policy"] == '"premier";q=3;w=60'
        remaining.append(response.headers["ratelimit"].split(";")[1])
    assert remaining == ["r=2", "r=1", "r=0"]
    rejected = client.get("/api/limited")
    assert rejected.status_code == 429
    assert 1 <= int(rejected.headers["retry-after"]) <= 60
    assert rejected.headers["ratelimit"].startswith('"premier";r=0;t=')
    assert _json(rejected) == {"error": "Rate limit exceeded", "status": 429}


def test_cache_hit_serves_identical_body_with_age(site: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = site
    first = client.get("/api/items/5")
    second = client.get("/api/items/5")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert int(second.headers["age"]) >= 0
    assert state.item_calls == 1
    assert client.get("/api/items/6").headers["x-cache"] == "MISS"
    assert state.item_calls == 2


def test_a_cache_key_template_is_filled_as_the_app_reads_the_query(site: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = site
    # A blank value counts and the last of a name wins, in the key as in the app: the answer to
    # page=1&page= (a blank page) is not served for page=1.
    assert _json(client.get("/api/search?page=1&page=&sort=a"))["page"] == ""
    victim = client.get("/api/search?page=1&sort=a")
    assert (victim.headers["x-cache"], _json(victim)["page"]) == ("MISS", "1")
    # A value's ':' is not the template's: page=x:y&sort=z and page=x&sort=y:z are two entries.
    client.get("/api/search?page=x:y&sort=z")
    other = client.get("/api/search?page=x&sort=y:z")
    assert (other.headers["x-cache"], _json(other)["sort"]) == ("MISS", "y:z")
    # The template still keys by its names alone.
    again = client.get("/api/search?sort=a&utm_source=mail&page=1")
    assert (again.headers["x-cache"], _json(again)["page"]) == ("HIT", "1")
    assert state.search_calls == 4


def test_slow_endpoint_times_out_with_json_504(site: tuple[httpx.Client, AppState, str]) -> None:
    client, _, _ = site
    started = time.monotonic()
    response = client.get("/api/slow")
    assert time.monotonic() - started < 3
    assert response.status_code == 504
    assert _json(response) == {"error": 'Too "slow"', "status": 504}


def test_retry_recovers_a_flaky_endpoint(site: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = site
    response = client.get("/api/flaky")
    assert response.status_code == 200
    assert _json(response) == {"recovered_after": 3}
    assert state.flaky_calls == 3


def test_circuit_breaker_opens_then_half_opens(site: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = site
    state.fail = True
    assert [client.get("/api/fragile").status_code for _ in range(2)] == [500, 500]
    refused = client.get("/api/fragile")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert _json(refused)["status"] == 503
    state.clock.now += 29
    assert client.get("/api/fragile").status_code == 503
    state.fail = False
    state.clock.now += 1  # recovery_timeout is over: half-open, one probe goes through
    assert client.get("/api/fragile").status_code == 200
    assert client.get("/api/fragile").status_code == 200  # the probe closed it


def test_streaming_chunks_arrive_before_the_app_finishes(site: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = site
    with client.stream("GET", "/api/stream") as response:
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"first")
        state.release.set()  # the app sends its second chunk only now
        rest = b"".join(chunks)
    assert rest.endswith(b"second\n")
    assert state.stream_outcome == "released"


@pytest.mark.parametrize(
    "bypass",
    ["/api//admin/x", "/api/%61dmin/x", "/api/x/../admin/x", "/api/./admin/x", "//api/admin/x", "/api/admin/x%0A",
     "/api/admin%0A"],
)
def test_path_normalisation_bypasses_are_refused(site: tuple[httpx.Client, AppState, str], bypass: str) -> None:
    _, _, base_url = site
    assert raw_get(base_url, "/api/admin/x")[0] == 200
    status, _, body = raw_get(base_url, bypass)
    assert status == 429, f"{bypass} slipped past the /api/admin/* policy"
    assert json.loads(body)["status"] == 429


@pytest.mark.parametrize("bypass", ["/../api/admin/x", "/x/../../api/admin/x", "//../api/admin/x"])
def test_a_dot_segment_cannot_climb_out_of_the_root_path(bypass: str) -> None:
    # Behind a proxy that serves the app under /v1 (uvicorn --root-path): the policy is written for the
    # full path; a ".." must resolve within the app's part of it, which is the part Starlette routes.
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = Starlette(routes=[Route("/api/admin/{rest:path}", lambda request: PlainTextResponse("admin"))])
    config = GatewayConfig.from_yaml(
        "premier:\n  paths:\n    - pattern: /v1/api/admin/*\n"
        "      features: {rate_limit: {quota: 1, duration: 60, algorithm: fixed_window}}\n"
    )
    with serve(ASGIGateway(config, app=app), root_path="/v1") as base_url:
        first = raw_get(base_url, "/api/admin/x")
        assert (first[0], first[2], "ratelimit" in first[1]) == (200, b"admin", True)
        status, _, body = raw_get(base_url, bypass)
    assert status == 429, f"{bypass} slipped past the /v1/api/admin/* policy: {status} {body!r}"


async def test_a_websocket_cannot_climb_out_of_the_root_path_either(caplog: pytest.LogCaptureFixture) -> None:
    # (in process: the scope as uvicorn --root-path /v1 makes it; the HTTP test above goes through uvicorn)
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def admin(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    config = GatewayConfig.from_yaml(
        "premier:\n  paths:\n    - pattern: /v1/admin/*\n"
        "      features: {rate_limit: {quota: 1, duration: 60}, monitoring: {log_threshold: 0}}\n"
    )
    gateway = ASGIGateway(config, app=Starlette(routes=[WebSocketRoute("/admin/ws", admin)]))

    async def connect(path: str, client: str = "127.0.0.1") -> str:
        scope = {"type": "websocket", "path": path, "raw_path": path.encode(), "root_path": "/v1",
                 "query_string": b"", "headers": [(b"host", b"x")], "client": (client, 1),
                 "server": ("127.0.0.1", 80), "scheme": "ws", "subprotocols": [], "asgi": {"version": "3.0"}}
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await gateway(scope, receive, send)
        return sent[0]

    with caplog.at_level(logging.INFO, logger="premier"):
        assert await connect("/v1/admin/ws") == "websocket.accept"
        assert await connect("/v1/../admin/ws") == "websocket.close"  # the policy's second connection: refused
        assert await connect("/v1/admin/ws\n", client="127.0.0.2") == "websocket.accept"  # (Starlette's $)
    closed = [r.getMessage() for r in caplog.records if "closed" in r.getMessage()]
    assert len(closed) == 2 and "websocket /v1/admin/ws\\n closed" in closed[1]  # logged escaped


def test_fastapi_background_tasks_outlive_the_timeout() -> None:
    from fastapi import FastAPI

    done = threading.Event()
    app = FastAPI()

    async def work() -> None:
        await asyncio.sleep(0.5)  # past the 0.2 s timeout: the response is long finished by then
        done.set()

    @app.get("/report")
    async def report(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(work)
        return {"queued": True}

    config = GatewayConfig.from_yaml("premier:\n  default_features: {timeout: {seconds: 0.2}}\n")
    with serve(ASGIGateway(config, app=app)) as base_url:
        status, _, body = raw_get(base_url, "/report")
        assert (status, json.loads(body)) == (200, {"queued": True})
        assert done.wait(5), "the background task was cancelled by the timeout"


def test_a_client_is_not_served_the_entry_its_own_post_made_stale() -> None:
    # The POST's response carries a background task, which Starlette runs after the response, before
    # the app returns: the client has its answer, and its next GET, while the task still runs.
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state = {"v": 1}
    release = threading.Event()

    async def audit() -> None:
        await asyncio.to_thread(release.wait, 10)

    async def item(request: Request) -> JSONResponse:
        if request.method == "POST":
            state["v"] += 1
            return JSONResponse(state, background=BackgroundTask(audit))
        return JSONResponse(state)

    app = Starlette(routes=[Route("/item", item, methods=["GET", "POST"])])
    config = GatewayConfig.from_yaml("premier:\n  paths: [{pattern: /item, features: {cache: {expire_s: 60}}}]\n")
    with serve(ASGIGateway(config, app=app)) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        try:
            client.get("/item")
            assert client.get("/item").headers["x-cache"] == "HIT"
            assert client.post("/item").json() == {"v": 2}
            after = client.get("/item")
            assert (after.headers["x-cache"], after.json()) == ("MISS", {"v": 2})
            assert not release.is_set()  # (the POST's task is still running)
        finally:
            release.set()


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_middleware_form_for_starlette_and_fastapi(framework: str) -> None:
    from starlette.responses import JSONResponse

    app: Any
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/api/limited")
        async def limited() -> dict[str, bool]:
            return {"ok": True}
    else:
        from starlette.applications import Starlette
        from starlette.routing import Route

        async def endpoint(request: Any) -> JSONResponse:
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/api/limited", endpoint)])
    app.add_middleware(PremierMiddleware, config=GatewayConfig.from_yaml(CONFIG))
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        responses = [client.get("/api/limited") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].json() == {"ok": True}
    assert responses[2].headers["ratelimit"].startswith('"premier";r=0;')
    assert "retry-after" in responses[3].headers
