"""The HTTP retry step: replays a request whose attempt failed before anything reached the client.

Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) or requests carrying an
``Idempotency-Key`` are retried. The request body is buffered (up to ``max_body_bytes``; a larger body
is sent once, without retry) so that each attempt sees it whole. An attempt fails when the app raises
one of the configured exceptions before starting its response, or answers one of ``retry_on_status``;
a failed attempt's response is discarded, never half-sent. An upstream ``Retry-After`` longer than our
wait is honoured (one over a minute ends the retrying: that response is passed on). Cancellation,
timeouts, the gateway's own rejections and attempts whose client left are never retried.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from premier.asgi.chain import Step
from premier.asgi.exchange import Exchange, Message, Receive, Rejection, Send, printable
from premier.config.schema import RetryConfig
from premier.features.retry import RetryPolicy

__all__ = ["RetryStep"]

logger = logging.getLogger("premier")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_MAX_RETRY_AFTER = 60.0


def _retry_after_seconds(headers: list[tuple[bytes, bytes]]) -> float:
    for name, value in headers:
        if name.lower() == b"retry-after":
            text = value.decode("latin-1").strip()
            if text.isdigit():
                return float(text)
            try:
                when = parsedate_to_datetime(text)
                if when.tzinfo is None:  # "-0000": a date in UTC with no zone information
                    when = when.replace(tzinfo=timezone.utc)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError, OverflowError):
                return 0.0
    return 0.0


class _Attempt:
    """The send of one attempt that may be retried: swallows a retryable response instead of sending it."""

    __slots__ = ("retry_after", "send", "started", "statuses", "swallowed")

    def __init__(self, send: Send, statuses: frozenset[int]) -> None:
        self.send = send
        self.statuses = statuses
        self.started = False
        self.swallowed = False
        self.retry_after = 0.0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] in self.statuses:
                retry_after = _retry_after_seconds(list(message.get("headers", ())))
                if retry_after <= _MAX_RETRY_AFTER:
                    self.swallowed = True
                    self.retry_after = retry_after
                    return
            self.started = True
        elif self.swallowed:
            return
        await self.send(message)


def _replay(body: bytes, receive: Receive, *, more_body: bool = False) -> Receive:
    """A receive that yields the buffered body once, then defers to the client's own: for the rest of
    the body (``more_body``: only its head was buffered), or for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": more_body}

    return replay


class RetryStep:
    __slots__ = ("max_body_bytes", "next", "policy", "statuses")

    def __init__(self, next: Step, config: RetryConfig) -> None:
        self.next = next
        self.policy = RetryPolicy.from_config(config)
        self.statuses = frozenset(config.retry_on_status)
        self.max_body_bytes = config.max_body_bytes

    async def __call__(self, ex: Exchange) -> None:
        if ex.scope["method"] not in _IDEMPOTENT and ex.header(b"idempotency-key") is None:
            await self.next(ex)
            return
        body, more = await self._read_body(ex.receive)
        client_receive, outer_send = ex.receive, ex.send
        if more or len(body) > self.max_body_bytes:  # (not kept for a replay: sent once)
            ex.receive = _replay(body, client_receive, more_body=more)
            await self.next(ex)
            return
        policy = self.policy
        attempt = 1
        try:
            while True:
                ex.receive = _replay(body, client_receive)
                ex.attempt = attempt
                last = attempt >= policy.max_attempts
                attempt_send = None if last else _Attempt(outer_send, self.statuses)
                ex.send = outer_send if attempt_send is None else attempt_send
                try:
                    await self.next(ex)
                except (Rejection, asyncio.CancelledError):
                    raise
                except Exception as error:
                    if attempt_send is None or attempt_send.started or ex.client_left or ex.timed_out:
                        raise  # (a client that left, or the timeout's "disconnect": Starlette's ClientDisconnect)
                    wait = policy.decide(attempt, error)
                    if wait is None:
                        raise
                    reason = repr(error)
                else:
                    if attempt_send is None or not attempt_send.swallowed or ex.client_left or ex.timed_out:
                        # (a client that left is not answered: the swallowed answer reaches nobody; past
                        # the deadline, the timeout answers)
                        return
                    wait = max(policy.wait_after(attempt), attempt_send.retry_after)
                    reason = f"status {ex.upstream_status}"
                logger.info(
                    "retrying %s %s in %.3gs: attempt %d/%d failed (%s)",
                    ex.scope["method"], printable(ex.path), wait, attempt, policy.max_attempts, reason,
                )
                if wait:
                    await asyncio.sleep(wait)
                attempt += 1
        finally:
            ex.receive, ex.send = client_receive, outer_send

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The request body, or its first part once past ``max_body_bytes``; and whether more is to
        come from the client (the rest of it, or the disconnect of a client that left before the end)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client left before sending its body; let the app see that as it would.
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False
            if size > self.max_body_bytes:
                return b"".join(chunks), True
