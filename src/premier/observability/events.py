"""Small typed events, emitted only when someone subscribes (logging, stats, dashboard, metrics).

Emitting is a plain call of each subscriber, in the request's task: a subscriber must be quick and must
not raise (one that raises is logged and dropped)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from premier.asgi.exchange import Exchange

__all__ = ["Events", "RequestEvent"]

logger = logging.getLogger("premier")


class RequestEvent:
    """One HTTP request handled by the gateway."""

    __slots__ = ("cache", "client", "duration", "method", "path", "rate_limited", "route", "status", "timed_out")

    def __init__(
        self,
        route: str,
        method: str,
        path: str,
        status: int,
        duration: float,
        client: str,
        cache: str = "",
        rate_limited: bool = False,
        timed_out: bool = False,
    ) -> None:
        self.route = route
        self.method = method
        self.path = path
        self.status = status
        self.duration = duration
        self.client = client
        self.cache = cache
        self.rate_limited = rate_limited
        self.timed_out = timed_out

    @classmethod
    def of(cls, ex: Exchange, duration: float) -> RequestEvent:
        client = ex.scope.get("client")
        return cls(
            ex.route, ex.scope["method"], ex.path, ex.status, duration, client[0] if client else "",
            ex.cache_status, ex.rate_limited, ex.timed_out,
        )

    def __repr__(self) -> str:
        return f"RequestEvent({self.method} {self.path} -> {self.status} in {self.duration * 1000:.1f}ms, route={self.route!r})"


class Events:
    """A list of subscribers. ``active`` is false while there are none, so emitting costs nothing then."""

    __slots__ = ("_subscribers", "active")

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Any], None]] = []
        self.active = False

    def subscribe(self, subscriber: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every event; returns a function that unsubscribes it."""
        self._subscribers.append(subscriber)
        self.active = True

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self.active = bool(self._subscribers)

        return unsubscribe

    def emit(self, event: Any) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber %r failed; unsubscribed", subscriber)
                self._subscribers.remove(subscriber)
                self.active = bool(self._subscribers)
