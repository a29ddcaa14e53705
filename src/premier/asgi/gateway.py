"""``ASGIGateway``: Premier's policies in front of an ASGI app (plugin mode), as a pure ASGI app."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import ASGIApp, Exchange, Message, Receive, Scope, Send, error_body, send_error
from premier.asgi.http_cache import CacheIndex
from premier.asgi.policy import Route, compile_route
from premier.asgi.router import Router
from premier.asgi.shortcut import shortcut_for_app
from premier.config.loader import build
from premier.config.schema import FeaturesConfig, GatewayConfig, PathConfig, ServerConfig
from premier.errors import ConfigError, ConfigIssue
from premier.observability.events import Events

if TYPE_CHECKING:
    from premier.dashboard import DashboardApp
    from premier.observability.stats import StatsCollector
    from premier.proxy import UpstreamPool
    from premier.proxy.direct import DirectRequest

__all__ = ["ASGIGateway", "PremierMiddleware"]

_UNMATCHED = "(unmatched)"


class _Compiled:
    """Everything derived from one configuration; replaced whole, in one assignment, on reload."""

    __slots__ = (
        "config", "dashboard", "fallback", "fallback_shortcut", "passthrough", "pools", "router", "routes", "websockets",
        "wired",
    )

    def __init__(
        self, config: GatewayConfig, router: Router[Route], routes: dict[str, Route], passthrough: Route,
        fallback: ASGIApp, pools: dict[Any, UpstreamPool], websockets: dict[str, ASGIApp],
        dashboard: DashboardApp | None,
    ) -> None:
        self.config = config
        self.router = router
        self.routes = routes
        self.passthrough = passthrough
        self.fallback = fallback  # serves requests that match no policy
        self.pools = pools  # standalone mode: (servers, upstream settings) -> UpstreamPool
        self.websockets = websockets  # route pattern -> its WebSocket policy
        self.dashboard = dashboard  # served ahead of every policy, when configured
        self.fallback_shortcut = shortcut_for_app(fallback)
        self.wired = any(route.wire is not None for route in routes.values())  # some route answers hits as bytes


async def _no_route(scope: Scope, receive: Receive, send: Send) -> None:
    """Standalone mode without top-level ``servers``: a path no ``paths`` entry serves."""
    await send_error(send, 404, error_body(404, f"no route for {scope['path']}"))


async def _no_route_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    from premier.proxy.websocket import refuse

    if (await receive())["type"] == "websocket.connect":
        await refuse(scope, send, 404, f"no route for {scope['path']}")


class ASGIGateway:
    """Wraps ``app`` with the policies of ``config``.

    ``cache_provider`` stores cache entries and rate-limit counters (default: the config's ``storage``
    — Redis, shared between processes — or else this process's memory; an explicit
    ``premier.providers.redis.AsyncRedisCache(client)`` takes precedence over ``storage``). Lifespan and
    WebSocket scopes pass straight through to ``app``.

    Without ``app`` the gateway is a reverse proxy (standalone mode) to ``servers`` (or the config's
    ``servers``; a path's own ``servers`` replace them for that path), load-balanced and health-checked
    as the config's ``upstream`` section says; it then answers the lifespan itself, starting the health
    checks at startup and closing the backends' connections at shutdown.

    ``clock`` (monotonic seconds) times circuit breakers; ``wall_clock`` (seconds since the epoch) dates HTTP cache entries (``Age``, freshness).
    Tests pass fake ones (the same fake as the provider's clock, so stored entries expire together).
    """

    def __init__(
        self,
        config: GatewayConfig | None = None,
        app: ASGIApp | None = None,
        *,
        servers: list[str | Mapping[str, Any]] | None = None,
        cache_provider: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config_file: str | os.PathLike[str] | None = None,
    ) -> None:
        from premier.providers import AsyncInMemoryCache

        config = config if config is not None else GatewayConfig()
        if not isinstance(config, GatewayConfig):
            raise TypeError(
                f"config must be a GatewayConfig (GatewayConfig.from_file(path) reads a file), got {type(config).__name__}"
            )
        if servers is not None:
            config = dataclasses.replace(config, servers=_servers(servers))
        if app is None and not config.servers and not (config.paths and all(path.servers for path in config.paths)):
            raise ConfigError(ConfigIssue(
                "premier.servers", "standalone mode (no app= given) needs backend servers: pass servers=[...] or "
                "set servers in the configuration (top-level, or on every path)"
            ))
        self.app = app
        # A provider the gateway makes itself is the gateway's to close, at lifespan shutdown; one
        # passed in belongs to the caller.
        self._owns_provider = cache_provider is None
        if cache_provider is None and config.storage is not None:
            from premier.providers.redis import AsyncRedisCache

            storage = config.storage
            cache_provider = AsyncRedisCache.from_url(
                storage.url, on_backend_error=storage.on_backend_error, timeout=storage.timeout
            )
        self.provider = cache_provider if cache_provider is not None else AsyncInMemoryCache()
        self.events = Events()
        self.clock = clock
        self.wall_clock = wall_clock
        self._cache_index = CacheIndex()  # path -> cache keys, shared by all configurations
        self._running = False  # between lifespan startup and shutdown (standalone mode)
        self._closing: set[asyncio.Task[None]] = set()
        self.config_file = config_file
        self._dashboard: DashboardApp | None = None  # made with the first configuration that has one
        self._compiled = self._compile(config, None)

    @property
    def config(self) -> GatewayConfig:
        return self._compiled.config

    @property
    def routes(self) -> dict[str, Route]:
        return self._compiled.routes

    @property
    def pools(self) -> list[UpstreamPool]:
        """Standalone mode: the upstream pools of the running configuration."""
        return list(self._compiled.pools.values())

    @property
    def stats(self) -> StatsCollector | None:
        """The statistics the dashboard shows (``None`` until a configuration enables the dashboard)."""
        return self._dashboard.stats if self._dashboard is not None else None

    def reload(self, config: GatewayConfig) -> None:
        """Switch to ``config``: compiled completely first, then swapped in with one assignment.
        Requests already running finish on the policy they started with. Upstream pools whose servers
        and settings did not change are kept, with their connections and health."""
        previous = self._compiled
        self._compiled = compiled = self._compile(config, previous)
        if self._running:
            for pool in compiled.pools.values():
                pool.start()
            dropped = [pool for key, pool in previous.pools.items() if compiled.pools.get(key) is not pool]
            if dropped:
                task = asyncio.get_running_loop().create_task(_close_pools(dropped))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _compile(self, config: GatewayConfig, previous: _Compiled | None) -> _Compiled:
        identity = ClientIdentity(config.trusted_proxies)
        old_routes = previous.routes if previous else {}
        old_pools = previous.pools if previous else {}
        pools: dict[Any, UpstreamPool] = {}
        websockets: dict[str, ASGIApp] = {}

        def pool_for(path: PathConfig | None) -> UpstreamPool | None:
            from premier.proxy import UpstreamPool

            servers = path.servers if path is not None and path.servers else config.servers
            if not servers:
                return None
            key = (servers, config.upstream)
            pool = pools.get(key) or old_pools.get(key) or UpstreamPool(servers, config.upstream, clock=self.clock)
            pools[key] = pool
            return pool

        def downstream(path: PathConfig | None) -> ASGIApp:
            if self.app is not None:
                return self.app
            from premier.proxy import ReverseProxy

            pool = pool_for(path)
            if pool is None:
                return _no_route
            return ReverseProxy(
                pool, identity=identity, preserve_host=config.upstream.preserve_host,
                strip_prefix=path.strip_prefix if path is not None else None,
            )

        def websocket(pattern: str, features: FeaturesConfig, path: PathConfig | None) -> ASGIApp:
            from premier.asgi.websocket import WebSocketPolicy
            from premier.features.ratelimit import RateLimiter
            from premier.proxy.websocket import WebSocketRelay

            app: ASGIApp
            if self.app is not None:
                app = self.app
            elif (pool := pool_for(path)) is None:
                app = _no_route_websocket
            else:
                app = WebSocketRelay(
                    pool, identity=identity, strip_prefix=path.strip_prefix if path is not None else None,
                    max_message_bytes=features.websocket.max_message_bytes if features.websocket else 1024 * 1024,
                )
            limit = features.rate_limit
            # the route's own counters: a handshake is one of the route's requests
            limiter = RateLimiter(limit, provider=self.provider, keyspace=config.keyspace, name=pattern) if limit else None
            key_of = identity.key_function(limit.key if limit else "client")
            return WebSocketPolicy(app, pattern, features, limiter=limiter, key_of=key_of, events=self.events,
                                   clock=self.clock)

        def compile_path(pattern: str, features: FeaturesConfig, path: PathConfig | None) -> Route:
            return compile_route(
                pattern, features, app=downstream(path), keyspace=config.keyspace, provider=self.provider,
                identity=identity, events=self.events, clock=self.clock, wall_clock=self.wall_clock,
                cache_index=self._cache_index, previous=old_routes.get(pattern),
            )

        routes: dict[str, Route] = {}
        ordered: list[tuple[str, Route]] = []
        for path in config.paths:
            if path.pattern not in routes:  # (a repeated pattern is a config error; a Python-made config may have one)
                features = config.features_for(path)
                routes[path.pattern] = compile_path(path.pattern, features, path)
                websockets[path.pattern] = websocket(path.pattern, features, path)
            ordered.append((path.pattern, routes[path.pattern]))
        defaults = config.features_for(None)
        default_route = compile_path(_UNMATCHED, defaults, None) if defaults.enabled() else None
        passthrough = default_route or compile_path(_UNMATCHED, FeaturesConfig(), None)
        if default_route is not None:
            routes[_UNMATCHED] = default_route
        websockets[_UNMATCHED] = websocket(_UNMATCHED, defaults, None)
        fallback = downstream(None)
        if config.dashboard is not None and self._dashboard is None:
            from premier.dashboard import DashboardApp

            self._dashboard = DashboardApp(self, config.dashboard, source=self.config_file)
        dashboard = self._dashboard if config.dashboard is not None else None
        if dashboard is not None and config.dashboard is not None:
            dashboard.stats.slow_threshold = config.dashboard.slow_threshold
        return _Compiled(config, Router(ordered, default_route), routes, passthrough, fallback, pools, websockets, dashboard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            elif self.app is None:
                await self._standalone_other(scope, receive, send)
            else:
                await self.app(scope, receive, self._closing_on_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        compiled = self._compiled
        raw_path = scope["path"]
        if compiled.dashboard is not None and compiled.dashboard.serves(raw_path):
            await compiled.dashboard(scope, receive, send)
            return
        route, path, params = compiled.router.match(raw_path, scope.get("root_path", ""))
        if path is not raw_path and path != raw_path:
            # (The memo hands back the first request's string: an equal path is not a normalised one.)
            scope = self._normalised(scope, path)
        if route is None:
            if not self.events.active:
                await compiled.fallback(scope, receive, send)
                return
            route = compiled.passthrough
        await route.entry(Exchange(scope, receive, send, path, route.pattern, params))


    def _shortcut_match(self, compiled: _Compiled, raw_path: str) -> tuple[Route | None, str, dict[str, str]] | None:
        """The route a shortcut may answer for (``router.match``'s), or ``None`` where none may: while
        the events are counted, and for the dashboard's paths."""
        if self.events.active or (compiled.dashboard is not None and compiled.dashboard.serves(raw_path)):
            return None
        return compiled.router.match(raw_path)

    def shortcut(self, request: DirectRequest) -> bool:
        """For a server that offers it (Premier's own): answers ``request`` — one without a body — without
        running the gateway as ASGI, where its route allows (a cache hit from memory, the proxy's direct
        path: see ``premier.asgi.shortcut``). ``False`` leaves it to the ASGI app, untouched."""
        compiled = self._compiled
        scope = request.scope
        raw_path = scope["path"]
        match = self._shortcut_match(compiled, raw_path)
        if match is None:
            return False
        route, path, params = match
        shortcut = compiled.fallback_shortcut if route is None else route.shortcut
        if shortcut is None:
            return False
        if path is raw_path or path == raw_path:
            return shortcut(request, path, params)
        request.scope = self._normalised(scope, path)  # (what the shortcut answers for, as the chain would)
        if shortcut(request, path, params):
            return True
        request.scope = scope  # untouched for the chain, which decides on the path it was sent
        return False

    def wire_answer(
        self, method: str, raw_path: str, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes] | None:
        """For a server that asks before it makes a scope (Premier's): the usual fresh cache hit from
        memory as ``(status, header lines with its content-length, body)``; ``None`` for anything else."""
        compiled = self._compiled
        if not compiled.wired:
            return None  # (no route answers so: no second route lookup before ``shortcut``'s)
        match = self._shortcut_match(compiled, raw_path)
        if match is None:
            return None
        route, path, params = match
        wire = route.wire if route is not None else None
        return None if wire is None else wire(method, headers, query, path, params)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        compiled = self._compiled
        raw_path = scope["path"]
        route, path, _ = compiled.router.match(raw_path, scope.get("root_path", ""))
        if path != raw_path:
            scope = self._normalised(scope, path)
        await compiled.websockets[route.pattern if route is not None else _UNMATCHED](scope, receive, send)

    def _normalised(self, scope: Scope, path: str) -> Scope:
        """The scope with the path the policy was chosen for: the app sees it, so they can never
        disagree. The proxy keeps the raw path, to send it byte for byte where that is safe."""
        if self.app is None:
            return {**scope, "path": path}
        return {**scope, "path": path, "raw_path": quote(path).encode("ascii")}

    async def _standalone_other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Standalone mode's lifespan (start health checks; close connections and storage at the end)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._running = True
                    for pool in self._compiled.pools.values():
                        pool.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self._running = False
                    await _close_pools(self._compiled.pools.values())
                    if self._owns_provider:
                        await self.provider.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _closing_on_shutdown(self, send: Send) -> Send:
        """The lifespan's send: once the app has shut down, close the provider the gateway made."""

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._owns_provider:
                await self.provider.close()
            await send(message)

        return lifespan_send


async def _close_pools(pools: Any) -> None:
    for pool in pools:
        await pool.close()


def _servers(servers: list[str | Mapping[str, Any]]) -> tuple[ServerConfig, ...]:
    """``servers=[...]`` (URLs, or ``{"url": ..., "weight": ...}``) validated as the YAML's are, every
    problem reported."""
    found: list[ServerConfig] = []
    issues: list[ConfigIssue] = []
    for i, server in enumerate(servers):
        try:
            values = server if isinstance(server, Mapping) else {"url": server}
            found.append(build(ServerConfig, values, path=f"servers[{i}]"))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return tuple(found)


class PremierMiddleware(ASGIGateway):
    """The gateway as Starlette/FastAPI middleware: ``app.add_middleware(PremierMiddleware, config=...)``."""

    def __init__(self, app: ASGIApp, config: GatewayConfig | None = None, *, cache_provider: Any = None) -> None:
        super().__init__(config, app=app, cache_provider=cache_provider)
