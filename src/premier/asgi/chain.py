"""The two ends of every policy's chain of steps, and what the steps share.

A step is one object wrapping the next, built once when the configuration is compiled and shared by
every request of its route. Order, outermost first: :class:`Entry` (monitoring, the gateway's own answers)
→ timeout → retry → circuit breaker → rate limit → cache → :class:`Downstream` (the app, or later the
upstream pool); each feature's step lives in the module named after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING

from premier.asgi.exchange import ASGIApp, Exchange, Rejection, printable, send_error
from premier.config.schema import MonitoringConfig
from premier.observability.events import Events, RequestEvent

if TYPE_CHECKING:
    from premier.asgi.ratelimit import RateLimitStep

__all__ = ["Downstream", "Entry", "Step", "retry_after_header"]

Step = Callable[[Exchange], Awaitable[None]]

logger = logging.getLogger("premier")


def retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    return (b"retry-after", str(max(1, math.ceil(seconds))).encode())


class Downstream:
    """The innermost step: the wrapped application (plugin mode) or the upstream pool (standalone).

    ``watch_status``: some step (breaker, retry, cache, timeout) needs the app's own send; otherwise the
    app sends straight to the client-facing send, one layer less per message. ``watch_disconnect``: some
    step (breaker, retry) needs to know whether the client left; otherwise the app receives straight
    from the steps' ``receive``."""

    __slots__ = ("app", "watch_disconnect", "watch_status")

    def __init__(self, app: ASGIApp, *, watch_status: bool = True, watch_disconnect: bool = True) -> None:
        self.app = app
        self.watch_status = watch_status
        self.watch_disconnect = watch_disconnect

    def __call__(self, ex: Exchange) -> Awaitable[None]:
        # Returns the app's coroutine for the caller to await: no frame of its own per request.
        return self.app(
            ex.scope, ex.from_client if self.watch_disconnect else ex.receive,
            ex.from_app if self.watch_status else ex.record,
        )


class Entry:
    """The outermost step of every policy: answers rejections, logs slow requests (``monitoring``) and
    emits one :class:`RequestEvent` per request when anyone subscribes."""

    __slots__ = ("events", "log_threshold", "next", "rate_limit")

    def __init__(
        self, next: Step, monitoring: MonitoringConfig | None, events: Events, rate_limit: RateLimitStep | None = None
    ) -> None:
        self.next = next
        self.log_threshold = monitoring.log_threshold if monitoring else math.inf
        self.events = events
        self.rate_limit = rate_limit  # the route's limit, whose headers every response carries

    async def __call__(self, ex: Exchange) -> None:
        started = perf_counter()
        try:
            await self.next(ex)
        except Rejection as rejection:
            if ex.started:
                raise
            if self.rate_limit is not None and not (ex.extra_headers and b"ratelimit" in ex.extra_headers):
                await self.rate_limit.peek(ex)  # answered before the limit was checked (breaker open...)
            await send_error(ex.record, rejection.status, rejection.body, rejection.headers)
        except Exception:
            if not ex.started:
                ex.status = 500  # what the server will answer for the app's exception
            raise
        finally:
            # `ex.send` defaults to the exchange's own bound method: a reference cycle. Broken here,
            # the exchange is freed by reference counting when the request ends, not left for the
            # cyclic garbage collector, whose pauses grow with the app's heap.
            ex.send = ex.client_send
            duration = (ex.finished_at or perf_counter()) - started  # (to the response's end)
            if duration >= self.log_threshold:
                self.log_slow(ex, duration)
            if self.events.active:
                self.events.emit(RequestEvent.of(ex, duration))

    def log_slow(self, ex: Exchange, duration: float) -> None:
        client = ex.scope.get("client")
        logger.warning(
            "slow request: %s %s -> %s in %.3fs (threshold %.3fs, client %s)",
            ex.scope["method"],
            printable(ex.path),
            ex.status or "no response",
            duration,
            self.log_threshold,
            client[0] if client else "-",
        )
