"""Premier's own HTTP/1.1 server protocol: one :class:`HttpProtocol` per client connection, parsing with
``httptools`` and running each request through an ASGI app.

It exists for standalone mode's hot path, where the server's own cost is most of a proxied request's:
a response's head goes out in the same write as its first body chunk (one system call where uvicorn
makes two), nothing per request but the scope, one request object and its task, and one timer per
server (not per connection) for keep-alive and header-read deadlines. An app may also answer without
running as ASGI (``ServerState.wire_answer`` before the scope is made, ``ServerState.shortcut`` before
the task: Premier's gateway does, for cache hits and its proxy's direct path).

What it does, as an HTTP/1.1 server must:

- keep-alive (HTTP/1.0 too, when asked), pipelining (requests queue and are answered in order, reading
  paused meanwhile), ``Expect: 100-continue`` answered when the app first reads the body;
- request bodies stream to ``receive()`` with flow control (reading pauses above 256 KiB unread);
  responses stream with ``transfer-encoding: chunked`` when no ``content-length`` is given, and ``send()``
  waits while the client reads slower than the app writes;
- ``date`` and ``server`` on every response; ``connection: close`` where the connection will close;
- a malformed request answers 400, a head over 64 KiB 431, a head not complete within the header
  timeout 408 (JSON bodies, the connection then closed), never a traceback;
- the app's exception before its response answers 500 (logged with its traceback); after the response
  started, the connection is closed;
- a WebSocket upgrade is handed to uvicorn's WebSocket protocol (``websockets-sansio``), which runs the
  same ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from premier.asgi.exchange import ASGIApp, Message, error_body, printable

if TYPE_CHECKING:
    from premier.server.runner import ServerState

__all__ = ["MAX_HEAD_BYTES", "HttpProtocol"]

logger = logging.getLogger("premier.server")
access_logger = logging.getLogger("premier.access")

MAX_HEAD_BYTES = 64 * 1024
_HIGH_WATER = 256 * 1024  # unread request body bytes above which reading pauses
_LINGER = 2.0  # seconds a refused client's further data is read and dropped before the close


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_NO_BODY_STATUS = frozenset({204, 304})
_FRAMING_NAME_LENGTHS = frozenset({len(b"content-length"), len(b"transfer-encoding"), len(b"connection")})
_WATCHED_NAME_LENGTHS = frozenset({
    len(b"expect"), len(b"upgrade"), len(b"transfer-encoding"), len(b"content-length"), len(b"connection"),
    len(b"host"),
})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: Message = {"type": "http.disconnect"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}  # (str, made once)
_ASGI = {"version": "3.0", "spec_version": "2.4"}


def _tail(keep_alive: bool, say_keep_alive: bool) -> bytes:
    """The end of a response's head: ``connection: close`` where the connection will close,
    ``connection: keep-alive`` where it stays open for a client that must be told (HTTP/1.0)."""
    if not keep_alive:
        return _END_CLOSE
    return _END_KEEP_ALIVE if say_keep_alive else _END


_END, _END_CLOSE, _END_KEEP_ALIVE = b"\r\n", b"connection: close\r\n\r\n", b"connection: keep-alive\r\n\r\n"


class _Request:
    """One request on a connection: its scope, the body received so far, the response's progress."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "connection",
        "disconnected",
        "expect_continue",
        "final_read",
        "has_body",
        "head_only",
        "headers",
        "http10",
        "keep_alive",
        "left",
        "lines",
        "more_body",
        "response_complete",
        "scope",
        "started",
        "status",
        "waiter",
    )

    def __init__(
        self, connection: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect_continue: bool, has_body: bool
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.has_body = has_body  # the request declared a body (content-length or chunked)
        self.head_only = scope["method"] == "HEAD"
        self.http10 = scope["http_version"] == "1.0"
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in ``body``
        self.more_body = True  # the client has more of the body to send
        self.final_read = False  # receive() handed out the body's last part
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.response_complete = False
        self.status = 0
        self.headers: Any = None  # the response's headers, until its first body part goes out with them
        self.lines: bytes | None = None  # or their lines, already serialized (start_serialized)
        self.chunked = False
        self.left = -1  # body bytes still owed under the response's content-length (-1: none given)

    # the app's receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        connection = self.connection
        if self.expect_continue:
            self.expect_continue = False
            if not self.started and not connection.transport.is_closing():
                connection.transport.write(_CONTINUE)
        while not (self.disconnected or self.response_complete):
            if self.body or (not self.more_body and not self.final_read):
                body = self.body
                self.body = []
                self.buffered = 0
                if connection.reading_paused:
                    connection.resume_reading()
                if not self.more_body:
                    self.final_read = True
                data = body[0] if len(body) == 1 else b"".join(body)
                return {"type": "http.request", "body": data, "more_body": self.more_body}
            if connection.reading_paused:
                connection.resume_reading()
            waiter = self.waiter = connection.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        return _DISCONNECT

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the app's send ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            return  # (the client left: what the app still sends goes nowhere, as ASGI allows)
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self.start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body" or self.response_complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response's "
                               + ("end" if self.response_complete else "start"))
        more = message.get("more_body", False)
        self.write(message.get("body", b""), more)
        if more and self.connection.writing_paused:
            await self.connection.drain()

    # the response, for ASGI's send and for shortcuts (answers given without running the app) -------

    def start(self, status: int, headers: Any) -> None:
        """The response's status and headers (written with the first body part)."""
        self.started = True
        self.expect_continue = False
        self.status = status
        self.headers = headers

    def start_serialized(self, status: int, lines: bytes, length: int) -> None:
        """The response's status and its header lines as bytes — each ending in CRLF, none holding
        another line break, ``content-length`` (``length``; -1: none) the only framing header among
        them — written with the first body part."""
        self.started = True
        self.expect_continue = False
        self.status = status
        self.headers = None
        self.lines = lines
        self.left = length

    def write(self, body: bytes, more: bool) -> None:
        """A part of the response's body (``more``: not the last). The caller watches
        ``connection.writing_paused`` for a client that reads slower than it writes."""
        connection = self.connection
        if self.disconnected:
            return
        transport = connection.transport
        # The head waits for the first body part, to go out in the same write (one system call).
        head = b""
        if self.headers is not None:
            head = self._head(self.headers, len(body), more)
            self.headers = None
        elif self.lines is not None:
            head = self._framed(self.lines, len(body), more)
            self.lines = None
        if self.head_only:
            if head:
                transport.write(head)
        elif self.chunked:
            if body:
                transport.writelines((head, b"%x\r\n" % len(body), body, b"\r\n" if more else b"\r\n0\r\n\r\n"))
            elif head or not more:
                transport.write(head if more else head + b"0\r\n\r\n")
        else:
            self._count(len(body))
            if head and body:
                transport.writelines((head, body))
            elif head or body:
                transport.write(head or body)
        if not more:
            if self.left > 0 and not self.head_only:
                self.keep_alive = False
                connection.finish(self)
                raise RuntimeError("the response's body is shorter than its content-length")
            connection.finish(self)

    def respond(self, status: int, headers: Any, body: bytes) -> None:
        """A whole response at once."""
        self.start(status, headers)
        self.write(body, False)

    def respond_serialized(self, status: int, lines: bytes, body: bytes) -> None:
        """A whole response whose header lines are already bytes (as ``start_serialized`` takes them,
        ``content-length`` included) and its body (nothing for HEAD)."""
        self.start_serialized(status, lines, len(body))
        self.write(body, False)

    def unstart(self) -> bool:
        """Takes back a started response none of which was written yet (``True``): another may start
        (the direct path, whose backend closed between its head and its body, tries another)."""
        if not self.started or self.response_complete or (self.headers is None and self.lines is None):
            return False
        self.started = False
        self.status = 0
        self.headers = self.lines = None
        self.left = -1
        return True

    def abort(self) -> None:
        """Close the client's connection (a response that cannot be finished)."""
        self.connection.transport.close()

    def continue_with(self, app: ASGIApp) -> None:
        """Answer the request by running ``app`` (the server's own, or what a shortcut hands over), in a task."""
        connection = self.connection
        task = connection.loop.create_task(self.run(app))
        tasks = connection.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _count(self, size: int) -> None:
        if self.left >= 0:
            self.left -= size
            if self.left < 0:
                self.keep_alive = False
                raise RuntimeError("the response's body is longer than its content-length")

    def _head(self, headers: Any, size: int, more: bool) -> bytes:
        """The head for the app's header list: its lines checked, then framed (``_framed``)."""
        no_body = self.status in _NO_BODY_STATUS or self.status < 200
        parts: list[bytes] = []
        length = -1
        for name, value in headers:
            if len(name) in _FRAMING_NAME_LENGTHS:  # (lower-casing only the names that might be these)
                lower = name.lower()
                if lower == b"content-length":
                    length = int(value)
                    if no_body:
                        continue
                elif lower == b"transfer-encoding":
                    continue  # the server frames the body itself
                elif lower == b"connection":
                    if b"close" in value.lower():
                        self.keep_alive = False
                    continue
            parts += (name, b": ", value, b"\r\n")
        lines = b"".join(parts)
        # A line break inside a name or value would let it write headers of its own (response
        # splitting): every one must be one of the line ends. One count, not a scan per header.
        expected = len(parts) >> 2
        if lines.count(b"\n") != expected or lines.count(b"\r") != expected:
            raise RuntimeError(f"invalid HTTP response head (a line break in a header): {lines[:200]!r}")
        if not no_body:
            self.left = length
        return self._framed(lines, size, more)

    def _framed(self, lines: bytes, size: int, more: bool) -> bytes:
        """The whole head around header lines already checked (``content-length`` among them when
        ``self.left`` is set): the status line and the server's headers first, then the body's framing
        and whether the connection stays open."""
        status = self.status
        state = self.connection.state
        first = state.heads.get(status) or state.head_start(status)
        framing = b""
        if status in _NO_BODY_STATUS or status < 200:
            self.head_only = True  # (whatever body the app sends, none is written)
        elif self.left >= 0 or self.head_only:
            pass  # (its content-length is among the lines; a HEAD's length is not made up)
        elif not more:
            self.left = size
            framing = b"content-length: %d\r\n" % size
        elif not self.http10:
            self.chunked = True
            framing = b"transfer-encoding: chunked\r\n"
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if state.closing:
            self.keep_alive = False
        return b"".join((first, lines, framing, _tail(self.keep_alive, self.http10)))

    # running the app -------------------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        connection = self.connection
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.response_complete:
                connection.transport.close()
            raise
        except Exception as exc:
            logger.error("exception in the ASGI application (%s %s)", self.scope["method"], printable(self.scope["path"]),
                         exc_info=exc)
            if not self.started and not self.disconnected:
                self._answer_500()
            elif not self.response_complete:
                connection.transport.close()
        else:
            if self.disconnected or self.response_complete:
                return
            if not self.started:
                logger.error("the ASGI application returned without a response (%s %s)",
                             self.scope["method"], printable(self.scope["path"]))
                self._answer_500()
            else:
                logger.warning("the ASGI application returned before its response's end (%s %s): "
                               "closing the connection", self.scope["method"], printable(self.scope["path"]))
                connection.transport.close()

    def _answer_500(self) -> None:
        self.started = True
        self.status = 500
        self.keep_alive = False
        body = error_body(500, "Internal Server Error")
        connection = self.connection
        head = self._head([(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], len(body), False)
        connection.transport.write(head if self.head_only else head + body)
        connection.finish(self)


class HttpProtocol(asyncio.Protocol):
    """One client connection. ``state`` is the server's: the app, the shared headers, the connections."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.app = state.app
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # (httptools < 0.6.3)
            # answer a request whose client already half-closed (or pipelined a request after `close`)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.current: _Request | None = None  # the request being answered
        self.parsing: _Request | None = None  # the request whose body is being parsed
        self.queue: deque[_Request] = deque()  # pipelined requests waiting for the current one
        self.reading_paused = False
        self.writing_paused = False
        self.lingering = False  # answered an error and closing: what arrives is dropped
        self._refusal: tuple[int, str] | None = None  # an error to answer once the responses before it are sent
        self._starting = False  # finish() is starting queued requests
        self._bad_head: tuple[int, str] | None = None  # the head just parsed is refused with this, once parsed
        self.on_writable: Callable[[], None] | None = None  # a shortcut waiting for a slow client, once
        self._drain: asyncio.Future[None] | None = None
        self.idle_since = state.now  # deadline bookkeeping for the server's timer (its coarse clock)
        self.head_since: float | None = None  # when the request head being read began (None: not reading one)
        self.body_since = 0.0  # when the body being read last moved on
        # the request head being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # the head's URL and headers so far
        self._read_bytes = 0  # bytes read while the head was incomplete (a bound on the parser's buffers)
        self._expect_continue = False
        self._has_body = False
        self._keep_alive_asked = False
        self._upgrade: bytes | None = None
        self._hosts = 0  # Host header lines
        self._in_body = False  # the head is complete: header lines now are a chunked body's trailer
        self._unparsed = 0  # bytes read in the body that gave no body data yet (trailers, chunk headers)

    # asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.server = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        for request in (self.current, self.parsing):
            if request is not None and not request.response_complete:
                request.disconnected = True
                request.wake()
        self.queue.clear()
        writable, self.on_writable = self.on_writable, None
        if writable is not None:
            writable()  # (a shortcut waiting for this client to catch up: it left)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        reading_head = self.head_since is not None  # (a head already under way before this read)
        if self._in_body:
            self._unparsed += len(data)  # (back to 0 as soon as the body moves on)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._upgrade == b"websocket":
                self._hand_over_websocket(data[upgrade.args[0]:] if upgrade.args else b"")
            return
        except httptools.HttpParserCallbackError as exc:  # (a bug of ours or the app's, not the client's)
            logger.error("the server failed on a request from %s", self.client[0] if self.client else "-",
                         exc_info=exc.__context__ or exc)
            request = self.current
            if request is not None and not request.started:
                request._answer_500()  # (the request it failed on; the connection then closes)
            else:
                self._refuse(500, "Internal Server Error")
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, f"invalid HTTP request: {exc}")
            return
        if self._bad_head is not None:
            self._refuse(*self._bad_head)
        elif self.head_since is not None:  # a head still incomplete: its headers and what was read of it
            if reading_head:
                self._read_bytes += len(data)
            if self._read_bytes > MAX_HEAD_BYTES or self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"the request's head is larger than {MAX_HEAD_BYTES} bytes")
        elif self._unparsed > MAX_HEAD_BYTES:  # (httptools keeps a trailer line whole until its end)
            self._refuse(431, f"the request's trailer fields or chunk headers are larger than {MAX_HEAD_BYTES} bytes")

    def eof_received(self) -> bool | None:
        return None  # close the connection (half-closed clients get nothing more)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        writable, self.on_writable = self.on_writable, None
        if writable is not None:
            writable()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        if self.writing_paused and not self.transport.is_closing():
            drain = self._drain
            if drain is None:
                drain = self._drain = self.loop.create_future()
            await drain

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    # httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0  # the head's URL and headers so far
        self._read_bytes = 0  # bytes read while the head was incomplete (a bound on the parser's buffers)
        self._expect_continue = False
        self._has_body = False
        self._keep_alive_asked = False
        self._upgrade = None
        self._hosts = 0
        self._in_body = False
        self._unparsed = 0
        self.head_since = self.state.now

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # a trailer field: dropped, never merged into the headers the app (or a backend) sees
        self._head_bytes += len(name) + len(value) + 4
        name = name.lower()
        if len(name) in _WATCHED_NAME_LENGTHS:
            if name == b"host":
                self._hosts += 1
            elif name == b"expect" and value.lower() == b"100-continue":
                self._expect_continue = True
            elif name == b"upgrade":
                self._upgrade = value.lower()
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                self._has_body = True
            elif name == b"connection" and value.lower() == b"keep-alive":
                self._keep_alive_asked = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_since = None
        self._in_body = True
        parser = self.parser
        # Refused once the parser stops (data_received): too large, or not the one Host RFC 9112 3.2 asks
        # for (a request pipelined after a refused one is never started: the refusal is the last answer).
        if self._bad_head is not None:
            return
        if self._head_bytes > MAX_HEAD_BYTES:
            self._bad_head = (431, f"the request's head is larger than {MAX_HEAD_BYTES} bytes")
            return
        if self._hosts != 1 and (self._hosts or parser.get_http_version() != "1.0"):
            self._bad_head = (400, "a request needs exactly one Host header" if self._hosts else "a request needs a Host header")
            return
        if parser.should_upgrade() and self._upgrade == b"websocket":
            return  # handed to the WebSocket protocol when the parser stops (data_received)
        target = self._url
        path = target.decode("latin-1")
        # (str tests: `in` on bytes first tries the operand as an integer, an exception each time)
        if path[:1] == "/" and "?" not in path and "#" not in path:
            raw_path, query = target, b""  # the usual target: no need for the URL parser
        else:
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise httptools.HttpParserError("invalid request target") from None
            raw_path, query = url.path or b"/", url.query or b""
            path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="latin-1") if not path.isascii() else unquote(path)
        method = parser.get_method()
        state = self.state
        wire_answer = state.wire_answer
        if (wire_answer is not None and self.current is None and not self._has_body and self._upgrade is None
                and (method == b"GET" or method == b"HEAD")):
            wire = wire_answer(_METHODS[method], path, query, self._headers)
            if wire is not None:
                self._write_wire(wire, method == b"HEAD")
                return
        version = parser.get_http_version()
        scope = {
            "type": "http", "asgi": _ASGI, "http_version": version, "server": self.server, "client": self.client,
            "scheme": "http", "method": _METHODS.get(method) or method.decode("ascii"), "root_path": "",
            "path": path, "raw_path": raw_path, "query_string": query, "headers": self._headers,
            "state": state.lifespan_state.copy(),
        }
        keep_alive = parser.should_keep_alive() and not state.closing and self._upgrade is None
        request = _Request(self, scope, keep_alive, self._expect_continue, self._has_body)
        self.parsing = request
        self.body_since = state.now
        if self.current is None:
            self._start(request)
        else:
            self.queue.append(request)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self.body_since = self.state.now
        request = self.parsing
        if request is None or request.response_complete or request.disconnected:
            return  # the app answered without reading it all: what is left is read and dropped
        request.body.append(body)
        request.buffered += len(body)
        if request.buffered > _HIGH_WATER:
            self.pause_reading()
        request.wake()

    def on_message_complete(self) -> None:
        self._unparsed = 0
        request = self.parsing
        if request is None:
            return
        self.parsing = None
        request.more_body = False
        if request.waiter is not None:
            request.wake()

    # requests ------------------------------------------------------------------------------------------

    def _start(self, request: _Request) -> None:
        self.current = request
        shortcut = self.state.shortcut
        if shortcut is not None and not request.has_body and shortcut(request):
            return
        request.continue_with(self.app)

    def finish(self, request: _Request) -> None:
        """The response to ``request`` is complete: log it, then close or go on with the next request."""
        request.response_complete = True
        if request.waiter is not None:
            request.wake()
        if self.state.access_log:
            scope = request.scope
            query = scope["query_string"]
            self._log_access(scope["method"], scope["path"] + ("?" + query.decode("latin-1") if query else ""),
                             scope["http_version"], request.status)
        self.current = None
        if not request.keep_alive or self.transport.is_closing():
            self.transport.close()
            return
        if self._starting:
            return  # (a shortcut answered a queued request at once: the loop below goes on)
        self._starting = True
        try:
            # Iteratively: queued requests that shortcuts answer at once would otherwise recurse.
            while self.current is None and self.queue and not self.transport.is_closing():
                self._start(self.queue.popleft())
        finally:
            self._starting = False
        if self.current is None and not self.transport.is_closing():
            if self._refusal is not None:  # a bad request after the ones answered: its answer now
                self._refuse(*self._refusal)
                return
            self.idle_since = self.state.now
        if not self.queue and self.reading_paused:
            self.resume_reading()

    def _write_wire(self, wire: tuple[int, bytes, bytes], head_only: bool) -> None:
        """Writes an answer the app gave as bytes (header lines with the body's ``content-length``),
        before any scope or request object was made."""
        status, lines, body = wire
        state = self.state
        first = state.heads.get(status) or state.head_start(status)
        keep_alive = self.parser.should_keep_alive() and not state.closing
        # (HTTP/1.0's keep-alive, said back, from the request's header: no version string to make)
        tail = _tail(keep_alive, self._keep_alive_asked)
        self.transport.write(b"".join((first, lines, tail, b"" if head_only else body)))
        if state.access_log:
            self._log_access(_METHODS[self.parser.get_method()], self._url.decode("latin-1"),
                             self.parser.get_http_version(), status)
        if not keep_alive:
            self.transport.close()
        else:
            self.idle_since = state.now

    def _log_access(self, method: str, target: str, version: str, status: int) -> None:
        client = self.client
        access_logger.info('%s - "%s %s HTTP/%s" %d', f"{client[0]}:{client[1]}" if client else "-", method,
                           printable(target), version, status)

    def _refuse(self, status: int, message: str) -> None:
        """Answers a request the server cannot take (malformed, too large, too slow), then closes —
        after the responses to the requests before it, if any are still being answered. The close
        lingers: writing ends first and what the client still sends is read and dropped for a moment, so
        that closing with unread data (a reset) cannot destroy the answer on its way."""
        self.head_since = None
        self.lingering = True
        current = self.current
        if current is not None:
            if self.parsing is current:  # its own body was malformed: it cannot be answered properly
                self._log_refusal(status, message)
                current.disconnected = True
                current.wake()
                self.transport.close()
                return
            parsing = self.parsing
            if parsing is not None and parsing in self.queue:  # (a queued request cut short: not answered)
                self.queue.remove(parsing)
                self.parsing = None
            self._refusal = (status, message)  # answered by finish() after the complete requests before it
            return
        self._refusal = None
        body = error_body(status, message)
        self.transport.write(
            self.state.head_start(status)
            + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
        )
        self._log_refusal(status, message)
        self.idle_since = self.state.now
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.resume_reading()
        else:
            self.transport.close()

    def _log_refusal(self, status: int, message: str) -> None:
        logger.info("%s from %s: %s", status, self.client[0] if self.client else "-", message)

    # server-wide timer and shutdown ----------------------------------------------------------------------

    def check_deadlines(self, now: float) -> None:
        """Called by the server's timer: closes an idle keep-alive connection after the keep-alive
        timeout, one that takes longer than the header timeout to send a request's head (408), and one
        whose request body stops arriving for the body timeout."""
        state = self.state
        if self.lingering:
            if self.current is None and now - self.idle_since > _LINGER:  # (not while answering those before)
                self.transport.close()
        elif self.head_since is not None:
            if now - self.head_since > state.header_timeout:
                self._refuse(408, f"the request's head did not arrive within {state.header_timeout:g} s")
        elif self.parsing is not None and now - self.body_since > state.body_timeout:
            self._body_stalled(self.parsing)
        elif self.current is None and not self.queue and now - self.idle_since > state.keep_alive_timeout:
            self.transport.close()

    def _body_stalled(self, request: _Request) -> None:
        """A request's body stopped arriving: unless the server itself holds it back (reading paused, a
        ``100 Continue`` not sent yet), the connection is closed and the app told the client left — a
        stalled upload must not hold the app (or a backend's connection) for ever."""
        if self.reading_paused or request.expect_continue or request.disconnected:
            return
        logger.info("the request body from %s stopped arriving for %g s: closing the connection",
                    self.client[0] if self.client else "-", self.state.body_timeout)
        request.disconnected = True
        request.wake()
        self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the response in progress."""
        if self.current is None and self.head_since is None:
            self.transport.close()
        elif self.current is not None:
            self.current.keep_alive = False

    # WebSockets ------------------------------------------------------------------------------------------

    def _hand_over_websocket(self, rest: bytes) -> None:
        """Gives the connection to uvicorn's WebSocket protocol, replaying the handshake request to it."""
        protocol_factory: Callable[[], asyncio.Protocol] | None = self.state.websocket_protocol
        if protocol_factory is None:
            self._refuse(501, "WebSocket upgrades are not supported here (pip install 'premier[server]')")
            return
        self.state.connections.discard(self)
        method = self.parser.get_method()
        lines = [method, b" ", self._url, b" HTTP/1.1\r\n"]
        for name, value in self._headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        protocol = protocol_factory()
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(lines) + rest)
        self.transport.set_protocol(protocol)

