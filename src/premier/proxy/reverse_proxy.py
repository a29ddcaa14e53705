"""The reverse proxy: an ASGI app that forwards each HTTP request to a backend of its upstream pool.

What a request's trip looks like:

- **Choice and failover.** The pool's balancer picks a healthy backend. A connection that cannot be
  opened (refused, unreachable, timed out) sends the request to the next healthy backend, whatever the
  method: nothing was sent yet. A backend that closes the connection before answering also fails over,
  for idempotent requests without a body — and so does one closing after its head, before its body: a
  response with a ``Content-Length`` goes on with its body's first part. Statuses worth retrying
  (502/503/504) are the route's ``retry`` feature's business, which calls the proxy again: the backends
  the request tried are kept in its scope (``TRIED``), and the next attempt goes to another one.
- **Headers.** Hop-by-hop headers (and those the ``Connection`` header names) are dropped both ways;
  ``Host`` becomes the backend's (unless ``preserve_host``); ``X-Forwarded-For/-Proto/-Host`` are set,
  appended to the incoming ones only when the peer is a trusted proxy. The backend's ``Date`` and
  ``Server`` are dropped, as nginx does, so that the server in front (which adds its own) never sends
  two. ``Content-Encoding`` and ``Content-Length`` pass unchanged: bodies are never decoded.
- **Bodies** stream both ways with flow control on each side: memory per request stays near the
  connection's high-water mark whatever the body's size. The path and query reach the backend byte for
  byte (``strip_prefix`` removed), unless the path holds ``//``, ``/./`` or ``/../``, written out or
  percent-encoded: then the normalised path the policy was chosen for is sent, so that the backend
  cannot resolve it to another one.
- **Errors** answer JSON naming the cause, with a log line: refused or reset connection 502, timeout
  504, no healthy backend 503, a request body that stops arriving for ``read_timeout`` 408. A failure
  after the response started aborts the client's connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote

from premier.asgi.chain import retry_after_header
from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import Message, Receive, Scope, Send, error_body, printable, send_error
from premier.proxy.http1 import UpstreamClosed, UpstreamConnection, UpstreamTimeout
from premier.proxy.pool import Backend, UpstreamPool

__all__ = [
    "IDEMPOTENT",
    "NOT_RETURNED",
    "REWRITTEN_REQUEST_HEADERS",
    "AttemptFailed",
    "ReverseProxy",
    "connection_options",
    "failure_message",
    "forwarded_headers",
    "log_failure",
    "request_bytes",
    "response_headers",
    "upstream_target",
]

logger = logging.getLogger("premier")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authenticate", b"proxy-authorization",
})
# request headers the proxy rewrites or must not pass on (uvicorn hands them over lower-cased); the
# WebSocket relay's list starts from this one
REWRITTEN_REQUEST_HEADERS = _HOP_BY_HOP | {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"expect"}
NOT_RETURNED = _HOP_BY_HOP | {b"date", b"server"}  # response headers the client never gets from the backend

_NO_BODY, _LENGTH, _CHUNKED = 0, 1, 2
TRIED = "premier.upstreams_tried"  # the scope's key for the backends a request has tried (retries see it)
_NO_OPTIONS: set[bytes] = set()


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class _ClientStalled(Exception):
    """The client's request body stopped arriving (nothing within the read timeout)."""


class AttemptFailed(Exception):
    """One attempt on a backend failed before anything was sent to the client: the answer it would
    give (``status``, ``message``) and whether the next backend may be tried."""

    def __init__(self, status: int, message: str, *, failover: bool) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.failover = failover


class ReverseProxy:
    """Forwards requests to ``pool``. ``strip_prefix`` is removed from the path first."""

    def __init__(
        self, pool: UpstreamPool, *, identity: ClientIdentity, preserve_host: bool = False,
        strip_prefix: str | None = None,
    ) -> None:
        self.pool = pool
        self.identity = identity
        self.preserve_host = preserve_host
        self.strip_prefix = strip_prefix.rstrip("/") if strip_prefix else None
        self.read_timeout = pool.config.read_timeout
        self._forwarded: dict[tuple[str, str], bytes] = {}  # (peer, scheme) -> X-Forwarded-For/-Proto lines (bounded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"the reverse proxy serves http scopes, not {scope['type']!r}")
        await self.forward(scope, receive, send)

    async def forward(self, scope: Scope, receive: Receive, send: Send, first: Backend | None = None) -> None:
        """Forwards the request, failing over as needed. ``first``: a backend the balancer already chose
        (and admitted) for it — the direct path's (proxy/direct.py), when it hands a request over."""
        method: str = scope["method"]
        target = upstream_target(scope, self.strip_prefix)
        head, host, body = self.request_head(scope)
        replayable = body == _NO_BODY and method in IDEMPOTENT
        pool = self.pool
        # The backends this request tried, kept in its scope: a route's retry calls the proxy again, and
        # goes to another backend while there is one (the balancer alone may well pick the same again).
        tried: list[Backend] | None = scope.get(TRIED)
        if tried is None:
            tried = scope[TRIED] = []
        failure: AttemptFailed | None = None
        backend = first if first is not None else (pool.pick(tried) or pool.pick() if tried else pool.pick())
        while backend is not None:
            tried.append(backend)
            request = request_bytes(method, backend, target, host, head)
            try:
                await self._forward(backend, request, body, method, replayable, receive, send)
                return
            except AttemptFailed as failed:
                log_failure(backend, failed, scope)
                failure = failed
                if not failed.failover:
                    break
            except _ClientGone:
                return
            except _ClientStalled:
                logger.warning("client %s: its request body stopped arriving (nothing within %g s); answering 408 "
                               "(%s %s)", _client_address(scope), self.read_timeout, method, printable(scope["path"]))
                message = f"the request body stopped arriving (nothing within {self.read_timeout:g} s)"
                await send_error(send, 408, error_body(408, message), [(b"connection", b"close")])
                return
            backend = pool.pick(tried)
        if failure is None:
            status, message = 503, "no healthy upstream server"
            headers = [retry_after_header(pool.retry_after())]
            logger.warning("upstream: no healthy server among %d (%s %s)", len(pool.backends), method, printable(scope["path"]))
        else:
            status, message, headers = failure.status, failure_message(tried[-1], failure), []
        await send_error(send, status, error_body(status, message), headers)

    async def _forward(
        self, backend: Backend, request: bytes, body: int, method: str, replayable: bool, receive: Receive, send: Send
    ) -> None:
        """One attempt on ``backend``; raises :class:`AttemptFailed` if it fails before the response starts."""
        pool = self.pool
        health = backend.health
        for _ in range(2):  # a kept-alive connection the backend has just closed earns one fresh try
            try:
                connection, reused = await pool.connect(backend)
            except asyncio.TimeoutError:  # (the built-in TimeoutError from Python 3.11)
                health.failure(pool.clock())
                raise AttemptFailed(504, "connection timed out", failover=True) from None
            except OSError as exc:
                health.failure(pool.clock())
                raise AttemptFailed(502, _describe(exc), failover=True) from None
            except BaseException:
                health.abandoned()  # cancelled (a route timeout): no verdict, but a half-open probe is given back
                raise
            backend.in_flight += 1
            first = b""
            try:
                connection.start_response(head_only=method == "HEAD")
                connection.write(request)
                connection.request_sent = not body
                if body:
                    await _send_body(connection, receive, body == _CHUNKED, self.read_timeout)
                await connection.read_head(self.read_timeout)
                if not (connection.complete or connection.pending) and _has_length(connection.headers):
                    # A body of known length: its head goes on with its first part, so that a backend
                    # closing in between (killed, restarted) has sent the client nothing, and the request
                    # may still go to another backend. (A stream's head goes on at once.)
                    first = await connection.read_body(self.read_timeout) or b""
            except UpstreamClosed as exc:
                # Unless it answered early — a 413 to an upload it will not take — and closed while the
                # body was still going up: its whole answer arrived, and stands (the backend is healthy).
                if not (connection.head_done and connection.complete):
                    backend.in_flight -= 1
                    connection.abort()
                    if reused and not connection.received and replayable:
                        backend.drop_idle()  # the backend restarted or timed its connections out: all are stale
                        continue
                    health.failure(pool.clock())
                    failover = replayable and (not connection.received or connection.head_done)
                    raise AttemptFailed(502, str(exc), failover=failover) from None
            except UpstreamTimeout:
                backend.in_flight -= 1
                connection.abort()
                health.failure(pool.clock())
                raise AttemptFailed(504, f"no response within {self.read_timeout:g} s", failover=False) from None
            except BaseException:
                backend.in_flight -= 1
                connection.abort()
                health.abandoned()
                raise
            try:
                await self._respond(backend, connection, send, receive, first)
            finally:
                backend.in_flight -= 1
            return
        health.failure(pool.clock())
        raise AttemptFailed(502, "the backend closed fresh connections before answering", failover=replayable)

    async def _respond(
        self, backend: Backend, connection: UpstreamConnection, send: Send, receive: Receive, first: bytes
    ) -> None:
        """Passes the response on as it arrives (``first``: its body's first part, already read); the
        connection goes back to the pool if it can be reused."""
        status = connection.status
        pool = self.pool
        backend.health.responded(pool.clock(), status)
        await send({"type": "http.response.start", "status": status, "headers": response_headers(connection.headers)})
        watcher: asyncio.Future[Message] | None = None
        try:
            while True:
                data = first or await connection.read_body(self.read_timeout)
                first = b""
                last = data is None or (connection.complete and not connection.pending)
                await send({"type": "http.response.body", "body": data or b"", "more_body": not last})
                if last:
                    break
                if watcher is None:
                    watcher = _watch_disconnect(receive, connection)
        except (UpstreamClosed, UpstreamTimeout) as exc:
            connection.abort()
            if watcher is not None and watcher.done() and not watcher.cancelled():
                return  # the client left: the stream was cut on purpose
            # Returning with the response unfinished makes the server close the client's connection (with
            # one log line of its own, not the traceback an exception would bring).
            logger.warning("upstream %s: %s after the response started; closing the client's connection", backend.url, exc)
            return
        except BaseException:
            connection.abort()
            raise
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        pool.release(backend, connection)

    def request_head(self, scope: Scope) -> tuple[bytes, bytes | None, int]:
        """The request's header lines after ``Host``, the ``Host`` to send (``None``: the backend's),
        and how its body is framed."""
        lines: list[bytes] = []
        host = forwarded_for = forwarded_proto = forwarded_host = connection = None
        body = _NO_BODY
        for name, value in scope["headers"]:
            if name in REWRITTEN_REQUEST_HEADERS:
                if name == b"host":
                    # The first: a second is refused by Premier's server (RFC 9112 3.2); under uvicorn a
                    # chunked body's trailer fields land after the headers, and must not choose the Host.
                    if host is None:
                        host = value
                elif name == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                elif name == b"x-forwarded-proto":
                    forwarded_proto = value
                elif name == b"x-forwarded-host":
                    forwarded_host = value
                elif name == b"transfer-encoding":
                    body = _CHUNKED
                elif name == b"connection":
                    connection = value
                continue
            if name == b"content-length" and body == _NO_BODY and value != b"0":
                body = _LENGTH
            lines += (name, b": ", value, b"\r\n")
        if connection is not None:
            lines = _without_connection_options(lines, connection)
        if forwarded_for is None and forwarded_proto is None and forwarded_host is None:
            # the usual request (none of its own): the lines for its peer, made once per address
            client = scope.get("client")
            key = (client[0] if client else "", scope.get("scheme", "http"))
            forwarded = self._forwarded.get(key)
            if forwarded is None:
                if len(self._forwarded) >= 4096:
                    self._forwarded.clear()
                forwarded = self._forwarded[key] = b"".join(
                    b"%s: %s\r\n" % item for item in forwarded_headers(scope, self.identity, None, None, None, None)
                )
            lines.append(forwarded)
            if host is not None:
                lines += (b"x-forwarded-host: ", host, b"\r\n")
        else:
            for name, value in forwarded_headers(scope, self.identity, forwarded_for, forwarded_proto, forwarded_host, host):
                lines += (name, b": ", value, b"\r\n")
        if body == _CHUNKED:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines), host if self.preserve_host else None, body


async def _send_body(connection: UpstreamConnection, receive: Receive, chunked: bool, timeout: float) -> None:
    """Streams the client's request body to the backend, waiting whenever the backend reads slower, or
    the client sends slower (each at most ``timeout`` seconds without progress: a stalled upload must
    not hold a client's and a backend's connection for ever)."""
    while True:
        try:
            message = await asyncio.wait_for(receive(), timeout)  # (a task per body part: uploads only)
        except asyncio.TimeoutError:
            connection.abort()
            raise _ClientStalled from None
        if message["type"] == "http.disconnect":
            connection.abort()
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            if chunked:
                connection.write(b"%x\r\n" % len(chunk))
                connection.write(chunk)
                connection.write(b"\r\n")
            else:
                connection.write(chunk)
            await connection.drain(timeout)
            if connection.head_done:
                return  # the backend answered early (413...): the rest is not needed
        if not message.get("more_body", False):
            break
    if chunked:
        connection.write(b"0\r\n\r\n")
    connection.request_sent = True


def _watch_disconnect(receive: Receive, connection: UpstreamConnection) -> asyncio.Future[Message]:
    """While a long response streams, a client that leaves cuts the backend's connection too (an
    endless stream would otherwise be read for nobody)."""

    def on_message(task: asyncio.Future[Message]) -> None:
        if not task.cancelled() and task.exception() is None and not connection.complete:
            connection.abort()

    watcher = asyncio.ensure_future(_receive(receive))
    watcher.add_done_callback(on_message)
    return watcher


async def _receive(receive: Callable[[], Awaitable[Message]]) -> Message:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The backend's response headers the client gets: hop-by-hop ones (and those ``Connection`` names),
    ``Date`` and ``Server`` left out."""
    kept = []
    connection = None
    for header in headers:
        if header[0] in NOT_RETURNED:
            if header[0] == b"connection":
                connection = header[1]
            continue
        kept.append(header)
    return kept if connection is None else _without_connection_options_pairs(kept, connection)


def connection_options(value: bytes) -> set[bytes]:
    """The header names a ``Connection`` header lists (hop-by-hop too), less its plain options."""
    lowered = value.lower()
    if lowered == b"keep-alive" or lowered == b"close":
        return _NO_OPTIONS  # (what nearly every backend sends)
    return {token.strip() for token in lowered.split(b",")} - {b"close", b"keep-alive", b""}


def _without_connection_options(lines: list[bytes], connection: bytes) -> list[bytes]:
    options = connection_options(connection)
    if not options:
        return lines
    kept: list[bytes] = []
    for i in range(0, len(lines), 4):
        if lines[i] not in options:
            kept += lines[i:i + 4]
    return kept


def _without_connection_options_pairs(headers: list[tuple[bytes, bytes]], connection: bytes) -> list[tuple[bytes, bytes]]:
    options = connection_options(connection)
    return [(name, value) for name, value in headers if name not in options] if options else headers


def request_bytes(method: str, backend: Backend, target: bytes, host: bytes | None, head: bytes) -> bytes:
    """The request as written to ``backend``: request line, ``Host`` (``None``: the backend's), the rest."""
    return b"".join((
        method.encode("latin-1"), b" ", backend.base_path, target, b" HTTP/1.1\r\nhost: ", host or backend.host_header,
        b"\r\n", head,
    ))


def log_failure(backend: Backend, failed: AttemptFailed, scope: Scope) -> None:
    logger.warning("upstream %s: %s (%s %s)", backend.url, failed.message, scope["method"], printable(scope["path"]))


def failure_message(backend: Backend, failed: AttemptFailed) -> str:
    """What the client's error answer says of a failed attempt."""
    return f"upstream {backend.url}: {failed.message}"


def forwarded_headers(
    scope: Scope, identity: ClientIdentity, forwarded_for: bytes | None, forwarded_proto: bytes | None,
    forwarded_host: bytes | None, host: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """``X-Forwarded-For/-Proto/-Host`` for the backend, given the incoming ones (believed only from a
    trusted proxy) and the request's ``Host``."""
    client = scope.get("client")
    peer = client[0] if client else ""
    if not identity.trusts(peer):
        forwarded_for = forwarded_proto = forwarded_host = None
    peer_bytes = peer.encode("latin-1")
    headers = [
        (b"x-forwarded-for", forwarded_for + b", " + peer_bytes if forwarded_for else peer_bytes),
        (b"x-forwarded-proto", forwarded_proto or scope.get("scheme", "http").encode("latin-1")),
    ]
    if forwarded_host or host:
        headers.append((b"x-forwarded-host", forwarded_host or host or b""))
    return headers


def upstream_target(scope: Scope, strip_prefix: str | None) -> bytes:
    """The path and query a backend receives (after its own base path): the client's bytes, less
    ``strip_prefix``, unless they could resolve elsewhere than the normalised path the policy was chosen
    for — ``//`` or dot segments, written out or percent-encoded (``/admin/%2e%2e/users``,
    ``/admin%2F..%2Fx``): then the normalised path, encoded."""
    raw: bytes | None = scope.get("raw_path")
    path: str = scope["path"]
    # (find, not `in`: on bytes, `in` first tries its operand as an integer, an exception each time)
    if (raw is None or raw.find(b"//") >= 0 or (raw.find(b"/.") >= 0 and _has_dot_segment(raw))
            or (raw.find(b"%") >= 0 and unquote(raw.decode("latin-1")) != path)):
        raw = quote(path).encode("ascii")
    if strip_prefix is not None:
        encoded = strip_prefix.encode("latin-1")
        if raw.startswith(encoded) and raw[len(encoded):len(encoded) + 1] in (b"", b"/"):
            raw = raw[len(encoded):] or b"/"
        elif path.startswith(strip_prefix) and path[len(strip_prefix):len(strip_prefix) + 1] in ("", "/"):
            raw = quote(path[len(strip_prefix):] or "/").encode("ascii")
    query: bytes = scope.get("query_string", b"")
    if query and query.find(b"#") >= 0:  # a request target has no fragment (some servers pass one on): escape it
        query = query.replace(b"#", b"%23")
    return raw + b"?" + query if query else raw


def _has_dot_segment(raw: bytes) -> bool:
    return b"/./" in raw or b"/../" in raw or raw.endswith((b"/.", b"/.."))


def _has_length(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"content-length" for name, _ in headers)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _describe(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return exc.strerror or str(exc) or type(exc).__name__
