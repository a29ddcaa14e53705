"""Shortcuts: answers the gateway gives without running a route's chain, for a server that offers to
take them (Premier's own, ``premier.server``; under any other server the chain always runs).

The server asks ``ASGIGateway.shortcut(request)`` before running the gateway as ASGI, for requests
without a body; the route's shortcut, chosen when the configuration is compiled, either answers (True)
or leaves the request to the chain (False) — never both. Before that, even before it makes the ASGI
scope, it asks ``ASGIGateway.wire_answer(...)`` for the usual cache hit as bytes (a hit is the request
that must be cheapest). Each gives exactly what the chain would:

- a route whose features are ``cache`` (and perhaps ``timeout`` and ``monitoring``, which a hit served
  from memory cannot trip but is still logged by when slow) answers fresh hits from this process's
  memory (:meth:`HttpCacheStep.hit_now`); misses, revalidations and other methods run the chain,
  which fetches and stores;
- in standalone mode, a route with no features at all forwards on the direct path
  (:mod:`premier.proxy.direct`).

No shortcut is taken while anyone subscribes to the gateway's events (the dashboard's statistics):
every request is then counted by the chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from premier.asgi.exchange import ASGIApp, Exchange, Message

if TYPE_CHECKING:
    from premier.asgi.policy import Route
    from premier.proxy.direct import DirectRequest

__all__ = ["Shortcut", "WireAnswer", "shortcut_for", "shortcut_for_app", "wire_for"]

Shortcut = Callable[["DirectRequest", str, dict[str, str]], bool]
# (method, headers, raw query, path, params) -> (status, header lines with content-length, body), or None
WireAnswer = Callable[[str, list[tuple[bytes, bytes]], bytes, str, dict[str, str]], "tuple[int, bytes, bytes] | None"]

_CACHE_SHORTCUT_FEATURES = frozenset({"cache", "timeout", "monitoring"})


def shortcut_for(route: Route, app: ASGIApp) -> Shortcut | None:
    """The shortcut of ``route``, whose chain ends in ``app``; ``None`` when it has none."""
    enabled = route.features.enabled()
    if not enabled:
        return shortcut_for_app(app)
    if route.cache is not None and route.cache.local and set(enabled) <= _CACHE_SHORTCUT_FEATURES:
        return _CacheHit(route)
    return None


def shortcut_for_app(app: ASGIApp) -> Shortcut | None:
    """The shortcut of a request that reaches ``app`` through no feature: the direct path, when ``app``
    is the reverse proxy."""
    from premier.proxy import ReverseProxy

    if isinstance(app, ReverseProxy):
        from premier.proxy.direct import DirectForward

        return DirectForward(app)
    return None


def wire_for(shortcut: Shortcut | None) -> WireAnswer | None:
    """What answers the usual cache hit before a scope is made: a cache shortcut's ``wire``."""
    return shortcut.cache.wire_now if isinstance(shortcut, _CacheHit) and not shortcut.timed else None


async def _nothing_to_receive() -> Message:
    return {"type": "http.disconnect"}


async def _nowhere(message: Message) -> None:
    raise RuntimeError("a shortcut answers through the server's request, not through send")


class _CacheHit:
    """Answers a fresh hit from memory, as the route's cache step would."""

    __slots__ = ("cache", "entry", "pattern", "timed")

    def __init__(self, route: Route) -> None:
        assert route.cache is not None
        self.cache = route.cache
        self.entry = route.entry
        self.pattern = route.pattern
        self.timed = route.entry.log_threshold != math.inf  # (monitoring: slow hits are logged too)

    def __call__(self, request: DirectRequest, path: str, params: dict[str, str]) -> bool:
        started = perf_counter() if self.timed else 0.0
        scope = request.scope
        cache = self.cache
        method = scope["method"]
        hit = cache.hit_now(method, scope["headers"], scope.get("query_string", b""), path, params)
        if hit is None:
            return False
        wire = cache.wire(*hit, method)
        if wire is not None:  # the usual hit: its header lines were serialized when first served
            status = wire[0]
            request.respond_serialized(*wire)
        else:
            answer = cache.render(*hit, method)
            status = answer[0]
            request.respond(*answer)
        if started:
            duration = perf_counter() - started
            entry = self.entry
            if duration >= entry.log_threshold:
                ex = Exchange(scope, _nothing_to_receive, _nowhere, path, self.pattern, params)
                ex.status = status
                entry.log_slow(ex, duration)
        return True
