"""WebSocket connections under a path's policy, in plugin and standalone mode alike.

- **Connection attempts** count against the path's ``rate_limit`` (the same counters as its HTTP requests:
  a handshake is a request). A refused attempt gets the HTTP answer ``error_status`` (429) with the JSON
  error and ``Retry-After`` where the server supports the ``websocket.http.response`` extension, and a
  close before accepting (which servers answer with 403) where it does not.
- **Messages** (``websocket`` feature): at most ``message_rate`` messages from the client per connection
  (beyond: close 1008), none larger than ``max_message_bytes`` (close 1009), and no silence either way
  longer than ``idle_timeout`` (close 1001). The app (or the backend) then sees the client disconnect.
- **Monitoring**: when a connection ends, its duration, messages and bytes each way and close code are
  logged (with ``monitoring``) and emitted as a :class:`WebSocketEvent` to subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from premier.asgi.chain import retry_after_header
from premier.asgi.exchange import ASGIApp, Message, Receive, Scope, Send, error_body, printable
from premier.config.schema import FeaturesConfig
from premier.features.ratelimit import RateLimiter
from premier.features.ratelimit.sliding_window import SlidingWindow
from premier.observability.events import Events

__all__ = ["WebSocketEvent", "WebSocketPolicy"]

logger = logging.getLogger("premier")

POLICY_VIOLATION, MESSAGE_TOO_BIG, GOING_AWAY = 1008, 1009, 1001


class WebSocketEvent:
    """A WebSocket connection, emitted when it is accepted (``state`` "open") and again when it ends
    (``state`` "closed"; ``accepted`` false for a refused attempt)."""

    __slots__ = ("accepted", "bytes_in", "bytes_out", "client", "close_code", "duration", "messages_in",
                 "messages_out", "path", "rate_limited", "route", "state")

    def __init__(self, route: str, path: str, client: str) -> None:
        self.route = route
        self.path = path
        self.client = client
        self.accepted = False
        self.state = "open"
        self.rate_limited = False
        self.duration = 0.0
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.close_code: int | None = None

    def __repr__(self) -> str:
        return (f"WebSocketEvent({self.path} route={self.route!r} {self.duration:.3f}s in={self.messages_in}/"
                f"{self.bytes_in}B out={self.messages_out}/{self.bytes_out}B code={self.close_code})")


class WebSocketPolicy:
    """Wraps ``app`` (the plugin's app, or the standalone relay) for the WebSocket connections of one route."""

    def __init__(
        self, app: ASGIApp, pattern: str, features: FeaturesConfig, *, limiter: RateLimiter | None,
        key_of: Callable[[Scope], str], events: Events, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.pattern = pattern
        self.limiter = limiter
        self.key_of = key_of
        self.events = events
        self.clock = clock
        self.rate_limit = features.rate_limit
        self.monitoring = features.monitoring is not None
        websocket = features.websocket
        self.message_rate = SlidingWindow(websocket.message_rate.quota, websocket.message_rate.duration) \
            if websocket and websocket.message_rate else None
        self.max_bytes = websocket.max_message_bytes if websocket else None
        self.idle_timeout = websocket.idle_timeout if websocket else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        event = WebSocketEvent(self.pattern, scope["path"], client[0] if client else "")
        started = time.perf_counter()
        if self.limiter is not None and not await self._admit(scope, receive, send, event):
            self._finish(event, started)
            return
        connection = _Connection(self, scope, receive, send, event)
        try:
            await connection.run()
        finally:
            self._finish(event, started)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, event: WebSocketEvent) -> bool:
        assert self.limiter is not None and self.rate_limit is not None
        key = self.key_of(scope)
        limiter = self.limiter
        decision = limiter.check_nowait(key) if limiter.is_local else await limiter.check(key)
        if decision.allowed:
            return True
        event.rate_limited = True
        message = await receive()  # the handshake request: it must be taken before it is answered
        if message["type"] != "websocket.connect":
            return False
        status = self.rate_limit.error_status
        if "websocket.http.response" in scope.get("extensions", {}):
            body = error_body(status, self.rate_limit.error_message)
            await send({"type": "websocket.http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                retry_after_header(decision.retry_after),
                (b"ratelimit", b'"premier";r=0;t=%d' % math.ceil(decision.reset_after)),
            ]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})  # servers answer 403
        return False

    def _finish(self, event: WebSocketEvent, started: float) -> None:
        event.duration = time.perf_counter() - started
        event.state = "closed"
        if self.monitoring and event.accepted:
            logger.info(
                "websocket %s closed (%s) after %.3fs: in %d messages / %d bytes, out %d messages / %d bytes",
                printable(event.path), event.close_code, event.duration, event.messages_in, event.bytes_in,
                event.messages_out, event.bytes_out,
            )
        if self.events.active:
            self.events.emit(event)


class _Connection:
    """One connection's receive and send, counted and checked on their way through."""

    def __init__(self, policy: WebSocketPolicy, scope: Scope, receive: Receive, send: Send, event: WebSocketEvent) -> None:
        self.policy = policy
        self.scope = scope
        self.client_receive = receive
        self.client_send = send
        self.event = event
        self.rate_state = policy.message_rate.new_state() if policy.message_rate else None
        self.closed_by_policy: tuple[int, str] | None = None
        self.last_activity = policy.clock()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.close_task: asyncio.Future[None] | None = None

    async def run(self) -> None:
        policy = self.policy
        try:
            await policy.app(self.scope, self.receive, self.send)
        finally:
            if self.idle_timer is not None:
                self.idle_timer.cancel()

    async def receive(self) -> Message:
        if self.closed_by_policy is not None:
            code, reason = self.closed_by_policy
            return {"type": "websocket.disconnect", "code": code, "reason": reason}
        message = await self.client_receive()
        kind = message["type"]
        if kind == "websocket.receive":
            event = self.event
            data = message.get("bytes")
            size = len(data) if data is not None else len((message.get("text") or "").encode())
            event.messages_in += 1
            event.bytes_in += size
            self._touch()
            policy = self.policy
            if policy.max_bytes is not None and size > policy.max_bytes:
                return await self._close(MESSAGE_TOO_BIG, f"message larger than {policy.max_bytes} bytes")
            if self.rate_state is not None:
                assert policy.message_rate is not None
                if not policy.message_rate.acquire(self.rate_state, policy.clock()).allowed:
                    return await self._close(POLICY_VIOLATION, "message rate limit exceeded")
        elif kind == "websocket.disconnect":
            self.event.close_code = message.get("code", 1005)
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.closing and kind in ("websocket.send", "websocket.close"):
            if kind == "websocket.close" or self.closed_by_policy is None:
                return
            # what the ASGI spec asks of servers for a send on a closed connection
            raise OSError(f"the gateway closed this WebSocket connection ({self.closed_by_policy[1]})")
        if kind == "websocket.send":
            data = message.get("bytes")
            self.event.messages_out += 1
            self.event.bytes_out += len(data) if data is not None else len((message.get("text") or "").encode())
            self._touch()
        elif kind == "websocket.accept":
            self.event.accepted = True
            self._touch()
            if self.policy.events.active:
                self.policy.events.emit(self.event)
        elif kind == "websocket.close":
            self.closing = True
            self.event.close_code = message.get("code", 1000)
        await self.client_send(message)

    async def _close(self, code: int, reason: str) -> Message:
        """Closes the client's connection for a policy reason; the app sees it as the client leaving."""
        logger.info("websocket %s closed by the gateway: %s (%d)", printable(self.event.path), reason, code)
        self.closed_by_policy = (code, reason)
        self.event.close_code = code
        if not self.closing:
            self.closing = True
            await self.client_send({"type": "websocket.close", "code": code, "reason": reason})
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    def _touch(self) -> None:
        timeout = self.policy.idle_timeout
        if timeout is None:
            return
        self.last_activity = self.policy.clock()
        if self.idle_timer is None:
            self.idle_timer = asyncio.get_running_loop().call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        timeout = self.policy.idle_timeout
        assert timeout is not None
        left = self.last_activity + timeout - self.policy.clock()
        if left > 0:
            self.idle_timer = asyncio.get_running_loop().call_later(left, self._check_idle)
            return
        self.idle_timer = None
        if not self.closing and self.closed_by_policy is None:
            self.closed_by_policy = (GOING_AWAY, "idle timeout")
            self.event.close_code = GOING_AWAY
            self.closing = True
            logger.info("websocket %s closed by the gateway: idle for %gs", printable(self.event.path), timeout)
            self.close_task = asyncio.ensure_future(
                self.client_send({"type": "websocket.close", "code": GOING_AWAY, "reason": "idle timeout"})
            )
