"""Calling an ASGI app in-process, as a server would, and small raw ASGI apps to put behind the gateway.

``call`` builds the HTTP scope, gives the app a ``receive`` that yields the request body (one message per
chunk) and then, like uvicorn, answers ``http.disconnect`` once the response is complete (or when the
test sets ``disconnect``), and a ``send`` that records every message. Nothing here is a mock of Premier:
the gateway under test is the real one, and the apps are real (if tiny) ASGI applications.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from premier.asgi import ASGIGateway, GatewayConfig

Message = dict[str, Any]
Headers = Sequence[tuple[str, str]]


class Result:
    """What the client was sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.complete = asyncio.Event()

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.start"]

    @property
    def status(self) -> int:
        (start,) = self.starts
        return int(start["status"])

    @property
    def header_list(self) -> list[tuple[str, str]]:
        (start,) = self.starts
        return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start.get("headers", ())]

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.header_list if k == name.lower()]

    @property
    def chunks(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        assert self.header("content-type") == "application/json"
        assert self.header("content-length") == str(len(self.body))
        return json.loads(self.body)

    @property
    def finished(self) -> bool:
        """Whether the response body was completed (a last message with ``more_body`` false)."""
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        return bool(bodies) and not bodies[-1].get("more_body", False)

    @property
    def x_cache(self) -> str | None:
        return self.header("x-cache")


def http_scope(
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: Headers = (),
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    raw_path: bytes | None = None,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(
    app: Callable[..., Awaitable[None]],
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: Headers = (),
    body: bytes | Iterable[bytes] = b"",
    more_body: bool = False,
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    raw_path: bytes | None = None,
    disconnect: asyncio.Event | None = None,
    on_send: Callable[[Message], None] | None = None,
    receive_log: list[str] | None = None,
) -> Result:
    """One request through ``app``; returns what was sent. Exceptions from the app propagate.

    ``more_body``: the body's last part says more is coming, and none does (an upload under way; with
    ``disconnect`` set, one the client abandoned)."""
    result = Result()
    chunks = [body] if isinstance(body, bytes) else list(body)
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": more_body or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    gone = disconnect or asyncio.Event()

    async def receive() -> Message:
        if pending:
            message = pending.pop(0)
            if receive_log is not None:
                receive_log.append(f"receive {message['body']!r}")
            return message
        # Like uvicorn: no more body; answer "disconnect" once the response is complete or the client left.
        waiters = [asyncio.ensure_future(result.complete.wait()), asyncio.ensure_future(gone.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        result.messages.append(message)
        if on_send is not None:
            on_send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            result.complete.set()

    scope = http_scope(method, path, query=query, headers=headers, client=client, raw_path=raw_path)
    await app(scope, receive, send)
    return result


def config(premier: dict[str, Any]) -> GatewayConfig:
    """A validated configuration from the mapping under ``premier:``."""
    return GatewayConfig.from_dict({"premier": premier})


def paths(*entries: tuple[str, dict[str, Any] | None], **top: Any) -> GatewayConfig:
    """``paths(("/a", {"cache": {}}), ("/b", {...}), default_features={...})``."""
    return config({"paths": [{"pattern": p, "features": f or {}} for p, f in entries], **top})


class Backend:
    """A raw ASGI app answering ``status``/``headers``/``body`` (settable between requests); counts its
    calls and records the scopes and request bodies it saw. ``body`` may be a list of chunks, and any
    of the three may be a function of the call number (1-based)."""

    def __init__(
        self,
        status: int | Callable[[int], int] = 200,
        headers: Headers | Callable[[int], Headers] = (),
        body: bytes | list[bytes] | Callable[[int], bytes | list[bytes]] | None = None,
        *,
        read_body: bool = False,
        hold: asyncio.Event | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.read_body = read_body
        self.hold = hold
        self.scopes: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.entered = asyncio.Event()

    @property
    def calls(self) -> int:
        return len(self.scopes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.scopes.append(scope)
        n = len(self.scopes)
        self.entered.set()
        if self.read_body:
            self.bodies.append(await read_body(receive))
        if self.hold is not None:
            await self.hold.wait()
        status = self.status(n) if callable(self.status) else self.status
        headers = self.headers(n) if callable(self.headers) else self.headers
        body: Any = self.body(n) if callable(self.body) else self.body
        if body is None:
            body = f"{scope['method']} {scope['path']} call {n}".encode()
        chunks = [body] if isinstance(body, bytes) else body
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        })
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})


async def read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def gateway(cfg: GatewayConfig, app: Any, **kwargs: Any) -> ASGIGateway:
    return ASGIGateway(cfg, app=app, **kwargs)


class ClientLeft(Exception):
    """What a framework raises when its client left mid-body (Starlette's ``ClientDisconnect``)."""


def upload(ends: str = "raises", status: int | Callable[[int], int] = 200) -> Any:
    """An app that reads the whole body, then answers ``status`` (a number, or a function of the call
    number). Told the client left before the body's end, it ``ends`` the request as a framework does:
    "raises" (a plain app), "answers 500, raises" (Starlette: its error middleware answers, then
    re-raises), "answers 400" (FastAPI, for the body it could not parse) or "returns" (Django: no
    answer)."""
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        if message["type"] == "http.disconnect":
            if ends == "returns":
                return
            if ends == "answers 400":
                await Backend(status=400, body=b'{"detail": "There was an error parsing the body"}')(
                    scope, receive, send
                )
                return
            if ends == "answers 500, raises":
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise ClientLeft()
        await Backend(status=status(calls) if callable(status) else status)(scope, receive, send)

    return app
