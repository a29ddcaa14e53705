"""One keep-alive HTTP/1.1 connection to a backend: an asyncio protocol around ``httptools``' parser.

Lean on purpose: the proxy writes the request head it built itself, and reads the response as a status,
a header list and body chunks, without a per-request client object. The response body is buffered only
up to a high-water mark; past it the socket stops being read until the proxy has passed the chunks on,
so a slow client never makes the gateway hold more than about ``HIGH_WATER`` bytes per connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from typing import Any

import httptools

from premier.errors import BackendError

__all__ = ["HIGH_WATER", "UpstreamClosed", "UpstreamConnection", "UpstreamTimeout", "open_connection"]

HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamClosed(BackendError):
    """The backend closed or reset the connection, or answered something that is not HTTP/1.1."""


class UpstreamTimeout(BackendError, TimeoutError):
    """The backend did not send the next part of its response within the read timeout."""


class UpstreamConnection(asyncio.Protocol):
    """A connection that carries one exchange at a time. :meth:`start_response` must be called before
    each request is written; the response then arrives through :meth:`read_head` and :meth:`read_body`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.used = 0  # exchanges started on this connection
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        # the response being read
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.received = False  # any byte of the response arrived
        self.request_sent = False  # the whole request, body included, was written
        self.error: BaseException | None = None
        self.keep_alive = False
        self.until_close = False  # a body that ends when the backend closes (no length, not chunked)
        self._head_only = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        # Who drives the exchange: ``None``, a coroutine awaiting read_head/read_body; or an object whose
        # ``on_data()`` is called after every arrival (the direct path, proxy/direct.py).
        self.listener: Any = None

    # the exchange ------------------------------------------------------------------------------------

    def start_response(self, head_only: bool) -> None:
        """Prepare to read the response to a request about to be written (``head_only``: to HEAD)."""
        if self._head_only:
            self.parser = httptools.HttpResponseParser(self)  # after a HEAD, the old one still expects a body
        self.used += 1
        self._head_only = head_only
        self.status = 0
        self.headers = []
        self.head_done = self.complete = self.received = self.until_close = self.request_sent = False
        self.error = None
        self._chunks.clear()
        self._buffered = 0

    def write(self, data: bytes) -> None:
        """Writes to the backend; :class:`UpstreamClosed` if the connection turns out closed (uvloop can
        have closed a reset connection before ``is_closing()`` or ``connection_lost`` says so)."""
        assert self.transport is not None
        try:
            self.transport.write(data)
        except RuntimeError:
            self.closed = True
            # (its cause, once connection_lost has told it; uvloop may close a reset one before that)
            raise self.error or UpstreamClosed("the backend closed or reset the connection") from None

    async def drain(self, timeout: float) -> None:
        """Wait while the backend reads the request body slower than the client sends it (at most
        ``timeout`` seconds without progress: then :class:`UpstreamTimeout`)."""
        drain = self._drain
        if drain is not None:
            timer = self.loop.call_later(timeout, _expire, drain)
            try:
                await drain
            finally:
                timer.cancel()
        if self.error is not None and not self.received:
            raise self.error

    async def read_head(self, timeout: float) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    async def read_body(self, timeout: float) -> bytes | None:
        """The next body chunk (all that arrived so far, joined), or ``None`` at the end."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait(timeout)
        return self.take_body()

    def take_body(self) -> bytes:
        """The body bytes that arrived so far (joined), without waiting."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])
        self._buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    @property
    def pending(self) -> bool:
        """Body bytes arrived that :meth:`read_body` has not handed out yet."""
        return bool(self._chunks)

    @property
    def open(self) -> bool:
        """Not closed, nor closing (the backend's close may be under way before ``connection_lost``)."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        return (
            self.complete and self.request_sent and self.keep_alive and not self.closed and not self.until_close
        )

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _wait(self, timeout: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101 answer: what follows is the upgraded protocol's (the WebSocket relay's concern)
        except httptools.HttpParserError as exc:
            self.error = UpstreamClosed(f"invalid HTTP response from the backend ({exc})")
            self.abort()
        drain = self._drain
        if self.head_done and drain is not None and not drain.done():
            drain.set_result(None)  # answered while the body was still going up: stop waiting to send it
        if self.listener is not None:
            self.listener.on_data()
        else:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and not self.complete:
            self._read_what_is_left()
        if self.until_close and self.head_done and exc is None:
            self.complete = True  # the close is the end of this body
        elif not self.complete and self.error is None:
            reason = f" ({exc})" if exc else ""
            self.error = UpstreamClosed(f"the backend closed the connection{reason}")
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.listener is not None:
            self.listener.on_data()
        else:
            self._wake()

    def _read_what_is_left(self) -> None:
        """A backend that answers early (a 413 to an upload) and closes without reading the rest of the
        body resets the connection. The transport may report the reset, met while writing, before it has
        read the answer that came ahead of it; the kernel still holds that answer until the socket is
        closed, which happens after this call: it is read here, up to the high-water mark."""
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return  # (TLS records cannot be fed to the parser)
        sock = transport.get_extra_info("socket")
        try:
            fd = sock.fileno() if sock is not None else -1
            if fd < 0:
                return
            with socket.socket(fileno=os.dup(fd)) as left:
                while self._buffered < HIGH_WATER and not self.complete and self.error is None:
                    data = left.recv(HIGH_WATER - self._buffered, socket.MSG_DONTWAIT)
                    if not data:
                        break
                    self.received = True
                    self.parser.feed_data(data)
        except (OSError, httptools.HttpParserError, httptools.HttpParserUpgrade):
            pass  # nothing left to read, or nothing usable: the reset stands

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # httptools callbacks -----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer (103 Early Hints...): the real one follows
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()  # (llhttp forgets it once the message is complete)
        if self._head_only or status in (101, 204, 304):
            self.complete = True
        elif not self.keep_alive:  # (a body that only the close can end is never kept alive)
            names = {name for name, _ in self.headers}
            self.until_close = b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("the backend did not answer in time"))


async def open_connection(
    host: str, port: int, *, ssl_context: ssl.SSLContext | None, timeout: float
) -> UpstreamConnection:
    """A new connection; ``OSError`` (refused, unreachable) or ``asyncio.TimeoutError`` (the built-in
    ``TimeoutError`` from Python 3.11) when it cannot be opened."""
    loop = asyncio.get_running_loop()
    connecting = loop.create_connection(
        lambda: UpstreamConnection(loop), host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    _, protocol = await asyncio.wait_for(connecting, timeout)  # a task per new connection only
    return protocol
