"""Compiling a path's features into its chain of steps, once per configuration (re)load."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from premier.asgi.breaker import BreakerStep
from premier.asgi.chain import Downstream, Entry, Step
from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import ASGIApp
from premier.asgi.http_cache import CacheIndex, HttpCacheStep
from premier.asgi.ratelimit import RateLimitStep
from premier.asgi.retry import RetryStep
from premier.asgi.shortcut import Shortcut, WireAnswer, shortcut_for, wire_for
from premier.asgi.timeout import TimeoutStep
from premier.config.schema import FeaturesConfig
from premier.features.circuit_breaker import CircuitBreaker
from premier.features.ratelimit import RateLimiter
from premier.observability.events import Events
from premier.providers import LocalProvider

__all__ = ["Route", "compile_route"]


class Route:
    """A compiled policy: the pattern it serves, its features, and the outermost step of its chain."""

    __slots__ = ("breaker", "cache", "entry", "features", "pattern", "shortcut", "wire")

    def __init__(self, pattern: str, features: FeaturesConfig, entry: Entry, breaker: CircuitBreaker | None,
                 cache: HttpCacheStep | None) -> None:
        self.pattern = pattern
        self.features = features
        self.entry = entry
        self.breaker = breaker
        self.cache = cache
        self.shortcut: Shortcut | None = None  # what answers without the chain when it may (asgi/shortcut.py)
        self.wire: WireAnswer | None = None  # the same for the usual cache hit, before any scope is made


def compile_route(
    pattern: str,
    features: FeaturesConfig,
    *,
    app: ASGIApp,
    keyspace: str,
    provider: Any,
    identity: ClientIdentity,
    events: Events,
    clock: Callable[[], float],
    wall_clock: Callable[[], float] = time.time,
    cache_index: CacheIndex | None = None,
    previous: Route | None = None,
) -> Route:
    """Builds the chain inside out: downstream ← cache ← rate limit ← breaker ← retry ← timeout ← entry.

    ``previous`` is this pattern's route in the configuration being replaced: its circuit breaker is
    kept when the breaker's settings did not change (rate-limit state lives in the provider, keyed by
    pattern, so it survives on its own)."""
    # (The timeout watches the app's send too: an answer the app starts after the deadline is dropped.)
    watched = (features.cache, features.circuit_breaker, features.retry, features.timeout)
    watch_status = any(f is not None for f in watched)
    watch_disconnect = features.circuit_breaker is not None or features.retry is not None
    step: Step = Downstream(app, watch_status=watch_status, watch_disconnect=watch_disconnect)
    cache = None
    if features.cache is not None:
        step = cache = HttpCacheStep(
            step, features.cache, provider=provider, keyspace=keyspace, clock=wall_clock, index=cache_index
        )
    rate_limit = None
    if features.rate_limit is not None:
        limiter = RateLimiter(features.rate_limit, provider=provider, keyspace=keyspace, name=pattern)
        step = rate_limit = RateLimitStep(step, features.rate_limit, limiter, identity.key_function(features.rate_limit.key))
    breaker = None
    if features.circuit_breaker is not None:
        kept = previous.breaker if previous and previous.features.circuit_breaker == features.circuit_breaker else None
        shared_key = None
        if features.circuit_breaker.shared and not isinstance(provider, LocalProvider):
            shared_key = f"{keyspace}:cb:{pattern}"
        breaker_step = BreakerStep(
            step, features.circuit_breaker, kept, name=pattern, clock=clock, provider=provider, shared_key=shared_key
        )
        step, breaker = breaker_step, breaker_step.breaker
    if features.retry is not None:
        step = RetryStep(step, features.retry)
    if features.timeout is not None:
        step = TimeoutStep(step, features.timeout)
    route = Route(pattern, features, Entry(step, features.monitoring, events, rate_limit), breaker, cache)
    route.shortcut = shortcut_for(route, app)
    route.wire = wire_for(route.shortcut)
    return route
