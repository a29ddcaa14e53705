"""``ASGIGateway``: Premier's policies in front of an ASGI app (plugin mode), as a pure ASGI app."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import ASGIApp, Exchange, Message, Receive, Scope, Send
from premier.asgi.policy import Route, compile_route
from premier.asgi.router import Router
from premier.config.schema import FeaturesConfig, GatewayConfig
from premier.observability.events import Events

__all__ = ["ASGIGateway", "PremierMiddleware"]

_UNMATCHED = "(unmatched)"


class _Compiled:
    """Everything derived from one configuration; replaced whole, in one assignment, on reload."""

    __slots__ = ("config", "passthrough", "router", "routes")

    def __init__(self, config: GatewayConfig, router: Router[Route], routes: dict[str, Route], passthrough: Route) -> None:
        self.config = config
        self.router = router
        self.routes = routes
        self.passthrough = passthrough


class ASGIGateway:
    """Wraps ``app`` with the policies of ``config``.

    ``cache_provider`` stores cache entries and rate-limit counters (default: the config's ``storage``
    — Redis, shared between processes — or else this process's memory; an explicit
    ``premier.providers.redis.AsyncRedisCache(client)`` takes precedence over ``storage``). Lifespan and
    WebSocket scopes pass straight through to ``app``. ``clock`` (monotonic seconds) times circuit
    breakers; ``wall_clock`` (seconds since the epoch) dates HTTP cache entries (``Age``, freshness).
    Tests pass fake ones (the same fake as the provider's clock, so stored entries expire together).
    """

    def __init__(
        self,
        config: GatewayConfig | None = None,
        app: ASGIApp | None = None,
        *,
        servers: list[str] | None = None,
        cache_provider: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        from premier.providers import AsyncInMemoryCache

        config = config if config is not None else GatewayConfig()
        if not isinstance(config, GatewayConfig):
            raise TypeError(
                f"config must be a GatewayConfig (GatewayConfig.from_file(path) reads a file), got {type(config).__name__}"
            )
        if app is None:
            raise NotImplementedError(
                "standalone mode (ASGIGateway without app=, proxying to servers) is not available in this "
                "version; pass app= to wrap an ASGI application"
            )
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
        self._cache_index: dict[str, set[str] | None] = {}  # path -> cache keys, shared by all configurations
        self._compiled = self._compile(config, None)

    @property
    def config(self) -> GatewayConfig:
        return self._compiled.config

    @property
    def routes(self) -> dict[str, Route]:
        return self._compiled.routes

    def reload(self, config: GatewayConfig) -> None:
        """Switch to ``config``: compiled completely first, then swapped in with one assignment.
        Requests already running finish on the policy they started with."""
        self._compiled = self._compile(config, self._compiled)

    def _compile(self, config: GatewayConfig, previous: _Compiled | None) -> _Compiled:
        identity = ClientIdentity(config.trusted_proxies)
        old_routes = previous.routes if previous else {}

        def build(pattern: str, features: FeaturesConfig) -> Route:
            return compile_route(
                pattern, features, app=self.app, keyspace=config.keyspace, provider=self.provider,
                identity=identity, events=self.events, clock=self.clock, wall_clock=self.wall_clock,
                cache_index=self._cache_index, previous=old_routes.get(pattern),
            )

        routes: dict[str, Route] = {}
        ordered: list[tuple[str, Route]] = []
        for path in config.paths:
            route = routes.get(path.pattern) or build(path.pattern, config.features_for(path))
            routes[path.pattern] = route
            ordered.append((path.pattern, route))
        defaults = config.features_for(None)
        default_route = build(_UNMATCHED, defaults) if defaults.enabled() else None
        passthrough = default_route or build(_UNMATCHED, FeaturesConfig())
        if default_route is not None:
            routes[_UNMATCHED] = default_route
        return _Compiled(config, Router(ordered, default_route), routes, passthrough)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, self._closing_on_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        compiled = self._compiled
        raw_path = scope["path"]
        route, path, params = compiled.router.match(raw_path)
        if path is not raw_path and path != raw_path:
            # The app sees the path the policy was chosen for, so they can never disagree. (The memo
            # hands back the first request's string: an equal path is not a normalised one.)
            scope = {**scope, "path": path, "raw_path": quote(path).encode("ascii")}
        if route is None:
            if not self.events.active:
                await self.app(scope, receive, send)
                return
            route = compiled.passthrough
        await route.entry(Exchange(scope, receive, send, path, route.pattern, params))


    def _closing_on_shutdown(self, send: Send) -> Send:
        """The lifespan's send: once the app has shut down, close the provider the gateway made."""

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._owns_provider:
                await self.provider.close()
            await send(message)

        return lifespan_send


class PremierMiddleware(ASGIGateway):
    """The gateway as Starlette/FastAPI middleware: ``app.add_middleware(PremierMiddleware, config=...)``."""

    def __init__(self, app: ASGIApp, config: GatewayConfig | None = None, *, cache_provider: Any = None) -> None:
        super().__init__(config, app=app, cache_provider=cache_provider)
