"""Standalone mode end to end: real backend processes on loopback ports, the gateway under a real server
(Premier's own, as ``premier serve`` runs standalone mode, and uvicorn), a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import uvloop

from _servers import Process, backend, free_port, raw_get, serve, serve_premier
from premier.asgi import ASGIGateway, GatewayConfig
from premier.proxy.http1 import UpstreamClosed, open_connection


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Process, Process]]:
    first, second = backend("b1"), backend("b2")
    with first, second:
        yield first, second


def config(servers: Any, **premier: Any) -> GatewayConfig:
    return GatewayConfig.from_dict({"premier": {"servers": servers, **premier}})


Gateway = Callable[..., AbstractContextManager[str]]


@pytest.fixture(params=["premier", "uvicorn"])
def gateway(request: pytest.FixtureRequest) -> Gateway:
    """``gateway(cfg, **options)``: the gateway served on a free port, under each server ``premier serve
    --server`` offers (every test runs under both)."""
    run = serve_premier if request.param == "premier" else serve

    @contextmanager
    def serving(cfg: GatewayConfig, **options: Any) -> Iterator[str]:
        with run(ASGIGateway(cfg, **options)) as url:
            yield url

    return serving


def request(
    url: str, path: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = headers or {}
        connection.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        response = connection.getresponse()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
    finally:
        connection.close()


def echo(url: str, path: str = "/", **kwargs: Any) -> dict[str, Any]:
    status, _, body = request(url, path, **kwargs)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def headers_of(seen: dict[str, Any]) -> dict[str, str]:
    return dict(seen["headers"])


# --- balancing -----------------------------------------------------------------------------------------


def test_round_robin_spreads_requests_evenly(backends: tuple[Process, Process], gateway: Gateway) -> None:
    with gateway(config([b.url for b in backends])) as url:
        seen = [echo(url, "/")["backend"] for _ in range(10)]
    assert seen[:2] in (["b1", "b2"], ["b2", "b1"])
    assert all(seen[i] != seen[i + 1] for i in range(9))
    assert Counter(seen) == {"b1": 5, "b2": 5}


def test_weights_share_requests_in_proportion(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, b2 = backends
    with gateway(config([{"url": b1.url, "weight": 3}, b2.url])) as url:
        assert Counter(echo(url, "/")["backend"] for _ in range(40)) == {"b1": 30, "b2": 10}


def test_least_connections_avoids_the_busy_backend(backends: tuple[Process, Process], gateway: Gateway) -> None:
    with gateway(config([b.url for b in backends], upstream={"load_balancing": "least_connections"})) as url:
        slow = ThreadPoolExecutor(1).submit(echo, url, "/slow?seconds=1")
        time.sleep(0.2)  # the slow request is in flight on one backend
        quick = {echo(url, "/")["backend"] for _ in range(6)}
        busy = slow.result()["backend"]
    assert quick == {"b1", "b2"} - {busy}


# --- what the backend receives ---------------------------------------------------------------------------


def test_forwarding_headers_are_set_and_host_is_the_backends(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        seen = headers_of(echo(url, "/", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}))
    assert seen["host"] == f"127.0.0.1:{b1.port}"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the client is not a trusted proxy: its claim is dropped
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == url.removeprefix("http://")


def test_trusted_proxies_forwarding_headers_are_extended(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    cfg = config([b1.url], trusted_proxies=["127.0.0.1"])
    with gateway(cfg) as url:
        seen = headers_of(echo(url, "/", headers={
            "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com",
        }))
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "api.example.com"


def test_preserve_host_sends_the_clients_host(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url], upstream={"preserve_host": True})) as url:
        assert headers_of(echo(url, "/", headers={"Host": "api.example.com"}))["host"] == "api.example.com"


def test_hop_by_hop_request_headers_are_not_forwarded(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        seen = headers_of(echo(url, "/", headers={
            "Connection": "keep-alive, X-Session-Secret", "X-Session-Secret": "s3cret", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Proxy-Authorization": "Basic Zm9v", "X-Kept": "yes",
        }))
    assert seen["x-kept"] == "yes"
    for name in ("x-session-secret", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen
    assert seen.get("connection") in (None, "keep-alive")


def test_hop_by_hop_response_headers_are_dropped_and_date_and_server_sent_once(
    backends: tuple[Process, Process], gateway: Gateway
) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        status, headers, _ = request(url, "/hop")
    names = Counter(name for name, _ in headers)
    assert status == 200
    assert ("x-kept", "yes") in headers
    assert "x-private" not in names and "keep-alive" not in names
    assert names["date"] == 1 and names["server"] == 1


def test_encoded_paths_and_query_strings_arrive_byte_for_byte(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        status, _, body = raw_get(url, "/files/a%2Fb/%7Euser/c%20d?q=%2F&x=1+2&&y")
        assert status == 200
        seen = json.loads(body)
        assert seen["raw_path"] == "/files/a%2Fb/%7Euser/c%20d"
        assert seen["query"] == "q=%2F&x=1+2&&y"
        # a path the backend could resolve differently arrives as the one the policy was chosen for
        status, _, body = raw_get(url, "/public/../admin//x")
        assert json.loads(body)["raw_path"] == "/admin/x"
        # ... and so does one whose dot segments are percent-encoded (a backend may decode, then resolve)
        for sneaky in ("/admin/%2e%2e/users", "/admin%2F..%2Fusers", "/admin/%2E%2E%2Fusers"):
            status, _, body = raw_get(url, sneaky)
            assert json.loads(body)["raw_path"] == "/users", sneaky


def test_bodies_and_methods_pass_through(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        seen = echo(url, "/items", method="POST", body=b"x" * 100_000, headers={"Content-Type": "text/plain"})
        assert (seen["method"], seen["length"]) == ("POST", 100_000)
        chunked = echo(url, "/items", method="PUT", body=iter([b"ab", b"cd" * 1000]),
                       headers={"Transfer-Encoding": "chunked"})
        assert (chunked["method"], chunked["length"]) == ("PUT", 2002)
        status, _, body = request(url, "/", method="HEAD")
        assert (status, body) == (200, b"")
        assert echo(url, "/after-head")["path"] == "/after-head"  # the connection survived the HEAD


def test_gzip_bodies_are_not_decoded(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url])) as url:
        status, headers, body = request(url, "/gzip", headers={"Accept-Encoding": "gzip"})
    found = dict(headers)
    assert status == 200 and found["content-encoding"] == "gzip"
    assert int(found["content-length"]) == len(body)
    assert json.loads(gzip.decompress(body))["backend"] == "b1"


def test_per_route_servers_and_prefix_stripping(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, b2 = backends
    cfg = config([b1.url], paths=[{"pattern": "/two/*", "servers": [b2.url], "strip_prefix": "/two"}])
    with gateway(cfg) as url:
        assert echo(url, "/two/users?id=1")["backend"] == "b2"
        assert echo(url, "/two/users")["path"] == "/users"
        assert echo(url, "/two")["path"] == "/"
        one = echo(url, "/one/users")
        assert (one["backend"], one["path"]) == ("b1", "/one/users")
        other = echo(url, "/twofold")
        assert (other["backend"], other["path"]) == ("b1", "/twofold")  # the prefix is a path segment


# --- errors ----------------------------------------------------------------------------------------------


def _closed_port() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_refused_connection_answers_502_naming_the_cause(caplog: pytest.LogCaptureFixture, gateway: Gateway) -> None:
    dead = _closed_port()
    with gateway(config([dead])) as url:
        status, headers, body = request(url, "/x")
    assert status == 502
    assert dict(headers)["content-type"] == "application/json"
    error = json.loads(body)
    assert error["status"] == 502 and "connection refused" in error["error"] and dead in error["error"]
    assert any("connection refused" in r.getMessage() for r in caplog.records)


def test_upstream_timeout_answers_504(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([b1.url], upstream={"read_timeout": 0.3})) as url:
        status, _, body = request(url, "/slow?seconds=3")
        assert status == 504 and "no response within 0.3 s" in json.loads(body)["error"]
        assert echo(url, "/")["backend"] == "b1"  # the slow connection was dropped, not reused


def test_a_stalled_upload_answers_408_and_frees_both_connections(
    backends: tuple[Process, Process], gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    b1, _ = backends
    with gateway(config([b1.url], upstream={"read_timeout": 0.3})) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            started = time.monotonic()
            answer = b""
            while chunk := client.recv(65536):  # (the gateway closes the connection after its answer)
                answer += chunk
        assert time.monotonic() - started < 5
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert "stopped arriving" in json.loads(body)["error"]
        assert echo(url, "/")["backend"] == "b1"  # and the gateway goes on serving
    assert any("request body stopped arriving" in r.getMessage() for r in caplog.records)


def test_no_healthy_backend_answers_503_with_retry_after(gateway: Gateway) -> None:
    cfg = config([_closed_port(), _closed_port()], upstream={"passive_health": {"failure_threshold": 1, "recovery_timeout": 30}})
    with gateway(cfg) as url:
        assert request(url, "/")[0] == 502  # both refused: each now out of the rotation
        status, headers, body = request(url, "/")
    assert status == 503
    assert json.loads(body) == {"error": "no healthy upstream server", "status": 503}
    assert 1 <= int(dict(headers)["retry-after"]) <= 30


def test_a_refused_backend_is_skipped_for_every_method(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    with gateway(config([_closed_port(), b1.url])) as url:
        for _ in range(4):
            assert echo(url, "/", method="POST", body=b"once")["length"] == 4


# --- failover and health ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_server", ["premier", "uvicorn"])
def test_a_backend_killed_mid_run_costs_no_client_errors(gateway: Gateway, backend_server: str) -> None:
    # uvicorn writes a response's head and body apart, so a kill may fall between the two: the gateway
    # holds a head back until its body's first part, and a GET cut there goes to the other backend.
    with backend("k1", server=backend_server) as k1, backend("k2", server=backend_server) as k2:
        cfg = config([k1.url, k2.url], upstream={"passive_health": {"recovery_timeout": 0.5}})
        with gateway(cfg) as url:
            done = Counter[str]()
            errors: list[Any] = []
            lock = threading.Lock()

            def client(n: int) -> None:
                host, port = url.removeprefix("http://").split(":")
                connection = http.client.HTTPConnection(host, int(port), timeout=10)
                for _ in range(n):
                    connection.request("GET", "/slow?seconds=0.005")
                    response = connection.getresponse()
                    body = response.read()
                    with lock:
                        if response.status == 200:
                            done[json.loads(body)["backend"]] += 1
                        else:
                            errors.append((response.status, body))
                connection.close()

            with ThreadPoolExecutor(5) as pool:
                futures = [pool.submit(client, 100) for _ in range(5)]
                while sum(done.values()) < 100:
                    time.sleep(0.01)
                k1.kill()
                for future in futures:
                    future.result()
            assert errors == []
            assert sum(done.values()) == 500 and done["k1"] > 0

            k1.start()  # back on the same port: after the recovery time, a probe brings it back
            time.sleep(0.6)
            assert {echo(url, "/")["backend"] for _ in range(6)} == {"k1", "k2"}


def test_active_health_checks_take_a_backend_out_and_bring_it_back(gateway: Gateway) -> None:
    with backend("h1") as h1, backend("h2") as h2:
        cfg = config([h1.url, h2.url], upstream={
            "health_check": {"path": "/health", "interval": 0.05, "timeout": 1, "unhealthy_threshold": 1},
        })
        with gateway(cfg) as url:
            echo(h1.url, "/set-health/503")
            deadline = time.monotonic() + 5
            while {echo(url, "/")["backend"] for _ in range(4)} != {"h2"}:
                assert time.monotonic() < deadline, "the failing backend stayed in rotation"
            echo(h1.url, "/set-health/200")
            deadline = time.monotonic() + 5
            while {echo(url, "/")["backend"] for _ in range(4)} != {"h1", "h2"}:
                assert time.monotonic() < deadline, "the recovered backend did not come back"


# --- features ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(1, 1), (3, 1)])
def test_retry_on_a_failing_status_moves_to_the_next_backend(gateway: Gateway, weights: tuple[int, int]) -> None:
    with backend("r1") as r1, backend("r2") as r2:
        echo(r1.url, "/set-fail/503")
        servers = [{"url": r1.url, "weight": weights[0]}, {"url": r2.url, "weight": weights[1]}]
        # (the failing backend's 503s must not open its breaker: each retry has to move on by itself)
        cfg = config(servers, upstream={"passive_health": {"failure_threshold": 1000}},
                     paths=[{"pattern": "/*", "features": {"retry": {"max_attempts": 2, "wait": 0}}}])
        with gateway(cfg) as url:
            assert {echo(url, "/")["backend"] for _ in range(12)} == {"r2"}


def test_a_cache_hit_never_reaches_a_backend(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    cfg = config([b1.url], paths=[{"pattern": "/cached/*", "features": {"cache": {"expire_s": 60}}}])
    with gateway(cfg) as url:
        first_status, first_headers, first = request(url, "/cached/a")
        second_status, second_headers, second = request(url, "/cached/a")
        fresh = echo(url, "/uncached")
    assert (first_status, second_status) == (200, 200)
    assert dict(first_headers)["x-cache"] == "MISS" and dict(second_headers)["x-cache"] == "HIT"
    assert second == first  # the same body: the backend's request counter did not move
    assert fresh["served"] == json.loads(first)["served"] + 1


def test_rate_limit_applies_before_the_backend(backends: tuple[Process, Process], gateway: Gateway) -> None:
    b1, _ = backends
    cfg = config([b1.url], paths=[{"pattern": "/*", "features": {"rate_limit": {"quota": 2, "duration": 60, "algorithm": "sliding_window"}}}])
    with gateway(cfg) as url:
        statuses = [request(url, "/")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_shutdown_closes_the_backend_connections(backends: tuple[Process, Process]) -> None:
    b1, _ = backends
    app = ASGIGateway(config([b1.url]))
    with serve(app) as url:
        echo(url, "/")
        (pool,) = app._compiled.pools.values()
        (server,) = pool.backends
        assert len(server.idle) == 1
        connection = server.idle[0]
    assert server.idle == [] and connection.closed


def test_standalone_needs_servers() -> None:
    with pytest.raises(ValueError, match=r"premier.servers: standalone mode .* needs backend servers"):
        ASGIGateway(GatewayConfig())


def test_a_malformed_backend_answer_is_a_502(gateway: Gateway) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def garbage() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        connection.close()

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    with gateway(config([f"http://127.0.0.1:{listener.getsockname()[1]}"])) as url:
        status, _, body = request(url, "/")
    listener.close()
    assert status == 502 and "invalid HTTP response" in json.loads(body)["error"]


@contextmanager
def raw_backend(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A backend on a bare socket: ``answer(connection)`` runs for every connection it accepts (in a
    thread); yields its URL, and stops listening after."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                answer(connection)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


# (A featureless route on Premier's server starts on the direct path, which hands a request with no idle
# connection to the reverse proxy; direct.py's own head-then-close case is in test_shortcuts.py.)
@pytest.mark.parametrize("features", [{}, {"monitoring": {"log_threshold": 5}}], ids=["no features", "features"])
def test_a_backend_closing_between_its_head_and_body_costs_the_client_nothing(
    backends: tuple[Process, Process], gateway: Gateway, features: dict[str, Any]
) -> None:
    # As a backend killed mid-response does: its head is out, its body never comes.
    def head_then_close(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n")

    b1, _ = backends
    with raw_backend(head_then_close) as cut:
        cfg = config([cut, b1.url], paths=[{"pattern": "/*", "features": features}],
                     upstream={"passive_health": {"failure_threshold": 1000}})  # (it stays in the rotation)
        with gateway(cfg) as url:
            answers = [echo(url, f"/cut/{i}")["backend"] for i in range(6)]
    assert answers == ["b1"] * 6  # each GET the cut backend got went on to the other one


def test_a_connection_that_cannot_be_opened_in_time_answers_504(gateway: Gateway) -> None:
    # A listener whose accept queue is full (backlog 0, one connection waiting, never accepted): the
    # kernel drops further SYNs, so a connection to it hangs until the gateway's connect_timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    waiting = socket.create_connection(listener.getsockname(), timeout=2)
    stuck = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with gateway(config([stuck], upstream={"connect_timeout": 0.3})) as url:
            started = time.monotonic()
            status, _, body = request(url, "/")
            elapsed = time.monotonic() - started
    finally:
        waiting.close()
        listener.close()
    error = json.loads(body)
    assert status == 504 and stuck in error["error"] and "timed out" in error["error"], error
    assert 0.25 < elapsed < 5


def test_a_backend_resetting_the_connection_answers_502_naming_it(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    def reset(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # (closed on return, with a zero linger: a reset, not a FIN)

    with raw_backend(reset) as dead, gateway(config([dead])) as url:
        status, _, body = request(url, "/", method="POST", body=b"{}")  # (not replayable: no failover)
    error = json.loads(body)
    assert status == 502 and error["status"] == 502
    assert dead in error["error"] and "reset" in error["error"].lower(), error
    assert any("reset" in r.getMessage().lower() for r in caplog.records if r.name.startswith("premier"))


def test_a_backend_refusing_an_upload_early_and_closing_is_answered_as_it_said(gateway: Gateway) -> None:
    # As servers do with a body over their limit: answer 413 at once, then close without reading the rest.
    def refuse_and_close(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")

    with raw_backend(refuse_and_close) as refusing:
        cfg = config([refusing], upstream={"passive_health": {"failure_threshold": 1}})
        with gateway(cfg) as url:
            answers = [request(url, "/upload", method="POST", body=b"x" * (8 * 1024 * 1024))[::2] for _ in range(5)]
    assert answers == [(413, b"big!")] * 5  # never a 502, and the backend never counted as failing (no 503)


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_an_answer_that_came_ahead_of_a_reset_is_read(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    # The race behind the test above, made certain: the backend's 413 and its reset have both arrived
    # before the proxy writes again, so the write meets the reset before the loop has read the answer.
    closed = threading.Event()

    def refuse_and_close(connection: socket.socket) -> None:
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
        closed.set()  # (and the close, with the body unread, resets the connection)

    async def upload(url: str) -> tuple[int, bytes | None]:
        host, port = url.removeprefix("http://").split(":")
        connection = await open_connection(host, int(port), ssl_context=None, timeout=5)
        connection.start_response(head_only=False)
        connection.write(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 65536)
        assert closed.wait(5)
        time.sleep(0.2)  # (blocking: the loop reads nothing meanwhile, and the reset lands)
        with contextlib.suppress(UpstreamClosed):
            connection.write(b"x" * 65536)
        await connection.read_head(5)
        return connection.status, await connection.read_body(5)

    loop = loop_factory()
    try:
        with raw_backend(refuse_and_close) as url:
            assert loop.run_until_complete(upload(url)) == (413, b"big!")
    finally:
        loop.close()


def test_a_backend_that_stops_reading_an_upload_gets_a_504_not_a_hang(gateway: Gateway) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def read_the_head_only() -> None:
        connection, _ = listener.accept()
        accepted.append(connection)
        connection.recv(1024)  # and never again: the body fills the buffers

    threading.Thread(target=read_the_head_only, daemon=True).start()
    cfg = config([f"http://127.0.0.1:{listener.getsockname()[1]}"], upstream={"read_timeout": 0.5})
    with gateway(cfg) as url:
        started = time.monotonic()
        status, _, body = request(url, "/upload", method="POST", body=b"x" * (32 * 1024 * 1024))
        elapsed = time.monotonic() - started
    for connection in accepted:
        connection.close()
    listener.close()
    assert status == 504 and "no response within 0.5 s" in json.loads(body)["error"]
    assert elapsed < 10



def test_servers_given_in_python_are_validated_like_the_yamls() -> None:
    with pytest.raises(ValueError) as error:
        ASGIGateway(GatewayConfig(), servers=["ftp://x", "http://ok:1", 5])  # type: ignore[list-item]
    message = str(error.value)
    assert "servers[0].url: must be an http:// or https:// URL" in message
    assert "servers[2].url: must be a string" in message
    with pytest.raises(ValueError, match=r"servers\[1\]\.weight"):
        ASGIGateway(GatewayConfig(), servers=["http://a:1", {"url": "http://b:1", "weight": 0}])
    weighted = ASGIGateway(GatewayConfig(), servers=["http://a:1", {"url": "http://b:1", "weight": 3}])
    assert [(b.url, b.weight) for b in weighted.pools[0].backends] == [("http://a:1", 1), ("http://b:1", 3)]
