"""Running Premier's own HTTP/1.1 server: the listening sockets, the app's lifespan, one timer for every
connection's deadlines, signals, graceful shutdown and worker processes.

    Server(app).run(host="127.0.0.1", port=8000, workers=1)

``SIGTERM``/``SIGINT`` stop it: it stops accepting, closes idle connections, lets requests in flight
finish (at most ``graceful_timeout`` seconds), then runs the lifespan's shutdown. With ``workers`` above
1, the parent binds the socket and forks the workers, each serving on it with an app of its own
(``app_factory`` is called in the worker); the parent passes ``SIGTERM``, ``SIGINT`` and ``SIGHUP`` on
to them and starts a worker again when one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from premier.asgi.exchange import ASGIApp, Message
from premier.server.protocol import _STATUS_LINES, HttpProtocol

__all__ = ["Server", "ServerState", "new_event_loop"]

logger = logging.getLogger("premier.server")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where installed (``premier[server]``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServerState:
    """What every connection of a server shares."""

    def __init__(
        self, app: ASGIApp, *, access_log: bool, keep_alive_timeout: float, header_timeout: float,
        body_timeout: float = 60.0,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.keep_alive_timeout = keep_alive_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespan_state: dict[str, Any] = {}
        self.closing = False
        self.now = time.monotonic()  # the loop's clock, read once a second by the timer (deadlines are that coarse)
        self.default_headers = b""
        self.websocket_protocol: Callable[[], asyncio.Protocol] | None = None
        self.websocket_connections: Callable[[], list[Any]] = list  # those handed to the WebSocket protocol
        # The app's ``shortcut(request) -> bool``, if it has one: answers it can give without running as
        # ASGI (Premier's gateway: cache hits from memory, forwarding on kept-alive backend connections).
        self.shortcut: Callable[[Any], bool] | None = getattr(app, "shortcut", None)
        # ``wire_answer(method, path, raw query, headers)``: asked first, before a scope is made, for a
        # plain GET or HEAD — the whole answer as bytes, ``(status, header lines, body)``.
        self.wire_answer: Callable[..., tuple[int, bytes, bytes] | None] | None = getattr(app, "wire_answer", None)
        self.refresh_date()

    def refresh_date(self) -> None:
        self.default_headers = b"date: " + formatdate(usegmt=True).encode() + b"\r\nserver: premier\r\n"
        self.heads: dict[int, bytes] = {}  # status -> its status line and the headers above, this second

    def head_start(self, status: int) -> bytes:
        """The status line and the headers every response carries (``RuntimeError`` for a bad status)."""
        line = _STATUS_LINES.get(status) if isinstance(status, int) else None
        if line is None:
            raise RuntimeError(f"invalid HTTP status {status!r}")
        start = self.heads[status] = line + self.default_headers
        return start


class Server:
    """Serves ``app`` (or, per worker, ``app_factory()``) over HTTP/1.1.

    ``lifespan``: ``"on"`` (a failing startup stops the server), ``"auto"`` (an app that does not speak
    the lifespan protocol is served without it), ``"off"``. ``keep_alive_timeout``: seconds an idle
    connection stays open; ``header_timeout``: seconds a client may take to send a request's head;
    ``body_timeout``: seconds a request's body may stop arriving (while the server reads it) before the
    connection is closed and the app told the client left;
    ``graceful_timeout``: seconds requests in flight may take to finish at shutdown. WebSocket upgrades
    go to uvicorn's ``websockets-sansio`` protocol (``ws_max_size`` bytes per message)."""

    def __init__(
        self, app: ASGIApp | None = None, *, app_factory: Callable[[], ASGIApp] | None = None, lifespan: str = "on",
        access_log: bool = True, keep_alive_timeout: float = 5.0, header_timeout: float = 10.0,
        body_timeout: float = 60.0, graceful_timeout: float = 5.0, ws_max_size: int = 16 * 1024 * 1024, backlog: int = 2048,
    ) -> None:
        if (app is None) == (app_factory is None):
            raise TypeError("Server needs app= or app_factory=, not both")
        self.app = app
        self.app_factory = app_factory
        self.lifespan = lifespan
        self.access_log = access_log
        self.keep_alive_timeout = keep_alive_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.graceful_timeout = graceful_timeout
        self.ws_max_size = ws_max_size
        self.backlog = backlog
        self.started = False  # listening (for tests that run it in a thread)
        self.should_exit = False
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: set[asyncio.Task[None]] = set()

    # one process ---------------------------------------------------------------------------------------

    async def serve(
        self, sockets: list[socket.socket], *, handle_signals: bool = True,
        signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
    ) -> int:
        """Serves on ``sockets`` until told to stop; 0, or 3 when the lifespan's startup failed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = asyncio.Event()
        app = self.app if self.app is not None else self.app_factory()  # type: ignore[misc]
        state = ServerState(app, access_log=self.access_log, keep_alive_timeout=self.keep_alive_timeout,
                            header_timeout=self.header_timeout, body_timeout=self.body_timeout)
        state.now = loop.time()
        state.websocket_protocol = _websocket_protocol(app, state, self.ws_max_size)
        lifespan = _Lifespan(app, state.lifespan_state, self.lifespan)
        if not await lifespan.startup():
            return 3
        servers = [
            await loop.create_server(lambda: HttpProtocol(state, loop), sock=sock, backlog=self.backlog)
            for sock in sockets
        ]
        if handle_signals:
            self._install_signal_handlers(loop, signals)
        timer = loop.create_task(self._tick(state))
        self._requests = state.tasks
        self.started = True
        logger.info("process %d accepting connections", os.getpid())
        try:
            if not self.should_exit:  # (stop() sets it first, then the event: from any thread)
                await self._exit.wait()
        finally:
            for server in servers:
                server.close()
            await self._drain(state)
            timer.cancel()
            await lifespan.shutdown()
            if handle_signals:
                for sig in signals:
                    loop.remove_signal_handler(sig)
        return 0

    def stop(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.should_exit = True
        if self._loop is not None and self._exit is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._exit.set)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop, signals: tuple[int, ...]) -> None:
        def on_signal(sig: int) -> None:
            if self.should_exit:  # a second signal: stop waiting for requests in flight
                for task in list(self._requests):
                    task.cancel()
            self.should_exit = True
            assert self._exit is not None
            self._exit.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)

    async def _tick(self, state: ServerState) -> None:
        """Once a second: the ``date`` header, and every connection's keep-alive and header deadlines."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            state.refresh_date()
            now = state.now = loop.time()
            for connection in list(state.connections):
                try:
                    connection.check_deadlines(now)
                except Exception:  # (one connection's failure must not end every other's deadlines)
                    logger.exception("the server failed checking a connection's deadlines")
                    connection.transport.abort()

    async def _drain(self, state: ServerState) -> None:
        """Graceful shutdown: no new requests; those in flight get ``graceful_timeout`` seconds."""
        state.closing = True
        for connection in list(state.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.graceful_timeout
        # (requests on the direct path have no task: a connection answering one has a current request)
        while (state.tasks or any(c.current is not None for c in state.connections)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if state.tasks:
            logger.warning("shutdown: cancelling %d request(s) still running after %g s", len(state.tasks),
                           self.graceful_timeout)
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
        for connection in list(state.connections):
            connection.transport.close()
        websockets = state.websocket_connections()
        for connection in websockets:
            connection.shutdown()
        while state.websocket_connections() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # the process or processes ---------------------------------------------------------------------------

    def run(self, host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1) -> int:
        """Binds ``host:port`` and serves until a signal stops it; the exit status."""
        sock = bind(host, port, self.backlog)
        logger.info("Premier serving on http://%s:%d%s", f"[{host}]" if ":" in host else host,
                    sock.getsockname()[1], f" with {workers} workers" if workers > 1 else "")
        try:
            if workers <= 1:
                return run_loop(self.serve([sock]))
            return _Supervisor(self, sock, workers).run()
        finally:
            sock.close()


def bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def run_loop(main: Any) -> int:
    """Runs the coroutine ``main`` on a new (uvloop) event loop; its result."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return int(loop.run_until_complete(main))
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


class _Supervisor:
    """The parent of ``workers`` forked worker processes serving one socket.

    ``SIGTERM``/``SIGINT`` reach each worker as one ``SIGTERM`` (a terminal's Ctrl-C, which signals the
    whole group, is left to the parent: the workers ignore ``SIGINT``, so they drain once, gracefully);
    ``SIGHUP`` is passed on. A worker that dies is started again, after a pause that doubles while
    workers keep dying young (at most 10 s); one whose startup failed (exit 3) stops them all."""

    def __init__(self, server: Server, sock: socket.socket, workers: int) -> None:
        self.server = server
        self.sock = sock
        self.workers = workers
        self.children: dict[int, float] = {}  # pid -> when it started
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda number, _frame: received.append(number))
        for _ in range(self.workers):
            self._spawn()
        pause = 0.5
        while self.children:
            while received:
                number = received.pop(0)
                if number == signal.SIGHUP:
                    logger.info("SIGHUP: passed on to %d workers", len(self.children))
                else:
                    self.stopping = True
                self._signal(signal.SIGHUP if number == signal.SIGHUP else signal.SIGTERM)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            started = self.children.pop(pid, time.monotonic())
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == 3:  # the lifespan's startup failed: it would fail again
                logger.error("worker %d failed to start; stopping", pid)
                self.stopping, self.status = True, 3
                self._signal(signal.SIGTERM)
                continue
            pause = min(pause * 2, 10.0) if time.monotonic() - started < 10 else 0.5
            logger.warning("worker %d exited (%s); starting another in %g s", pid, code, pause)
            time.sleep(pause)
            self._spawn()
        return self.status

    def _signal(self, number: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def _spawn(self) -> None:
        pid = os.fork()
        if pid:
            self.children[pid] = time.monotonic()
            return
        code = 1
        try:  # the worker
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's config watcher takes it
            code = run_loop(self.server.serve([self.sock], signals=(signal.SIGTERM,)))
        except BaseException:
            logger.exception("worker %d crashed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


class _Lifespan:
    """The app's side of the ASGI lifespan protocol, driven at startup and shutdown."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], mode: str) -> None:
        self.app = app
        self.state = state
        self.mode = mode
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.answers: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.supported = True

    async def startup(self) -> bool:
        if self.mode == "off":
            self.supported = False
            return True
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.answers.get()
        if answer["type"] == "lifespan.startup.complete":
            return True
        if answer["type"] != "lifespan.startup.failed" and self.mode == "auto":
            self.supported = False  # (an app that does not speak the lifespan protocol)
            return True
        logger.error("application startup failed: %s", answer.get("message", ""))
        return False

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        answer = await self.answers.get()
        if answer["type"] == "lifespan.shutdown.failed":
            logger.error("application shutdown failed: %s", answer.get("message", ""))

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            if self.mode == "on":
                logger.error("exception in the lifespan of the ASGI application", exc_info=exc)
            await self.answers.put({"type": "app.failed", "message": str(exc)})
            if not isinstance(exc, Exception):
                raise
        else:
            await self.answers.put({"type": "app.failed", "message": "the lifespan ended without an answer"})

    async def _send(self, message: Message) -> None:
        await self.answers.put(message)


def _websocket_protocol(app: ASGIApp, state: ServerState, max_size: int) -> Callable[[], asyncio.Protocol] | None:
    """A factory of uvicorn's ``websockets-sansio`` protocol serving ``app`` (``None`` without uvicorn or
    websockets); its connections are tracked for shutdown through ``state.websocket_connections``."""
    try:
        import uvicorn
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
        from uvicorn.server import ServerState as UvicornState
    except ImportError:
        return None
    config = uvicorn.Config(app, ws="websockets-sansio", ws_max_size=max_size, lifespan="off", log_config=None,
                            proxy_headers=False, access_log=False)
    config.load()
    uvicorn_state = UvicornState()
    uvicorn_state.default_headers = [(b"server", b"premier")]
    state.websocket_connections = lambda: list(uvicorn_state.connections)
    return lambda: WebSocketsSansIOProtocol(config=config, server_state=uvicorn_state, app_state=state.lifespan_state)
