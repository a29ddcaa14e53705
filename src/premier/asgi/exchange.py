"""One HTTP request/response as it passes through a policy's steps, and the gateway's own responses.

An :class:`Exchange` is the only object a request allocates in the gateway. Steps read the request from
it and may swap ``send`` for a wrapper of their own (to add headers, or watch the response) for the
steps inside them; the response status and whether it has started are always recorded on it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

__all__ = ["ASGIApp", "Exchange", "Message", "Receive", "Rejection", "Scope", "Send", "error_body", "error_headers", "printable", "send_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Exchange:
    __slots__ = (
        "attempt",
        "cache_status",
        "client_left",
        "client_send",
        "delay",
        "extra_headers",
        "finished_at",
        "params",
        "path",
        "rate_limited",
        "receive",
        "route",
        "scope",
        "send",
        "started",
        "status",
        "timed_out",
        "upstream_status",
    )

    def __init__(
        self, scope: Scope, receive: Receive, client_send: Send, path: str, route: str, params: dict[str, str]
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.client_send = client_send
        self.send: Send = self.record
        self.path = path  # the normalised path the policy was matched on
        self.route = route  # the matching pattern (bounded cardinality, for stats)
        self.params = params  # path parameters captured by the pattern
        self.status = 0  # what the client was sent
        self.upstream_status = 0  # what the app (or backend) answered, last attempt
        self.attempt = 1  # the retry step counts attempts here
        self.delay = 0.0  # seconds a leaky bucket asked this request to wait
        self.started = False
        self.finished_at = 0.0  # perf_counter() when the client was sent the response's last body part
        self.timed_out = False
        self.client_left = False  # the app was told the client disconnected (by the client, not the timeout)
        self.rate_limited = False
        self.cache_status = ""
        self.extra_headers: dict[bytes, bytes] | None = None  # added to the response the client gets

    def record(self, message: Message) -> Awaitable[None]:
        """The send that reaches the client: records the status, that the response started and when it
        finished, and appends the headers steps asked for (``RateLimit``, ``X-Cache``) to whatever
        response it is. (What the app does after its response finished — Starlette's background tasks —
        is not the request's time: no timeout cuts it, and the duration logged ends with the response.)

        Not a coroutine: it returns the client send's awaitable for the caller to await, so a message
        costs no frame of its own here (this runs for every message of every response)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            if self.extra_headers:
                # A copy: the app may send the same message object again (a module-level constant).
                message = {**message}
                message["headers"] = [*message.get("headers", ()), *self.extra_headers.items()]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished_at = perf_counter()
        return self.client_send(message)

    def add_header(self, name: bytes, value: bytes) -> None:
        """Add (or replace) a header on the response the client will get, whoever produces it."""
        if self.extra_headers is None:
            self.extra_headers = {name: value}
        else:
            self.extra_headers[name] = value

    def from_app(self, message: Message) -> Awaitable[None]:
        """The send given to the app: records its status, then passes through the steps' ``send``
        (whose awaitable it returns, like :meth:`record`).

        A response the app starts once the request has timed out goes nowhere, nor does its body: it
        answers the "disconnect" the timeout told the app (Starlette's 500 for its ``ClientDisconnect``,
        FastAPI's 400 for a body cut short), and the timeout's own answer is sent instead."""
        if message["type"] == "http.response.start":
            if self.timed_out:
                self.send = _dropped  # (each step puts its own send back as the app returns)
                return _dropped(message)
            self.upstream_status = message["status"]
        return self.send(message)

    async def from_client(self) -> Message:
        """The receive given to the app when a step must know whether the client left (breaker, retry):
        an ``http.disconnect`` that is not the timeout's sets :attr:`client_left`."""
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.timed_out:
            self.client_left = True
        return message

    def header(self, name: bytes) -> bytes | None:
        """The first request header called ``name`` (lower-case bytes), or ``None``."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value  # type: ignore[no-any-return]
        return None


def printable(text: str) -> str:
    """A client's text (a decoded path) as a log line may show it: with control characters escaped, so
    that a ``%0A`` cannot start a forged line of its own."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


async def _dropped(message: Message) -> None:
    return None


def error_body(status: int, message: str) -> bytes:
    """``{"error": message, "status": status}``, encoded by the JSON encoder (quotes stay valid JSON)."""
    return json.dumps({"error": message, "status": status}, ensure_ascii=False).encode()


class Rejection(Exception):
    """Raised by a step that answers the request itself (over quota, circuit open, timed out).

    The policy's outermost step turns it into a JSON response; steps in between let it pass (a retry
    never retries a rejection)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


def error_headers(body: bytes, headers: list[tuple[bytes, bytes]] = []) -> list[tuple[bytes, bytes]]:  # noqa: B006
    """The headers of an error answer whose JSON body is ``body``."""
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]


async def send_error(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
    await send({"type": "http.response.start", "status": status, "headers": error_headers(body, headers)})
    await send({"type": "http.response.body", "body": body})
