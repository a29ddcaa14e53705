"""Shortcuts (``premier.asgi.shortcut``): under Premier's own server, a fresh cache hit is answered from
memory without running the route's chain, and a featureless standalone route forwards on the direct
path. They must answer exactly what the chain answers: each test compares Premier's server (shortcut)
with uvicorn (the chain) over real HTTP, or checks what only the shortcut path could get wrong."""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from _asgi import Backend, paths
from _servers import backend, serve, serve_premier
from conftest import FakeClock
from premier.asgi import ASGIGateway, GatewayConfig
from premier.providers import AsyncInMemoryCache

Answer = tuple[int, dict[str, str], bytes]


def get(url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@contextmanager
def both(cfg: GatewayConfig, app: Any, **options: Any) -> Iterator[tuple[str, str]]:
    """The same configuration and app behind two gateways: under Premier's server (shortcuts) and under
    uvicorn (the chain)."""
    with serve_premier(ASGIGateway(cfg, app=app, **options)) as fast, serve(ASGIGateway(cfg, app=app, **options)) as chain:
        yield fast, chain


def comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    """An answer less what the two servers write differently: their own headers, and the framing (uvicorn
    chunks a body whose length the app did not give; Premier's server counts it)."""
    status, headers, body = answer
    return status, {k: v for k, v in headers.items() if k not in _SERVERS_OWN}, body


_SERVERS_OWN = frozenset({"date", "server", "content-length", "transfer-encoding"})


CACHED = paths(("/items/*", {"cache": {"expire_s": 60}}))


def test_a_hit_answers_what_the_chain_answers_without_calling_the_app() -> None:
    app = Backend(headers=[("content-type", "text/plain"), ("etag", '"v1"'), ("x-extra", "kept")], body=b"item one")
    with both(CACHED, app) as (fast, chain):
        for url in (fast, chain):
            assert get(url, "/items/1?page=2")[1]["x-cache"] == "MISS"
        calls = app.calls
        hits = [get(url, "/items/1?page=2") for url in (fast, chain)]
        assert app.calls == calls  # neither reached the app
        assert comparable(hits[0]) == comparable(hits[1])
        status, headers, body = hits[0]
        assert (status, headers["x-cache"], headers["age"], headers["x-extra"]) == (200, "HIT", "0", "kept")
        assert headers["content-length"] == str(len(body)) and body == b"item one"
        assert get(fast, "/items/1?page=3")[1]["x-cache"] == "MISS"  # the query is part of the key


def test_if_none_match_and_head_hits_match_the_chain() -> None:
    app = Backend(headers=[("content-type", "text/plain"), ("etag", '"v1"'), ("content-length", "8")], body=b"item two")
    with both(CACHED, app) as (fast, chain):
        for url in (fast, chain):
            get(url, "/items/2")
        not_modified = [get(url, "/items/2", {"If-None-Match": '"v1"'}) for url in (fast, chain)]
        assert comparable(not_modified[0]) == comparable(not_modified[1])
        assert not_modified[0][0] == 304 and not_modified[0][2] == b""
        heads = [get(url, "/items/2", method="HEAD") for url in (fast, chain)]
        assert comparable(heads[0]) == comparable(heads[1])
        assert heads[0][1]["content-length"] == "8" and heads[0][2] == b""


def test_requests_that_must_revalidate_or_bypass_reach_the_app() -> None:
    app = Backend(headers=[("content-type", "text/plain")])
    with serve_premier(ASGIGateway(CACHED, app=app)) as url:
        get(url, "/items/3")
        assert get(url, "/items/3")[1]["x-cache"] == "HIT" and app.calls == 1
        assert get(url, "/items/3", {"Cache-Control": "no-cache"})[1]["x-cache"] == "MISS"
        assert get(url, "/items/3", {"Pragma": "no-cache"})[1]["x-cache"] == "MISS"
        get(url, "/items/3", {"Cache-Control": "no-store"})
        get(url, "/items/3", {"Range": "bytes=0-1"})
        assert app.calls == 5


def test_vary_keeps_variants_apart() -> None:
    app = Backend(headers=[("vary", "Accept-Language")], body=lambda n: f"variant {n}".encode())
    with serve_premier(ASGIGateway(CACHED, app=app)) as url:
        assert get(url, "/items/4", {"Accept-Language": "fr"})[2] == b"variant 1"
        assert get(url, "/items/4", {"Accept-Language": "de"})[2] == b"variant 2"
        assert get(url, "/items/4", {"Accept-Language": "fr"})[2] == b"variant 1"
        assert get(url, "/items/4", {"Accept-Language": "de"})[2] == b"variant 2"
        assert app.calls == 2


def test_an_expired_entry_is_fetched_again_and_age_counts_up() -> None:
    clock = FakeClock(1_000_000.0)
    app = Backend(headers=[("content-type", "text/plain")])
    cfg = paths(("/items/*", {"cache": {"expire_s": 10}}))
    with serve_premier(ASGIGateway(cfg, app=app, cache_provider=AsyncInMemoryCache(clock=clock), wall_clock=clock)) as url:
        get(url, "/items/5")
        clock.advance(4)
        assert get(url, "/items/5")[1]["age"] == "4" and app.calls == 1
        clock.advance(7)
        assert get(url, "/items/5")[1]["x-cache"] == "MISS" and app.calls == 2


def test_a_response_header_with_a_line_break_never_reaches_the_wire() -> None:
    # (the app sends it; the chain's server refuses the head, so nothing is stored or served)
    app = Backend(headers=[("x-bad", "a\r\nset-cookie: evil=1")])
    with serve_premier(ASGIGateway(CACHED, app=app)) as url:
        for _ in range(2):  # nor is it stored and served from the cache
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                get(url, "/items/6")
    assert app.calls == 2


def test_a_slow_hit_is_logged_by_monitoring(caplog: pytest.LogCaptureFixture) -> None:
    app = Backend(headers=[("content-type", "text/plain")])
    cfg = paths(("/items/*", {"cache": {"expire_s": 60}, "monitoring": {"log_threshold": 0}}))
    with caplog.at_level(logging.WARNING, "premier"), serve_premier(ASGIGateway(cfg, app=app)) as url:
        get(url, "/items/7")
        assert get(url, "/items/7")[1]["x-cache"] == "HIT"
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow request: GET /items/7")]
    assert len(slow) == 2 and "-> 200" in slow[1]


def test_with_the_dashboard_counting_every_hit_goes_through_the_chain() -> None:
    app = Backend(headers=[("content-type", "text/plain")])
    cfg = paths(("/items/*", {"cache": {"expire_s": 60}}), dashboard={"token": "t0ken-for-the-test"})
    gateway = ASGIGateway(cfg, app=app)
    with serve_premier(gateway) as url:
        for _ in range(4):
            get(url, "/items/8")
        assert gateway.stats is not None
        route = next(r for r in gateway.stats.snapshot()["routes"] if r["route"] == "/items/*")
    assert route["requests"] == 4 and route["cache"]["hits"] == 3


# --- the direct path ------------------------------------------------------------------------------


def standalone(origin: str, **upstream: Any) -> GatewayConfig:
    return GatewayConfig.from_dict({"premier": {"servers": [origin], "upstream": upstream}})


def test_the_direct_path_answers_what_the_reverse_proxy_answers() -> None:
    with backend("d1") as origin:
        cfg = standalone(origin.url)
        with serve_premier(ASGIGateway(cfg)) as fast, serve(ASGIGateway(cfg)) as chain:
            for url in (fast, chain):
                get(url, "/warm")  # (a kept-alive connection for the next request: the direct path's)
            answers = [get(url, "/echo/x?q=1", {"X-Custom": "v", "Connection": "keep-alive"}) for url in (fast, chain)]
    assert comparable(answers[0])[:2] == comparable(answers[1])[:2]
    seen = [json.loads(body) for _, _, body in answers]
    for one in seen:  # the gateway's port (in X-Forwarded-Host) and the backend's count differ, nothing else
        one.pop("served")
        one["headers"] = [h for h in one["headers"] if h[0] != "x-forwarded-host"]
    assert seen[0] == seen[1]
    assert ["x-custom", "v"] in seen[0]["headers"] and ["x-forwarded-for", "127.0.0.1"] in seen[0]["headers"]


def test_a_kept_alive_connection_the_backend_closed_is_replaced_without_an_error() -> None:
    with backend("d2") as origin:
        with serve_premier(ASGIGateway(standalone(origin.url))) as url:
            assert get(url, "/")[0] == 200
            origin.restart()  # its kept-alive connection is now closed at the other end
            assert [get(url, "/")[0] for _ in range(3)] == [200, 200, 200]


def test_no_answer_on_a_kept_alive_connection_is_a_504_after_the_read_timeout() -> None:
    with backend("d3") as origin:
        with serve_premier(ASGIGateway(standalone(origin.url, read_timeout=0.3))) as url:
            get(url, "/")
            started = time.monotonic()
            status, _, body = get(url, "/slow?seconds=3")
            elapsed = time.monotonic() - started
            assert status == 504 and "no response within 0.3 s" in json.loads(body)["error"]
            assert 0.3 <= elapsed < 1.5
            assert get(url, "/")[0] == 200  # the slow connection was dropped, not reused


def test_a_hit_over_http_1_0_keeps_the_connection_only_when_asked_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from test_server import Connection

    app = Backend(headers=[("content-type", "text/plain")], body=b"cached")
    gateway = ASGIGateway(CACHED, app=app)
    with caplog.at_level(logging.INFO, "premier.access"), serve_premier(gateway, access_log=True) as url:
        get(url, "/items/9")
        kept = Connection(url)
        for expected in ("MISS", "HIT"):  # (a query of its own: the first is a miss)
            kept.send(b"GET /items/9?x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = kept.response()
            seen = dict(headers)
            assert (status, body, seen["connection"], seen["x-cache"]) == (200, b"cached", "keep-alive", expected)
        closing = Connection(url)
        closing.send(b"GET /items/9?x HTTP/1.0\r\n\r\n")
        status, headers, _ = closing.response()
        assert dict(headers)["connection"] == "close" and dict(headers)["x-cache"] == "HIT" and closing.closed()
        kept.close()
        closing.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "premier.access"]
    assert sum('"GET /items/9?x HTTP/1.0" 200' in line for line in logged) == 3


@contextmanager
def cutting_backend() -> Iterator[str]:
    """A raw HTTP/1.1 backend (keep-alive) whose ``/cut`` answers a head and closes before its body."""
    import socketserver
    import threading

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                if b" /cut " in line:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                    return
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ncut")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_backend_closing_between_head_and_body_sends_the_request_to_another() -> None:
    with cutting_backend() as cutter, backend("d4") as whole:
        cfg = GatewayConfig.from_dict({"premier": {"servers": [cutter, whole.url]}})
        with serve_premier(ASGIGateway(cfg)) as url:
            assert {get(url, "/warm")[2] for _ in range(2)} >= {b"cut"}  # a kept-alive connection to each
            status, _, body = get(url, "/cut")  # the cutter's turn: its head, then nothing
            assert status == 200 and json.loads(body)["backend"] == "d4"


def test_pipelined_hits_answered_at_once_do_not_recurse() -> None:
    from test_server import Connection

    app = Backend(headers=[("content-type", "text/plain")], body=b"hit")
    with serve_premier(ASGIGateway(CACHED, app=app)) as url:
        get(url, "/items/10")
        client = Connection(url)
        requests = [b"GET /items/miss HTTP/1.1\r\nHost: x\r\n\r\n"] + [b"GET /items/10 HTTP/1.1\r\nHost: x\r\n\r\n"] * 400
        client.send(b"".join(requests))  # the first runs as ASGI; the 400 behind it are answered as it ends
        answers = [client.response() for _ in range(401)]
        client.close()
    assert [dict(a[1])["x-cache"] for a in answers] == ["MISS"] + ["HIT"] * 400


def test_a_client_leaving_a_half_open_probe_gives_the_probe_back() -> None:
    with backend("d5") as origin:
        cfg = standalone(origin.url, passive_health={"failure_threshold": 1, "recovery_timeout": 0.2})
        with serve_premier(ASGIGateway(cfg)) as url:
            assert get(url, "/set-fail/503")[0] == 200  # (also a kept-alive connection: the direct path's)
            assert get(url, "/")[0] == 503  # the backend's 503: its breaker opens
            assert get(origin.url, "/set-fail/0")[0] == 200  # healthy again (asked directly)
            time.sleep(0.3)  # half-open: the next request is its probe
            host, port = url.removeprefix("http://").split(":")
            impatient = http.client.HTTPConnection(host, int(port), timeout=0.2)
            impatient.request("GET", "/slow?seconds=0.5")
            with pytest.raises(TimeoutError):
                impatient.getresponse()
            impatient.close()  # the probe's client left before any answer
            time.sleep(0.6)  # (the backend answers the abandoned request: the probe comes back then)
            assert get(url, "/")[0] == 200


def test_shutdown_waits_for_direct_path_requests_in_flight() -> None:
    import threading

    with backend("d6") as origin:
        answers: list[Answer] = []
        with serve_premier(ASGIGateway(standalone(origin.url))) as url:
            get(url, "/")
            slow = threading.Thread(target=lambda: answers.append(get(url, "/slow?seconds=0.5")))
            slow.start()
            time.sleep(0.1)  # (in flight on the direct path: no task of its own)
        slow.join(5)
    assert len(answers) == 1 and answers[0][0] == 200 and json.loads(answers[0][2])["slow"] is True
