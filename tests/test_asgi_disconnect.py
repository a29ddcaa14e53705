"""Clients that leave mid-upload, and uploads the timeout cuts off: FastAPI, Starlette and Django behind
the gateway under a real server (uvicorn, and Premier's own), the partial bodies sent over raw sockets.

Neither server cancels the app when its client leaves: the app's ``receive`` answers ``http.disconnect``,
and each framework ends the request its own way — Starlette raises ``ClientDisconnect`` (after its error
middleware sent a 500 that nobody reads), FastAPI answers 400 for the body it could not parse, Django
returns without an answer. At its deadline the timeout tells the app the same."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from _apps import FRAMEWORKS, AppState
from _servers import serve, serve_premier
from premier.asgi import ASGIGateway, GatewayConfig
from premier.observability.events import RequestEvent

SERVERS = {"uvicorn": serve, "premier": serve_premier}

# 100 bytes announced, 4 sent: the app is left reading the body.
PARTIAL_UPLOAD = (
    b"POST /api/upload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    b'{"te'
)


@contextlib.contextmanager
def site(
    framework: str, server: str, features: dict[str, Any]
) -> Iterator[tuple[ASGIGateway, str, queue.SimpleQueue[Any]]]:
    """``framework``'s app behind a gateway whose /api/upload has ``features``, under ``server``; yields the
    gateway, its base URL and the queue its events arrive in (one per request, once the gateway is done
    with it: a test waits on it instead of sleeping)."""
    config = GatewayConfig.from_dict({"premier": {"paths": [{"pattern": "/api/upload", "features": features}]}})
    gateway = ASGIGateway(config, app=FRAMEWORKS[framework](AppState()))
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    gateway.events.subscribe(events.put)
    with SERVERS[server](gateway) as base_url:
        yield gateway, base_url, events


def address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_clients_that_abandon_uploads_do_not_open_the_breaker(framework: str, server: str) -> None:
    features = {"circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 30}}
    with site(framework, server, features) as (gateway, base_url, events):
        for _ in range(3):
            with socket.create_connection(address(base_url), timeout=5) as sock:
                sock.sendall(PARTIAL_UPLOAD)
            event: RequestEvent = events.get(timeout=5)  # the app has given up on this upload
            assert event.path == "/api/upload"
        response = httpx.post(f"{base_url}/api/upload", json={"text": "whole"}, timeout=5)
        assert (response.status_code, response.json()) == (200, {"text": "whole"})
        breaker = gateway.routes["/api/upload"].breaker
        assert breaker is not None
        assert (breaker.state(0), breaker.failures) == ("closed", 0)


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_a_timeout_while_the_app_reads_the_body_answers_the_configured_error(
    framework: str, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    features = {"timeout": {"seconds": 0.2, "error_message": "Upload too slow"}}
    with caplog.at_level(logging.WARNING, logger="premier"), site(framework, server, features) as (_, base_url, events):
        with socket.create_connection(address(base_url), timeout=5) as sock:
            sock.sendall(PARTIAL_UPLOAD)  # and waits, sending nothing more
            response = http.client.HTTPResponse(sock)
            response.begin()
            body = response.read()
        event: RequestEvent = events.get(timeout=5)
    assert response.status == 504
    assert response.getheader("content-type") == "application/json"
    assert json.loads(body) == {"error": "Upload too slow", "status": 504}
    assert (event.status, event.timed_out) == (504, True)
    assert [r.getMessage() for r in caplog.records if r.name == "premier"] == []  # not "after its response started"
