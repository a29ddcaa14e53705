"""The direct path: forwarding a request on a kept-alive backend connection inside the servers' protocol
callbacks, with no ASGI messages, task, future or coroutine per request.

Premier's own server (``premier.server``) offers it to the gateway as a *shortcut*; the gateway takes it
for routes with no features (in standalone mode, when no one counts requests: see
``ASGIGateway.shortcut``). It does what :class:`~premier.proxy.reverse_proxy.ReverseProxy` does — the
same request head, the same response headers, the same health accounting and error answers — for the
case that needs no waiting of its own: an idempotent request without a body, and a backend (chosen by
the balancer as usual) with an idle connection. Anything else is handed to the reverse proxy's own
coroutine, with the chosen backend, before a byte reached the client:

- no idle connection to the chosen backend (the first requests, or after an idle timeout);
- the kept-alive connection was closed by the backend before it answered (the reverse proxy then
  drops the backend's other idle connections and tries a fresh one, as it does itself).

A response streams through as it arrives (one write per arrival, the head with the first body part);
when the client reads slower than the backend sends, the backend's connection stops being read until
the client catches up. A malformed answer is a 502, no answer within ``read_timeout`` seconds a 504
(JSON naming the backend, a log line); a failure after the response started closes the client's
connection, and a client that leaves closes the backend's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from premier.asgi.exchange import ASGIApp, Scope, error_body, error_headers
from premier.proxy.http1 import UpstreamClosed, UpstreamConnection
from premier.proxy.pool import Backend
from premier.proxy.reverse_proxy import (
    IDEMPOTENT,
    NOT_RETURNED,
    TRIED,
    AttemptFailed,
    ReverseProxy,
    connection_options,
    failure_message,
    log_failure,
    logger,
    request_bytes,
    response_headers,
    upstream_target,
)

__all__ = ["DirectForward", "DirectRequest"]


class DirectRequest(Protocol):
    """What the server hands a shortcut: the request, and a response written without awaiting."""

    scope: Scope
    disconnected: bool
    connection: Any  # ``writing_paused`` and ``on_writable``: the client's flow control

    def start(self, status: int, headers: Any) -> None: ...
    def start_serialized(self, status: int, lines: bytes, length: int) -> None: ...
    def write(self, body: bytes, more: bool) -> None: ...
    def respond(self, status: int, headers: Any, body: bytes) -> None: ...
    def respond_serialized(self, status: int, lines: bytes, body: bytes) -> None: ...
    def unstart(self) -> bool: ...
    def abort(self) -> None: ...
    def continue_with(self, app: ASGIApp) -> None: ...


class DirectForward:
    """The direct path in front of ``proxy``: called with a request, it takes it (``True``: answered here
    or handed to the reverse proxy's coroutine) or leaves it to the ASGI app (``False``)."""

    __slots__ = ("deadlines", "proxy")

    def __init__(self, proxy: ReverseProxy) -> None:
        self.proxy = proxy
        self.deadlines = _Deadlines(proxy.read_timeout)

    def __call__(self, request: DirectRequest, path: str = "", params: Any = None) -> bool:
        scope = request.scope
        method: str = scope["method"]
        if method not in IDEMPOTENT:
            return False
        proxy = self.proxy
        pool = proxy.pool
        backend = pool.pick()
        if backend is None:
            return False  # the reverse proxy answers the 503
        try:
            connection = pool.idle_connection(backend)
            if connection is None:
                request.continue_with(_handing_over(proxy, backend))
                return True
            try:
                head, host, _ = proxy.request_head(scope)
                data = request_bytes(method, backend, upstream_target(scope, proxy.strip_prefix), host, head)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            backend.health.abandoned()  # (no verdict: a half-open probe is given back)
            raise
        _Exchange(proxy, backend, connection, request, self.deadlines).send(data, method == "HEAD")
        return True


def _handing_over(proxy: ReverseProxy, backend: Backend | None) -> ASGIApp:
    """The reverse proxy's own coroutine for the request, with ``backend`` as its first choice (``None``:
    the balancer's)."""
    async def forward(scope: Scope, receive: Any, send: Any) -> None:
        await proxy.forward(scope, receive, send, backend)

    return forward


class _Deadlines:
    """The read timeouts of one proxy's exchanges in flight, checked by one timer: a request costs a
    set entry, not a timer of its own. A timeout is noticed within a quarter of ``read_timeout`` (at
    most a second) after it passed."""

    __slots__ = ("exchanges", "interval", "timeout", "timer")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.interval = min(1.0, timeout / 4)
        self.exchanges: set[_Exchange] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, exchange: _Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self.exchanges.add(exchange)
        if self.timer is None:
            self.timer = loop.call_later(self.interval, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        now = loop.time()
        try:
            for exchange in [e for e in self.exchanges if e.deadline <= now]:
                try:
                    exchange.expired()
                except Exception:  # (one exchange's failure must not end every other's timeout)
                    logger.exception("upstream %s: the direct path failed at its read timeout", exchange.backend.url)
                    exchange.request.abort()
                    exchange.end(abort=True)
        finally:
            if self.exchanges:
                self.timer = loop.call_later(self.interval, self._check, loop)


class _Exchange:
    """One request on one kept-alive connection; ``on_data`` runs after each arrival from the backend."""

    __slots__ = ("backend", "connection", "deadline", "deadlines", "judged", "proxy", "request", "started")

    def __init__(
        self, proxy: ReverseProxy, backend: Backend, connection: UpstreamConnection, request: DirectRequest,
        deadlines: _Deadlines,
    ) -> None:
        self.proxy = proxy
        self.backend = backend
        self.connection = connection
        self.request = request
        self.deadlines = deadlines
        self.started = False  # the response's head was handed to the client
        self.judged = False  # the backend's health was told how the exchange went
        self.deadline = 0.0

    def send(self, data: bytes, head_only: bool) -> None:
        connection = self.connection
        connection.listener = self
        connection.start_response(head_only=head_only)
        self.backend.in_flight += 1
        loop = connection.loop
        self.deadline = loop.time() + self.deadlines.timeout
        self.deadlines.add(self, loop)
        try:
            connection.write(data)
        except UpstreamClosed as closed:
            self._failed_before_head(closed)
            return
        connection.request_sent = True

    def on_data(self) -> None:
        try:
            self._on_data()
        except Exception:  # (a bug must not leave both connections hanging)
            logger.exception("upstream %s: the direct path failed", self.backend.url)
            self.request.abort()
            self.end(abort=True)

    def _on_data(self) -> None:
        connection = self.connection
        request = self.request
        if request.disconnected:
            self.end(abort=True)
            return
        if not self.started:
            if connection.error is not None and not connection.head_done:
                self._failed_before_head(connection.error)
                return
            if not connection.head_done:
                self._progress()
                return
            self.started = True
            status = connection.status
            self.judged = True
            self.backend.health.responded(self.proxy.pool.clock(), status)
            self._start(status)
        data = connection.take_body()
        if connection.complete:
            self.end(abort=False)  # (first: the client's next request may reuse the connection)
            request.write(data, False)
        elif connection.error is not None:
            if not data and request.unstart():
                # Closed after its head, before its body, and none of it was written: not a byte reached
                # the client, so the (idempotent, bodiless) request may go to a backend again.
                self.backend.health.failure(self.proxy.pool.clock())
                logger.warning("upstream %s: %s after its response's head, before its body; trying again",
                               self.backend.url, connection.error)
                self.end(abort=True)
                request.scope[TRIED] = [self.backend]  # (the reverse proxy goes to another one first)
                request.continue_with(_handing_over(self.proxy, None))
                return
            if data:
                request.write(data, True)
            logger.warning("upstream %s: %s after the response started; closing the client's connection",
                           self.backend.url, connection.error)
            request.abort()
            self.end(abort=True)
        else:
            if data:
                request.write(data, True)
                self._progress()
            client = request.connection
            if client.writing_paused and connection.transport is not None:
                # Until the client has caught up: the backend is not read, and the wait is the client's
                # (no read timeout runs, as the reverse proxy's drain has none).
                connection.transport.pause_reading()
                self.deadlines.exchanges.discard(self)
                client.on_writable = self._client_writable

    def _start(self, status: int) -> None:
        """Hands the response's head to the client: the backend's header lines as they will be written
        (``response_headers``' rules; httptools let no line break into a name or value)."""
        lines: list[bytes] = []
        length = -1
        options = None
        for name, value in self.connection.headers:
            if name in NOT_RETURNED:
                if name == b"connection":
                    options = connection_options(value)
                continue
            if name == b"content-length":
                if status < 200 or status == 204 or status == 304:
                    continue  # (a response that has no body: the server writes no length)
                length = int(value)
            lines += (name, b": ", value, b"\r\n")
        if options:  # (rare: the backend named more hop-by-hop headers)
            self.request.start(status, response_headers(self.connection.headers))
        else:
            self.request.start_serialized(status, b"".join(lines), length)

    def _client_writable(self) -> None:
        """The client caught up (or left: the server calls this from ``connection_lost`` too)."""
        connection = self.connection
        if connection.listener is not self:
            return
        if self.request.disconnected:
            self.end(abort=True)
            return
        self._progress()
        self.deadlines.add(self, connection.loop)
        if connection.transport is not None and not connection.closed:
            connection.transport.resume_reading()

    def _progress(self) -> None:
        self.deadline = self.connection.loop.time() + self.deadlines.timeout

    def expired(self) -> None:
        """No progress within the read timeout."""
        request = self.request
        if self.started or request.disconnected:
            if not request.disconnected:
                logger.warning("upstream %s: no data within %g s after the response started; closing the "
                               "client's connection", self.backend.url, self.proxy.read_timeout)
                request.abort()
            self.end(abort=True)
            return
        self.judged = True
        self.backend.health.failure(self.proxy.pool.clock())
        self._answer(AttemptFailed(504, f"no response within {self.proxy.read_timeout:g} s", failover=False))

    def _failed_before_head(self, error: BaseException) -> None:
        connection = self.connection
        backend = self.backend
        if not connection.received and isinstance(error, UpstreamClosed):
            # The backend closed the kept-alive connection (restarted, or timed it out): as the reverse
            # proxy does, drop its other idle ones, and let it try a fresh connection.
            self.end(abort=True, handing_over=True)
            backend.drop_idle()
            self.request.continue_with(_handing_over(self.proxy, backend))
            return
        self.judged = True
        backend.health.failure(self.proxy.pool.clock())
        self._answer(AttemptFailed(502, str(error), failover=False))

    def _answer(self, failed: AttemptFailed) -> None:
        self.end(abort=True)
        request = self.request
        log_failure(self.backend, failed, request.scope)
        body = error_body(failed.status, failure_message(self.backend, failed))
        request.respond(failed.status, error_headers(body), body)

    def end(self, *, abort: bool, handing_over: bool = False) -> None:
        """The exchange is over: the connection is released (or aborted), and a backend that got no
        verdict (the client left, say) gives back a half-open probe — unless the request is handed over
        to the reverse proxy, whose attempt on the same backend carries the probe on."""
        connection = self.connection
        if connection.listener is not self:
            return
        connection.listener = None
        self.deadlines.exchanges.discard(self)
        self.backend.in_flight -= 1
        if not self.judged and not handing_over:
            self.backend.health.abandoned()
        if abort:
            connection.abort()
        else:
            self.proxy.pool.release(self.backend, connection)
