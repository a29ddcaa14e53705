"""The HTTP rate-limit step: per route and per client (or header, or globally), with the IETF
``RateLimit`` headers on every response."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from premier.asgi.chain import Step, retry_after_header
from premier.asgi.exchange import Exchange, Rejection, error_body
from premier.config.schema import RateLimitConfig
from premier.features.ratelimit import Decision, RateLimiter

__all__ = ["RateLimitStep"]


class RateLimitStep:
    """Counts requests per route and per client (or header, or globally). Rejections answer
    ``error_status`` with ``Retry-After``; every response carries the IETF ``RateLimit`` and
    ``RateLimit-Policy`` headers (draft-ietf-httpapi-ratelimit-headers). ``leaky_bucket`` delays
    requests while its bucket has room."""

    __slots__ = ("body", "check_nowait", "key_of", "limiter", "next", "policy_header", "status")

    def __init__(self, next: Step, config: RateLimitConfig, limiter: RateLimiter, key_of: Callable[[Any], str]) -> None:
        self.next = next
        self.limiter = limiter
        # Looked up once: the limiter's provider (and so whether it answers without awaiting) is fixed.
        self.check_nowait = limiter.check_nowait if limiter.is_local else None
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
        check_nowait = self.check_nowait
        if check_nowait is None:
            return self._checked_remotely(ex)
        self._apply(ex, check_nowait(self.key_of(ex.scope)))
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
        self._add_headers(ex, decision)

    def _apply(self, ex: Exchange, decision: Decision) -> None:
        """The decision's headers on the response; a rejection raised; a leaky bucket's delay noted."""
        self._add_headers(ex, decision)
        if not decision.allowed:
            ex.rate_limited = True
            raise Rejection(self.status, self.body, [retry_after_header(decision.retry_after)])
        ex.delay = decision.delay

    def _add_headers(self, ex: Exchange, decision: Decision) -> None:
        # What two `ex.add_header` calls do, in one step: this runs for every request of the route.
        value = b'"premier";r=%d;t=%d' % (decision.remaining, math.ceil(decision.reset_after))
        headers = ex.extra_headers
        if headers is None:
            ex.extra_headers = {b"ratelimit-policy": self.policy_header, b"ratelimit": value}
        else:
            headers[b"ratelimit-policy"] = self.policy_header
            headers[b"ratelimit"] = value
