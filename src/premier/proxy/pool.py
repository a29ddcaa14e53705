"""The upstream pool: the backends of one server list, their keep-alive connections, their health and the
balancer that chooses between them.

Connections are opened inside the running event loop when first needed and kept (up to
``max_idle_connections`` per backend, for ``idle_timeout`` seconds) for the next request; the most
recently used one is reused first, so a quiet pool keeps few warm connections. :meth:`UpstreamPool.close`
(at the gateway's shutdown) closes them and stops the health checks.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Collection, Sequence
from urllib.parse import urlsplit

from premier.config.schema import ServerConfig, UpstreamConfig
from premier.proxy.balancer import make_balancer
from premier.proxy.health import BackendHealth, HealthChecker
from premier.proxy.http1 import UpstreamConnection, open_connection

__all__ = ["Backend", "UpstreamPool"]


class Backend:
    """One server: where it is, its weight, its requests in flight, its idle connections, its health."""

    __slots__ = ("base_path", "health", "host", "host_header", "idle", "in_flight", "port", "ssl_context", "url", "weight")

    def __init__(self, server: ServerConfig, config: UpstreamConfig) -> None:
        parts = urlsplit(server.url)
        self.url = server.url.rstrip("/")
        self.host = parts.hostname or ""
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.ssl_context = ssl.create_default_context() if https else None
        default_port = self.port == (443 if https else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if default_port else f"{host}:{self.port}").encode("idna")
        self.base_path = parts.path.rstrip("/").encode("latin-1")
        self.weight = server.weight
        self.in_flight = 0
        self.idle: list[UpstreamConnection] = []
        self.health = BackendHealth(config.passive_health, self.url)

    def drop_idle(self) -> None:
        """Closes the kept-alive connections (the backend closed them, or the pool is closing)."""
        while self.idle:
            self.idle.pop().close()

    def __repr__(self) -> str:
        return f"<Backend {self.url}>"


class UpstreamPool:
    """``servers`` behind one balancer. ``clock`` (monotonic seconds) times the passive health checks."""

    def __init__(
        self, servers: Sequence[ServerConfig], config: UpstreamConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.backends = tuple(Backend(server, config) for server in servers)
        self.balancer = make_balancer(config.load_balancing, self.backends)
        self.checker = HealthChecker(self.backends, config.health_check, self.probe) if config.health_check else None
        self.closed = False

    def pick(self, exclude: Collection[Backend] = ()) -> Backend | None:
        """The next backend for a request (``None``: no healthy one that is not in ``exclude``)."""
        now = self.clock()
        backend = self.balancer.pick(now, exclude)
        if backend is not None:
            backend.health.admit(now)
        return backend

    def retry_after(self) -> float:
        """Seconds until some unhealthy backend is probed again (for a 503's ``Retry-After``)."""
        now = self.clock()
        waits = [
            b.health.breaker.opened_at + b.health.breaker.recovery_timeout - now
            for b in self.backends if b.health.breaker.state(now) == "open"
        ]
        return max(1.0, min(waits)) if waits else 1.0

    def idle_connection(self, backend: Backend) -> UpstreamConnection | None:
        """A connection to ``backend`` kept alive from an earlier request and not timed out, if any."""
        idle = backend.idle
        if idle:
            # (the connection's own loop: asyncio.get_running_loop() costs a getpid() call on Python 3.11)
            oldest = idle[-1].loop.time() - self.config.idle_timeout
            while idle:
                connection = idle.pop()
                if connection.idle_since > oldest and connection.open:
                    return connection
                connection.close()
        return None

    async def connect(self, backend: Backend) -> tuple[UpstreamConnection, bool]:
        """A connection to ``backend`` and whether it was reused (kept alive from an earlier request)."""
        connection = self.idle_connection(backend)
        if connection is not None:
            return connection, True
        connection = await open_connection(
            backend.host, backend.port, ssl_context=backend.ssl_context, timeout=self.config.connect_timeout
        )
        return connection, False

    def release(self, backend: Backend, connection: UpstreamConnection) -> None:
        """Keeps a connection whose exchange ended cleanly for the next request; closes any other."""
        if connection.reusable and not self.closed and len(backend.idle) < self.config.max_idle_connections:
            connection.idle_since = connection.loop.time()
            backend.idle.append(connection)
        else:
            connection.close()

    def start(self) -> None:
        """Starts the active health checks, if configured (inside the running loop)."""
        self.closed = False
        if self.checker is not None:
            self.checker.start()

    async def close(self) -> None:
        self.closed = True
        if self.checker is not None:
            await self.checker.stop()
        for backend in self.backends:
            backend.drop_idle()

    async def probe(self, backend: Backend, path: str, timeout: float) -> int:
        """One active health check: ``GET path`` on a new connection; the answer's status."""
        connection = await open_connection(backend.host, backend.port, ssl_context=backend.ssl_context, timeout=timeout)
        try:
            connection.start_response(head_only=False)
            connection.write(
                b"GET " + backend.base_path + path.encode("latin-1") + b" HTTP/1.1\r\nhost: " + backend.host_header
                + b"\r\nuser-agent: premier-health-check\r\nconnection: close\r\n\r\n"
            )
            await connection.read_head(timeout)
            return connection.status
        finally:
            connection.close()
