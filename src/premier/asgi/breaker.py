"""The HTTP circuit-breaker step: one breaker per route (optionally shared between processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from premier.asgi.chain import Step, retry_after_header
from premier.asgi.exchange import Exchange, Message, Rejection, error_body
from premier.config.schema import CircuitBreakerConfig
from premier.features.circuit_breaker import CircuitBreaker

__all__ = ["BreakerStep"]

_SYNC_INTERVAL = 0.25  # seconds between looks at a shared breaker's state


class BreakerStep:
    """A circuit breaker per route: exceptions, timeouts and 5xx responses are failures; while open,
    requests are answered 503 with ``Retry-After``. A request whose client left before its answer is
    neither a failure nor a success, however the app ends it.

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
                elif ex.client_left:
                    breaker.on_abandoned()  # for nobody (Starlette's 500 for its ClientDisconnect)
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
                self._unanswered(ex)
            raise
        finally:
            ex.send = outer_send
        if not settled:
            self._unanswered(ex)

    def _unanswered(self, ex: Exchange) -> None:
        """The app raised or returned before starting a response: a failure, unless the client left
        first. Servers such as uvicorn do not cancel the app then: its ``receive`` says
        ``http.disconnect``, and Starlette raises ``ClientDisconnect`` (the timeout's disconnect is not
        the client's: that request failed)."""
        if ex.client_left and not ex.timed_out:
            self.breaker.on_abandoned()
        else:
            self.breaker.on_failure(self.clock())
