"""WebSockets through the gateway, with real clients (the ``websockets`` library) against real servers:
plugin mode around an ASGI app, and standalone mode relaying to backend processes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from _servers import Process, backend, free_port, gateway_process, serve
from premier.asgi import ASGIGateway, GatewayConfig
from premier.asgi.websocket import WebSocketEvent

MiB = 1024 * 1024


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """The wrapped app of plugin mode: a WebSocket echo."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


def config(features: dict[str, Any] | None = None, **premier: Any) -> GatewayConfig:
    paths = [{"pattern": "/ws*", "features": features}] if features else []
    return GatewayConfig.from_dict({"premier": {"paths": paths, **premier}})


@contextmanager
def gateway(cfg: GatewayConfig, **options: Any) -> Iterator[tuple[str, ASGIGateway]]:
    app = ASGIGateway(cfg, **options)
    with serve(_TaskCounter(app), ws="websockets-sansio") as url:
        yield url.replace("http://", "ws://"), app


class _TaskCounter:
    """Test-only wrapper: ``GET /__tasks`` answers how many asyncio tasks the server's loop holds."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__tasks":
            body = str(len(asyncio.all_tasks())).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def tasks_in(url: str) -> int:
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /__tasks HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return int(data.rsplit(b"\r\n\r\n", 1)[1])


# --- plugin mode -----------------------------------------------------------------------------------------


async def test_plugin_mode_echoes_text_binary_and_large_messages() -> None:
    with gateway(config({"websocket": {"max_message_bytes": 2 * MiB}}), app=echo_app) as (url, _):
        async with connect(url + "/ws", max_size=4 * MiB) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = os.urandom(MiB)
            await ws.send(big)
            assert await ws.recv() == big


async def test_connection_attempts_are_rate_limited_with_a_429_at_handshake() -> None:
    cfg = config({"rate_limit": {"quota": 2, "duration": 60, "algorithm": "sliding_window"}})
    with gateway(cfg, app=echo_app) as (url, _):
        for _ in range(2):
            async with connect(url + "/ws"):
                pass
        with pytest.raises(InvalidStatus) as refused:
            await connect(url + "/ws")
    response = refused.value.response
    assert response.status_code == 429
    assert json.loads(response.body) == {"error": "Rate limit exceeded", "status": 429}
    assert int(response.headers["retry-after"]) >= 1


async def test_message_rate_violation_closes_with_1008() -> None:
    cfg = config({"websocket": {"message_rate": {"quota": 3, "duration": 60}}})
    with gateway(cfg, app=echo_app) as (url, _):
        async with connect(url + "/ws") as ws:
            for i in range(3):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"m{i}"
            await ws.send("one too many")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "message rate limit exceeded")


async def test_oversized_messages_close_with_1009() -> None:
    with gateway(config({"websocket": {"max_message_bytes": 1000}}), app=echo_app) as (url, _):
        async with connect(url + "/ws") as ws:
            await ws.send(b"x" * 1001)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_idle_connections_are_closed_with_1001() -> None:
    with gateway(config({"websocket": {"idle_timeout": 0.2}}), app=echo_app) as (url, _):
        async with connect(url + "/ws") as ws:
            await ws.send("awake")
            assert await ws.recv() == "awake"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")


async def test_monitoring_records_duration_messages_and_bytes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="premier")
    seen: list[WebSocketEvent] = []
    with gateway(config({"monitoring": {"log_threshold": 1}}), app=echo_app) as (url, app):
        app.events.subscribe(seen.append)
        async with connect(url + "/ws") as ws:
            for message in ("abc", b"12345"):
                await ws.send(message)
                await ws.recv()
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
    opened, event = seen  # the same connection: once when accepted, once when closed
    assert opened is event and event.state == "closed"
    assert (event.messages_in, event.bytes_in, event.messages_out, event.bytes_out) == (2, 8, 2, 8)
    assert event.accepted and event.close_code == 1000 and event.duration > 0
    assert any("websocket /ws closed" in r.getMessage() for r in caplog.records)


# --- standalone mode -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[Process, Process]]:
    with backend("w1") as first, backend("w2") as second:
        yield first, second


def standalone(servers: list[str], features: dict[str, Any] | None = None, **premier: Any) -> GatewayConfig:
    return config(features, servers=servers, **premier)


async def test_standalone_relays_text_binary_and_a_megabyte(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([o.url for o in origins], {"websocket": {"max_message_bytes": 2 * MiB}})) as (url, _):
        async with connect(url + "/ws", max_size=4 * MiB) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            big = os.urandom(MiB)
            await ws.send(big)
            assert await ws.recv() == big


async def test_standalone_relays_the_backends_subprotocol_choice(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([origins[0].url])) as (url, _):
        async with connect(url + "/ws", subprotocols=["chat.v2", "chat.v1"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat.v2"


async def test_close_codes_and_reasons_pass_both_ways(origins: tuple[Process, Process]) -> None:
    import http.client

    origin = origins[0]
    with gateway(standalone([origin.url])) as (url, _):
        async with connect(url + "/ws/close?code=4001&reason=done+here") as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "done here")

        ws = await connect(url + "/ws")
        await ws.send("x")
        await ws.recv()
        await ws.close(4002, "client leaves")
        for _ in range(100):
            connection = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
            connection.request("GET", "/ws-last-close")
            last = json.loads(connection.getresponse().read())
            connection.close()
            if last == [4002, "client leaves"]:
                break
            await asyncio.sleep(0.02)
        assert last == [4002, "client leaves"]


async def test_a_backend_dying_mid_connection_closes_the_client_with_1014() -> None:
    with backend("doomed") as doomed, gateway(standalone([doomed.url])) as (url, _):
        async with connect(url + "/ws/die") as ws:
            await ws.send("goodbye")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1014, "backend connection lost")


async def test_handshake_errors_no_backend_refused_and_backend_refusal() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = standalone([dead], upstream={"passive_health": {"failure_threshold": 1, "recovery_timeout": 60}})
    with gateway(cfg) as (url, _):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url + "/ws")
        assert refused.value.response.status_code == 502
        assert "connection refused" in json.loads(refused.value.response.body)["error"]
        with pytest.raises(InvalidStatus) as unhealthy:
            await connect(url + "/ws")
        assert unhealthy.value.response.status_code == 503


async def test_a_backend_refusing_the_handshake_is_relayed(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([origins[0].url])) as (url, _):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url + "/ws/refuse")
    assert refused.value.response.status_code == 403


async def test_the_relay_fails_over_to_a_live_backend(origins: tuple[Process, Process]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway(standalone([dead, origins[0].url])) as (url, _):
        for _ in range(3):
            async with connect(url + "/ws") as ws:
                await ws.send("up?")
                assert await ws.recv() == "up?"


async def test_two_hundred_concurrent_connections(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([o.url for o in origins])) as (url, _):

        async def one(i: int) -> str:
            async with connect(url + "/ws", open_timeout=30) as ws:
                await ws.send(f"n{i}")
                return str(await ws.recv())

        replies = await asyncio.gather(*(one(i) for i in range(200)))
    assert replies == [f"n{i}" for i in range(200)]


async def test_a_thousand_connect_close_cycles_leak_no_tasks_or_sockets(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([origins[0].url])) as (url, _):
        async with connect(url + "/ws") as ws:  # warm up: pools, imports
            await ws.send("w")
            await ws.recv()
        await asyncio.sleep(0.1)
        tasks_before, fds_before = await tasks_in(url), len(os.listdir("/proc/self/fd"))
        for _ in range(1000):
            async with connect(url + "/ws", compression=None) as ws:
                await ws.send("c")
                await ws.recv()
        for _ in range(100):
            if await tasks_in(url) <= tasks_before and len(os.listdir("/proc/self/fd")) <= fds_before + 2:
                break
            await asyncio.sleep(0.05)
        assert await tasks_in(url) <= tasks_before
        assert len(os.listdir("/proc/self/fd")) <= fds_before + 2


async def test_standalone_connection_rate_limit(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([origins[0].url], {"rate_limit": {"quota": 1, "duration": 60, "algorithm": "sliding_window"}})) as (url, _):
        async with connect(url + "/ws"):
            pass
        with pytest.raises(InvalidStatus) as refused:
            await connect(url + "/ws")
    assert refused.value.response.status_code == 429


async def test_a_slow_client_does_not_make_the_gateway_buffer(tmp_path: Path) -> None:
    """The backend floods 128 MiB at a client that reads nothing for a second: the gateway's memory
    stays far below that (it reads the backend only as fast as the client takes messages)."""
    count, size = 128, MiB
    with backend("flood") as origin:
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(
            f"premier:\n  servers: [{origin.url}]\n"
            f"  paths: [{{pattern: /ws*, features: {{websocket: {{max_message_bytes: {2 * MiB}}}}}}}]\n"
        )
        with gateway_process(config_file) as gateway:
            before = gateway.peak_rss_kib()
            url = f"ws://127.0.0.1:{gateway.port}/ws/flood?count={count}&size={size}"
            async with connect(url, max_size=2 * MiB, max_queue=1) as ws:
                await asyncio.sleep(1.0)
                stalled = gateway.peak_rss_kib()
                received = 0
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        received += len(await ws.recv())
            assert received == count * size
            assert closed.value.rcvd is not None and closed.value.rcvd.reason == "flood done"
            assert stalled - before < 48 * 1024
            assert gateway.peak_rss_kib() - before < 48 * 1024


async def test_without_the_http_response_extension_a_refused_attempt_is_closed_before_accept() -> None:
    """Servers without ``websocket.http.response`` answer a close before accepting with 403."""
    gateway = ASGIGateway(config({"rate_limit": {"quota": 1, "duration": 60, "algorithm": "sliding_window"}}), app=echo_app)
    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"", "headers": [],
             "client": ("10.0.0.1", 5000), "subprotocols": []}
    outcomes = []
    for _ in range(2):
        inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
        sent: list[Any] = []

        async def receive(inbox: list[Any] = inbox) -> Any:
            return inbox.pop(0)

        async def send(message: Any, sent: list[Any] = sent) -> None:
            sent.append(message)

        await gateway(scope, receive, send)
        outcomes.append(sent)
    assert outcomes[0] == [{"type": "websocket.accept"}]
    assert outcomes[1] == [{"type": "websocket.close", "code": 1008}]


async def test_pings_are_answered_through_the_relay(origins: tuple[Process, Process]) -> None:
    with gateway(standalone([origins[0].url])) as (url, _):
        async with connect(url + "/ws", ping_interval=None) as ws:
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
            await ws.send("still open")
            assert await ws.recv() == "still open"


async def test_the_relay_forwards_the_clients_headers_and_sets_forwarding_ones(origins: tuple[Process, Process]) -> None:
    origin = origins[0]
    cfg = GatewayConfig.from_dict({"premier": {
        "servers": [origin.url], "paths": [{"pattern": "/chat/*", "strip_prefix": "/chat"}],
    }})
    with gateway(cfg) as (url, _):
        async with connect(url + "/chat/ws/headers?room=1", additional_headers={
            "Cookie": "session=abc", "X-Forwarded-For": "6.6.6.6", "X-Custom": "yes",
        }) as ws:
            seen = json.loads(await ws.recv())
    headers = {}
    for name, value in seen["headers"]:
        headers.setdefault(name, value)
    assert (seen["path"], seen["query"]) == ("/ws/headers", "room=1")
    assert headers["cookie"] == "session=abc" and headers["x-custom"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the client is not a trusted proxy
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == url.removeprefix("ws://")
    assert headers["host"] == f"127.0.0.1:{origin.port}"


async def test_the_relay_keeps_every_forwarded_hop_from_a_trusted_proxy(origins: tuple[Process, Process]) -> None:
    origin = origins[0]
    cfg = GatewayConfig.from_dict({"premier": {"servers": [origin.url], "trusted_proxies": ["127.0.0.1"]}})
    with gateway(cfg) as (url, _):
        async with connect(url + "/ws/headers", additional_headers=[
            ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"),
        ]) as ws:
            seen = json.loads(await ws.recv())
    assert dict(seen["headers"])["x-forwarded-for"] == "1.1.1.1, 2.2.2.2, 127.0.0.1"  # as the HTTP proxy does


async def test_a_handshake_with_a_fragment_in_its_query_is_relayed(origins: tuple[Process, Process]) -> None:
    """uvicorn's WebSocket protocol passes a ``#...`` on in the query string: the relay escapes it
    rather than failing the handshake with a 500 (which also used to lose a half-open probe)."""
    with gateway(standalone([origins[0].url])) as (url, _):
        host, port = url.removeprefix("ws://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /ws/headers?a=1#frag HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 101")
