"""The HTTP timeout step: a deadline for the whole request."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from threading import get_ident
from typing import Any

from premier.asgi.chain import Step
from premier.asgi.exchange import Exchange, Message, Rejection, error_body, printable
from premier.config.schema import TimeoutConfig

__all__ = ["TimeoutStep"]

logger = logging.getLogger("premier")

_GRACE = 1.0  # seconds a listening app has to stop by itself after being told the client left
_DISCONNECT: Message = {"type": "http.disconnect"}


class TimeoutStep:
    """Bounds the time of everything inside it. Before the response has started, a timeout answers
    ``error_status`` with ``error_message``; after, the response is cut off (the connection closes) and
    the event is logged — a second response start is never sent. A response that has finished is past
    the timeout's reach: what the app does after it (Starlette's background tasks) runs to its end.

    At the deadline, an app that is listening for the client (awaiting ``receive``, as Django and
    streaming responses do, and every framework reading a body) is told the client disconnected, which
    is the ASGI way to ask it to stop, and is cancelled only if it has not stopped within ``_GRACE``
    seconds; an app that is not listening is cancelled at once. However the app then stops — returning,
    raising (Starlette's ``ClientDisconnect``), or answering (FastAPI's 400 for the body cut short:
    dropped, see :meth:`Exchange.from_app`) — the request ended by timing out.

    Every request of a route has the same timeout, so deadlines come due in arrival order: they wait in
    one queue per step, watched by a single timer set for the oldest. A request costs an append and a
    flag, not a timer of its own (``asyncio.wait_for`` costs a task per call, ``loop.call_at`` a timer
    handle).
    """

    __slots__ = ("body", "loop", "next", "pending", "seconds", "status", "thread", "timer")

    def __init__(self, next: Step, config: TimeoutConfig) -> None:
        self.next = next
        self.seconds = config.seconds
        self.status = config.error_status
        self.body = error_body(config.error_status, config.error_message)
        self.pending: deque[_Deadline] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.thread = 0

    async def __call__(self, ex: Exchange) -> None:
        # The loop of the last request, if this is its thread and a task of it runs now: on Python 3.11
        # asyncio.get_running_loop() costs a getpid() system call, so it is asked only when that fails.
        loop = self.loop
        task = asyncio.current_task(loop) if loop is not None and get_ident() == self.thread else None
        if task is None:
            loop = asyncio.get_running_loop()
            if loop is not self.loop:  # first request, or a new event loop: start a fresh queue
                self.loop, self.pending, self.timer, self.thread = loop, deque(), None, get_ident()
            task = asyncio.current_task(loop)
        assert loop is not None
        deadline = _Deadline(ex, task, loop.time() + self.seconds)
        pending = self.pending
        pending.append(deadline)
        if self.timer is None:
            self.timer = loop.call_at(deadline.at, self._expire_due)
        client_receive = ex.receive
        ex.receive = deadline  # callable: the deadline is the app's receive (no bound method per request)
        try:
            await self.next(ex)
        except asyncio.CancelledError:
            if not ex.timed_out:
                raise
            if sys.version_info >= (3, 11) and deadline.task is not None:
                deadline.task.uncancel()
        except Exception:
            if not ex.timed_out:
                raise
            # How the app stopped when told "disconnect" at the deadline (Starlette's ClientDisconnect):
            # the timeout is the cause, and is answered as such.
        finally:
            deadline.settle()
            ex.receive = client_receive
            while pending and pending[0].done:
                pending.popleft()
        if not ex.timed_out:
            return
        if ex.started:
            logger.warning(
                "timeout: %s %s ran past %.3gs after its response started; the connection is closed",
                ex.scope["method"], printable(ex.path), self.seconds,
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


class _Deadline:
    """One request's deadline: the ``receive`` the app is given (the deadline itself is called), and
    what happens when time is up."""

    __slots__ = ("at", "client_receive", "done", "ex", "grace_timer", "listening", "task")

    def __init__(self, ex: Exchange, task: asyncio.Task[Any] | None, at: float) -> None:
        self.ex: Exchange | None = ex
        self.task = task
        self.at = at
        self.done = False
        self.client_receive = ex.receive
        self.listening: asyncio.Future[Message] | None = None
        self.grace_timer: asyncio.TimerHandle | None = None

    async def __call__(self) -> Message:
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
        if self.ex is None or self.task is None or self.ex.finished_at:
            return  # (an app still running after its response finished is past the request: left alone)
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
