"""A request through the gateway leaves no cyclic garbage: everything it allocates is freed by reference
counting when it ends. Cycles would be collected only by the cyclic garbage collector, whose pauses grow
with the application's heap (measured: p99 latency of 28 ms instead of 4 ms under uvicorn + FastAPI)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from _asgi import call, paths
from premier.asgi import ASGIGateway

GATEWAY_PATHS = (
    ("/limited", {"rate_limit": {"quota": 2, "duration": 60}, "timeout": {"seconds": 10}, "monitoring": {"log_threshold": 10}}),
    ("/cached", {"cache": {"expire_s": 60}}),
    ("/retried", {"retry": {"max_attempts": 2, "wait": 0}}),
    ("/breaker", {"circuit_breaker": {"failure_threshold": 1000, "recovery_timeout": 60}}),
    ("/slow", {"timeout": {"seconds": 0.01}}),
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    status = 503 if scope["path"] == "/retried" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/limited", {200, 429}),  # allowed, then rejected
        ("/cached", {200}),  # a miss, then hits
        ("/retried", {503}),  # every attempt fails
        ("/breaker", {200}),
        ("/slow", {504}),  # timed out
        ("/other", {200}),  # no policy
    ],
)
async def test_requests_leave_no_cyclic_garbage(collector_off: None, path: str, statuses: set[int]) -> None:
    gateway = ASGIGateway(paths(*GATEWAY_PATHS), app=app)
    seen = {(await call(gateway, path=path)).status for _ in range(3)}  # warm: first-use allocations
    gc.collect()
    for _ in range(20):
        seen.add((await call(gateway, path=path)).status)
    assert seen == statuses
    assert gc.collect() == 0
