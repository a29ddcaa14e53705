"""The HTTP face of the small features: each step is one object wrapping the next, built once when the
configuration is compiled and shared by every request of its route.

Order, outermost first: monitoring → timeout → retry → circuit breaker → rate limit → cache → downstream
(``retry.py`` and ``http_cache.py`` hold the two larger steps).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from premier.asgi.exchange import ASGIApp, Exchange, Message, Rejection, error_body, send_error
from premier.config.schema import CircuitBreakerConfig, MonitoringConfig, RateLimitConfig, TimeoutConfig
from premier.features.circuit_breaker import CircuitBreaker
from premier.features.ratelimit import Decision, RateLimiter
from premier.observability.events import Events, RequestEvent

__all__ = ["BreakerStep", "Downstream", "Entry", "RateLimitStep", "Step", "TimeoutStep"]

Step = Callable[[Exchange], Awaitable[None]]

logger = logging.getLogger("premier")


def retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    return (b"retry-after", str(max(1, math.ceil(seconds))).encode())


class Downstream:
    """The innermost step: the wrapped application (plugin mode) or the upstream pool (standalone).

    ``watch_status``: some step (breaker, retry, cache) needs the app's own status; otherwise the app
    sends straight to the client-facing send, one layer less per message."""

    __slots__ = ("app", "watch_status")

    def __init__(self, app: ASGIApp, *, watch_status: bool = True) -> None:
        self.app = app
        self.watch_status = watch_status

    def __call__(self, ex: Exchange) -> Awaitable[None]:
        # Returns the app's coroutine for the caller to await: no frame of its own per request.
        return self.app(ex.scope, ex.receive, ex.from_app if self.watch_status else ex.record)


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
        started = time.perf_counter()
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
            duration = time.perf_counter() - started
            if duration >= self.log_threshold:
                self._log_slow(ex, duration)
            if self.events.active:
                self.events.emit(RequestEvent.of(ex, duration))

    def _log_slow(self, ex: Exchange, duration: float) -> None:
        client = ex.scope.get("client")
        logger.warning(
            "slow request: %s %s -> %s in %.3fs (threshold %.3fs, client %s)",
            ex.scope["method"],
            ex.path,
            ex.status or "no response",
            duration,
            self.log_threshold,
            client[0] if client else "-",
        )


class TimeoutStep:
    """Bounds the time of everything inside it. Before the response has started, a timeout answers
    ``error_status`` with ``error_message``; after, the response is cut off (the connection closes) and
    the event is logged — a second response start is never sent.

    At the deadline, an app that is listening for the client (awaiting ``receive``, as Django and
    streaming responses do) is told the client disconnected, which is the ASGI way to ask it to stop,
    and is cancelled only if it has not stopped within ``_GRACE`` seconds; an app that is not listening
    is cancelled at once.

    Every request of a route has the same timeout, so deadlines come due in arrival order: they wait in
    one queue per step, watched by a single timer set for the oldest. A request costs an append and a
    flag, not a timer of its own (``asyncio.wait_for`` costs a task per call, ``loop.call_at`` a timer
    handle).
    """

    __slots__ = ("body", "loop", "next", "pending", "seconds", "status", "timer")

    def __init__(self, next: Step, config: TimeoutConfig) -> None:
        self.next = next
        self.seconds = config.seconds
        self.status = config.error_status
        self.body = error_body(config.error_status, config.error_message)
        self.pending: deque[_Deadline] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def __call__(self, ex: Exchange) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # first request, or a new event loop: start a fresh queue
            self.loop, self.pending, self.timer = loop, deque(), None
        deadline = _Deadline(ex, asyncio.current_task(), loop.time() + self.seconds)
        pending = self.pending
        pending.append(deadline)
        if self.timer is None:
            self.timer = loop.call_at(deadline.at, self._expire_due)
        client_receive = ex.receive
        ex.receive = deadline.receive
        try:
            await self.next(ex)
        except asyncio.CancelledError:
            if not ex.timed_out:
                raise
            if sys.version_info >= (3, 11) and deadline.task is not None:
                deadline.task.uncancel()
        finally:
            deadline.settle()
            ex.receive = client_receive
            while pending and pending[0].done:
                pending.popleft()
        if not ex.timed_out:
            return
        if ex.started:
            ex.aborted = True
            logger.warning(
                "timeout: %s %s ran past %.3gs after its response started; the connection is closed",
                ex.scope["method"], ex.path, self.seconds,
            )
            return
        raise Rejection(self.status, self.body)

    def _expire_due(self) -> None:
        pending = self.pending
        loop = self.loop
        assert loop is not None  # set before any timer is
        now = loop.time()
        while pending:
            head = pending[0]
            if not head.done and head.at > now:
                break
            pending.popleft()
            if not head.done:
                head.expire()
        self.timer = loop.call_at(pending[0].at, self._expire_due) if pending else None


_GRACE = 1.0
_SYNC_INTERVAL = 0.25  # seconds between looks at a shared breaker's state
_DISCONNECT: Message = {"type": "http.disconnect"}


class _Deadline:
    """One request's deadline: the ``receive`` the app is given, and what happens when time is up."""

    __slots__ = ("at", "client_receive", "done", "ex", "grace_timer", "listening", "task")

    def __init__(self, ex: Exchange, task: asyncio.Task[Any] | None, at: float) -> None:
        self.ex: Exchange | None = ex
        self.task = task
        self.at = at
        self.done = False
        self.client_receive = ex.receive
        self.listening: asyncio.Future[Message] | None = None
        self.grace_timer: asyncio.TimerHandle | None = None

    async def receive(self) -> Message:
        ex = self.ex
        if ex is None or ex.timed_out:
            return _DISCONNECT
        self.listening = pending = asyncio.ensure_future(self.client_receive())
        try:
            return await pending
        except asyncio.CancelledError:
            if ex.timed_out and pending.cancelled() and not _being_cancelled(self.task):
                return _DISCONNECT
            raise
        finally:
            self.listening = None

    def expire(self) -> None:
        if self.ex is None or self.task is None:
            return
        self.ex.timed_out = True
        if self.listening is not None:
            self.listening.cancel()  # the app's receive answers "disconnect"
            self.grace_timer = asyncio.get_running_loop().call_later(_GRACE, self.task.cancel)
        else:
            self.task.cancel()

    def settle(self) -> None:
        """The request is over: release what it holds (a settled deadline may wait in the queue)."""
        self.done = True
        if self.grace_timer is not None:
            self.grace_timer.cancel()
        if self.listening is not None:
            self.listening.cancel()
        self.ex = self.task = None
        self.client_receive = _gone


async def _gone() -> Message:
    return _DISCONNECT


def _being_cancelled(task: asyncio.Task[Any] | None) -> bool:
    return task is not None and sys.version_info >= (3, 11) and task.cancelling() > 0


class BreakerStep:
    """A circuit breaker per route: exceptions, timeouts and 5xx responses are failures; while open,
    requests are answered 503 with ``Retry-After``.

    With ``shared_key`` (``shared: true`` and a shared provider), the breaker still decides locally —
    no round trip per request — but an opening is published under ``shared_key`` for
    ``recovery_timeout`` seconds, every process looks at that key at most every ``_SYNC_INTERVAL``
    seconds and opens as well, and the probe that closes the circuit removes it.
    """

    __slots__ = ("body", "breaker", "clock", "next", "next_sync", "provider", "shared_key")

    def __init__(
        self, next: Step, config: CircuitBreakerConfig, breaker: CircuitBreaker | None, name: str,
        clock: Callable[[], float], provider: Any = None, shared_key: str | None = None,
    ) -> None:
        self.next = next
        self.breaker = breaker or CircuitBreaker.from_config(config, name=name)
        self.body = error_body(503, "Service unavailable: circuit breaker is open")
        self.clock = clock
        self.provider = provider
        self.shared_key = shared_key
        self.next_sync = float("-inf")

    def __call__(self, ex: Exchange) -> Awaitable[None]:
        return self._judged(ex) if self.shared_key is None else self._judged_with_others(ex)

    async def _judged_with_others(self, ex: Exchange) -> None:
        breaker, key = self.breaker, self.shared_key
        assert key is not None  # only called with a shared key
        now = self.clock()
        if now >= self.next_sync:
            self.next_sync = now + _SYNC_INTERVAL
            if breaker.state(now) == "closed" and await self.provider.get(key) is not None:
                breaker.trip(now)
        was, opened_at = breaker.state(now), breaker.opened_at
        try:
            await self._judged(ex)
        finally:
            state = breaker.state(self.clock())
            if state == "open" and breaker.opened_at != opened_at:
                await self.provider.set(key, True, ttl=breaker.recovery_timeout)
            elif state == "closed" and was != "closed":
                await self.provider.delete(key)

    async def _judged(self, ex: Exchange) -> None:
        breaker = self.breaker
        clock = self.clock
        retry_after = breaker.before_call(clock())
        if retry_after:
            raise Rejection(503, self.body, [retry_after_header(retry_after)])
        settled = False
        outer_send = ex.send

        async def judge_at_start(message: Message) -> None:
            # The verdict is given as soon as the status is known: the client may ask again before
            # the app has returned.
            nonlocal settled
            if message["type"] == "http.response.start" and not settled:
                settled = True
                if ex.cache_status == "HIT":
                    breaker.on_abandoned()  # served by the cache: says nothing about the app
                elif message["status"] >= 500:
                    breaker.on_failure(clock())
                else:
                    breaker.on_success(clock())
            await outer_send(message)

        ex.send = judge_at_start
        try:
            await self.next(ex)
        except Rejection:
            if not settled:
                breaker.on_abandoned()  # answered by a step inside (rate limit): no verdict on the app
            raise
        except asyncio.CancelledError:
            if not settled:
                if ex.timed_out:
                    breaker.on_failure(clock())
                else:
                    breaker.on_abandoned()  # the client went away
            raise
        except Exception:
            if not settled:
                breaker.on_failure(clock())
            raise
        finally:
            ex.send = outer_send
        if not settled:
            breaker.on_failure(clock())  # returned without a response (or timed out before one)


class RateLimitStep:
    """Counts requests per route and per client (or header, or globally). Rejections answer
    ``error_status`` with ``Retry-After``; every response carries the IETF ``RateLimit`` and
    ``RateLimit-Policy`` headers (draft-ietf-httpapi-ratelimit-headers). ``leaky_bucket`` delays
    requests while its bucket has room."""

    __slots__ = ("body", "key_of", "limiter", "next", "policy_header", "status")

    def __init__(self, next: Step, config: RateLimitConfig, limiter: RateLimiter, key_of: Callable[[Any], str]) -> None:
        self.next = next
        self.limiter = limiter
        self.key_of = key_of
        self.status = config.error_status
        self.body = error_body(config.error_status, config.error_message)
        self.policy_header = f'"premier";q={config.quota};w={math.ceil(config.duration)}'.encode()

    def __call__(self, ex: Exchange) -> Awaitable[None]:
        # Not a coroutine: with an in-process provider the check needs no await, so this returns the
        # next step's awaitable (or raises the rejection) and costs no frame of its own.
        if ex.attempt > 1:
            # A retry of a request already counted: one client request spends one token, however
            # many attempts the gateway makes for it.
            return self.next(ex)
        limiter = self.limiter
        if not limiter.is_local:
            return self._checked_remotely(ex)
        self._apply(ex, limiter.check_nowait(self.key_of(ex.scope)))
        return self.next(ex) if not ex.delay else self._delayed(ex)

    async def _checked_remotely(self, ex: Exchange) -> None:
        self._apply(ex, await self.limiter.check(self.key_of(ex.scope)))
        if ex.delay:
            await asyncio.sleep(ex.delay)
        await self.next(ex)

    async def _delayed(self, ex: Exchange) -> None:
        await asyncio.sleep(ex.delay)
        await self.next(ex)

    async def peek(self, ex: Exchange) -> None:
        """Add the limit's headers to a response the gateway gives before the limit was checked, without
        spending a token (a check of cost 0)."""
        key = self.key_of(ex.scope)
        limiter = self.limiter
        decision = limiter.check_nowait(key, cost=0) if limiter.is_local else await limiter.check(key, cost=0)
        ex.add_header(b"ratelimit-policy", self.policy_header)
        ex.add_header(b"ratelimit", b'"premier";r=%d;t=%d' % (decision.remaining, math.ceil(decision.reset_after)))

    def _apply(self, ex: Exchange, decision: Decision) -> None:
        """The decision's headers on the response; a rejection raised; a leaky bucket's delay noted."""
        ex.add_header(b"ratelimit-policy", self.policy_header)
        ex.add_header(b"ratelimit", b'"premier";r=%d;t=%d' % (decision.remaining, math.ceil(decision.reset_after)))
        if not decision.allowed:
            ex.rate_limited = True
            raise Rejection(self.status, self.body, [retry_after_header(decision.retry_after)])
        ex.delay = decision.delay
