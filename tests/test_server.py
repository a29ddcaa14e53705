"""Premier's own HTTP/1.1 server (``premier.server``, what ``premier serve`` runs standalone mode on), over
real sockets on loopback: framing, keep-alive, pipelining, flow of bodies both ways, the errors a client
can provoke, the app's errors, lifespan and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _servers import serve_premier
from premier.server.runner import Server, run_loop

Scope = dict[str, Any]


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers JSON describing the request, its whole body included (read as it arrives)."""
    if scope["type"] != "http":
        return
    body = b""
    chunks = 0
    while True:
        message = await receive()
        body += message.get("body", b"")
        chunks += 1
        if not message.get("more_body"):
            break
    answer = json.dumps({
        "method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(), "version": scope["http_version"], "length": len(body),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]], "client": scope["client"][0],
        "state": sorted(scope["state"]),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


class Connection:
    """A raw client connection: send bytes, read whole responses (head parsed, body by its framing)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
        index = self.buffer.index(marker) + len(marker)
        found, self.buffer = self.buffer[:index], self.buffer[index:]
        return found

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def response(self, *, head: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [(k.lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        names = dict(headers)
        if head or status in (204, 304) or status < 200:
            return status, headers, b""
        if "content-length" in names:
            return status, headers, self.read_exactly(int(names["content-length"]))
        assert names.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            size = int(self.read_until(b"\r\n")[:-2], 16)
            if size == 0:
                self.read_until(b"\r\n")
                return status, headers, body
            body += self.read_exactly(size)
            self.read_until(b"\r\n")

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout`` seconds (nothing else arriving)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Any]:
    opened: list[Connection] = []

    def make(url: str) -> Connection:
        opened.append(Connection(url))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


def header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def test_keep_alive_serves_several_requests_on_one_connection(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        for i in range(3):
            client.send(f"GET /item/{i}?q=%20x HTTP/1.1\r\nHost: example\r\n\r\n".encode())
            status, headers, body = client.response()
            assert status == 200 and json.loads(body)["path"] == f"/item/{i}"
            assert json.loads(body)["query"] == "q=%20x"
            assert len(header(headers, "date")) == 1 and header(headers, "server") == ["premier"]
            assert header(headers, "content-length") == [str(len(body))]
            assert not header(headers, "connection")


def test_pipelined_requests_are_answered_in_order(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"".join(
            b"POST /p/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, i, b"x" * i) for i in range(1, 6)
        ))
        answers = [json.loads(client.response()[2]) for _ in range(5)]
        assert [(a["path"], a["length"]) for a in answers] == [(f"/p/{i}", i) for i in range(1, 6)]


def test_http_1_0_closes_unless_asked_to_keep_alive(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"GET /a HTTP/1.0\r\n\r\n")
        status, headers, body = client.response()
        assert status == 200 and json.loads(body)["version"] == "1.0"
        assert header(headers, "connection") == ["close"] and client.closed()
        kept = connect(url)
        kept.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert header(kept.response()[1], "connection") == ["keep-alive"]
        kept.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert json.loads(kept.response()[2])["path"] == "/b"


def test_connection_close_is_honoured(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert header(client.response()[1], "connection") == ["close"]
        assert client.closed()


def test_paths_are_percent_decoded_and_the_raw_path_kept(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"GET /api/%61dmin/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = json.loads(client.response()[2])
        assert (seen["path"], seen["raw_path"]) == ("/api/admin/a/b", "/api/%61dmin/a%2Fb")


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
])
def test_a_malformed_request_gets_a_json_400_and_the_connection_closes(connect: Any, request_bytes: bytes) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(request_bytes)
        status, headers, body = client.response()
        assert status == 400 and header(headers, "content-type") == ["application/json"]
        assert json.loads(body)["status"] == 400 and json.loads(body)["error"].startswith("invalid HTTP request")
        assert client.closed()
        # the server goes on serving others
        other = connect(url)
        other.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.response()[0] == 200


def test_an_oversized_request_head_gets_a_431(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(80):  # 80 KB of headers, and more after the answer: dropped, never a reset
            client.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        status, _, body = client.response()
        assert status == 431 and json.loads(body)["status"] == 431
        client.send(b"X-Filler: more\r\n" * 100)
        assert client.closed()


def test_a_request_head_that_never_finishes_gets_a_408(connect: Any) -> None:
    with serve_premier(echo, header_timeout=0.3) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ...and nothing more
        started = time.monotonic()
        status, _, body = client.response()
        assert status == 408 and json.loads(body)["status"] == 408
        assert client.closed() and time.monotonic() - started < 3


def test_idle_keep_alive_connections_are_closed_after_the_timeout(connect: Any) -> None:
    with serve_premier(echo, keep_alive_timeout=0.2) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response()[0] == 200
        assert client.closed(timeout=3)


def test_a_streamed_response_is_chunked_and_its_first_part_arrives_before_the_app_finishes(connect: Any) -> None:
    release = threading.Event()

    async def stream(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        while not release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    with serve_premier(stream) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.read_until(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head and b"content-length" not in head
        assert client.read_until(b"first\r\n") == b"5\r\nfirst\r\n"
        release.set()
        assert client.read_until(b"0\r\n\r\n") == b"6\r\nsecond\r\n0\r\n\r\n"
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection stays usable
        release.set()
        assert client.response()[2] == b"firstsecond"


def test_head_requests_get_the_head_only(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = client.response(head=True)
        assert status == 200 and int(header(headers, "content-length")[0]) > 0
        client.send(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")  # no body bytes were left over before this answer
        assert json.loads(client.response()[2])["path"] == "/y"


def test_expect_100_continue_is_answered_when_the_app_reads_the_body(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        assert json.loads(client.response()[2])["length"] == 5


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",  # nothing after it is answered
])
def test_a_request_without_exactly_one_host_is_a_400(connect: Any, request_bytes: bytes) -> None:
    # RFC 9112 3.2: a proxy must not have to guess which Host a request is for
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(request_bytes)
        status, _, body = client.response()
        assert status == 400 and "Host" in json.loads(body)["error"]
        assert client.closed()
        plain = connect(url)
        plain.send(b"GET / HTTP/1.0\r\n\r\n")  # (HTTP/1.0 may leave Host out)
        assert plain.response()[0] == 200


def test_trailer_fields_never_become_request_headers(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\nAuthorization: Bearer forged\r\nHost: admin.internal\r\n\r\n"
                    b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = json.loads(client.response()[2])
        assert seen["length"] == 3
        assert [name for name, _ in seen["headers"]] == ["host", "transfer-encoding"]
        assert json.loads(client.response()[2])["headers"] == [["host", "x"]]  # the next request is clean too


def test_endless_trailer_fields_are_cut_off(connect: Any, caplog: pytest.LogCaptureFixture) -> None:
    # httptools keeps a header line whole until it ends: a trailer that never ends must not grow for ever
    with caplog.at_level(logging.INFO, "premier.server"), serve_premier(echo) as url:
        client = connect(url)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Flood: ")
        with contextlib.suppress(OSError):  # (the server may close while this is still being sent)
            for _ in range(64):
                client.send(b"y" * 4096)
        assert client.closed()
    assert any("trailer fields or chunk headers are larger" in r.getMessage() for r in caplog.records)


def test_a_newline_in_the_path_cannot_forge_a_server_log_line(connect: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.INFO), serve_premier(broken, access_log=True) as url:
        client = connect(url)
        client.send(b"GET /x%0AERROR%20premier:%20forged HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response()[0] == 500
    lines = [r.getMessage() for r in caplog.records if r.name in ("premier.server", "premier.access")]
    assert any("exception in the ASGI application (GET /x\\nERROR premier: forged)" in line for line in lines)
    assert any('"GET /x\\nERROR premier: forged HTTP/1.1" 500' in line for line in lines)  # the access log
    assert not [line for line in lines if "\n" in line]


def test_a_stalled_request_body_closes_the_connection_and_tells_the_app(connect: Any) -> None:
    told: list[Any] = []

    async def reads_the_body(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        told.append(message["type"])

    with serve_premier(reads_the_body, body_timeout=0.3) as url:
        client = connect(url)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert client.closed(timeout=5)  # (the server's timer looks once a second)
        deadline = time.monotonic() + 5
        while not told and time.monotonic() < deadline:
            time.sleep(0.02)
        assert told == ["http.disconnect"]


def test_a_large_upload_reaches_the_app_in_parts(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        size = 8 * 1024 * 1024
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(size // 65536):
            client.send(b"10000\r\n" + b"z" * 65536 + b"\r\n")
        client.send(b"0\r\n\r\n")
        assert json.loads(client.response()[2])["length"] == size


def test_the_apps_exception_before_its_response_is_a_json_500_and_logged(
    connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raise ValueError("the app is broken")

    with caplog.at_level(logging.ERROR, "premier.server"), serve_premier(broken) as url:
        client = connect(url)
        client.send(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = client.response()
        assert status == 500 and json.loads(body) == {"error": "Internal Server Error", "status": 500}
        assert header(headers, "connection") == ["close"] and client.closed()
    assert any("GET /boom" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_apps_exception_after_its_response_started_closes_the_connection(connect: Any) -> None:
    async def breaks_midway(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("midway")

    with serve_premier(breaks_midway) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"partial" in client.read_until(b"partial")
        assert client.closed()


def test_a_body_longer_than_its_content_length_is_cut_and_the_connection_closed(connect: Any) -> None:
    async def liar(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"abcdef"})

    with serve_premier(liar) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.closed()
        assert b"abcdef" not in client.buffer


def test_a_client_that_leaves_is_seen_by_the_app_as_a_disconnect(connect: Any) -> None:
    seen: list[str] = []
    done = threading.Event()

    async def waits(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        seen.append((await receive())["type"])  # then, blocking: the client's departure
        done.set()

    with serve_premier(waits) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        client.close()
        assert done.wait(5)
    assert seen == ["http.disconnect"]


def test_response_header_values_with_line_breaks_are_refused(connect: Any) -> None:
    async def injects(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nset-cookie: evil=1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve_premier(injects) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.closed()  # nothing of the injected head was written
        assert b"evil" not in client.buffer


def test_lifespan_runs_and_its_state_reaches_every_request(connect: Any) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await echo(scope, receive, send)

    with serve_premier(app, lifespan="on") as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(client.response()[2])["state"] == ["db"]
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_a_failed_startup_stops_the_server_before_it_listens() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        assert run_loop(Server(app, lifespan="on").serve([sock], handle_signals=False)) == 3
    finally:
        sock.close()


def test_graceful_shutdown_finishes_requests_in_flight_and_closes_idle_connections(connect: Any) -> None:
    started = threading.Event()

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            started.set()
            await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with serve_premier(slow) as url:
        idle = connect(url)
        idle.send(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response()[2] == b"/quick"
        busy = connect(url)
        busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(5)
    # (leaving the block stopped the server, waiting for the request in flight)
    status, headers, body = busy.response()
    assert (status, body) == (200, b"/slow") and header(headers, "connection") == ["close"]
    assert idle.closed(timeout=1) and busy.closed(timeout=1)


def test_a_bad_request_after_pipelined_ones_is_answered_after_them(connect: Any) -> None:
    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.2)
        await echo(scope, receive, send)

    with serve_premier(slow) as url:
        client = connect(url)
        client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
        assert [json.loads(client.response()[2])["path"] for _ in range(2)] == ["/first", "/second"]
        status, _, body = client.response()
        assert status == 400 and json.loads(body)["status"] == 400
        assert client.closed()


def test_head_and_bodiless_statuses_never_get_a_made_up_length_or_a_body(connect: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        status = 204 if scope["path"] == "/nothing" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"streamed", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve_premier(app) as url:
        client = connect(url)
        client.send(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = client.response(head=True)
        assert status == 200 and not header(headers, "content-length") and not header(headers, "transfer-encoding")
        client.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = client.response()
        assert status == 204 and not header(headers, "content-length")
        client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing of the 204's body was left on the wire
        assert client.response()[2] == b"streamed"


def test_the_head_limit_counts_heads_not_bodies(connect: Any) -> None:
    with serve_premier(echo) as url:
        client = connect(url)
        body = b"b" * 150_000  # a large body in the same reads as the next request's head: no 431
        client.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%sGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
                    % (len(body), body))
        assert json.loads(client.response()[2])["length"] == len(body)
        assert json.loads(client.response()[2])["path"] == "/after"
        large = connect(url)  # a head over the limit in one write: 431
        large.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Large: " + b"a" * 70_000 + b"\r\n\r\n")
        assert large.response()[0] == 431


def test_a_failing_shortcut_is_a_logged_500_not_a_400(connect: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
            await echo(scope, receive, send)

        def shortcut(self, request: Any) -> bool:
            raise ValueError("a bug in the shortcut")

    with caplog.at_level(logging.ERROR, "premier.server"), serve_premier(Broken()) as url:
        client = connect(url)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response()[0] == 500
    assert any(r.exc_info and "a bug in the shortcut" in str(r.exc_info[1]) for r in caplog.records)
