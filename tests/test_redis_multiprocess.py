"""Shared state across OS processes: several gateway processes on one Redis count one quota and make one
downstream call per cache miss.

Each child is a fresh interpreter (``python -c``) that sets itself up, prints ``ready`` and waits for
``go`` on its stdin, so all of them start their burst at the same moment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.redis

TESTS = str(Path(__file__).resolve().parent)


class Children:
    """Child interpreters running ``script`` (argv: ``args`` then the child's index)."""

    def __init__(self, script: str, count: int, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, *args, str(i)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
            for i in range(count)
        ]

    def _line(self, proc: subprocess.Popen[str]) -> str:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            proc.wait(5)
            raise AssertionError(f"a child exited ({proc.returncode}): {proc.stderr.read()}")  # type: ignore[union-attr]
        return line

    def start_together(self) -> None:
        """Wait until every child is ready, then release them all at once."""
        for proc in self.procs:
            assert self._line(proc) == "ready\n"
        for proc in self.procs:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]

    def results(self) -> list[Any]:
        """One JSON line from each child."""
        return [json.loads(self._line(proc)) for proc in self.procs]

    def finish(self) -> None:
        for proc in self.procs:
            proc.stdin.close()  # type: ignore[union-attr]
            assert proc.wait(10) == 0, proc.stderr.read()  # type: ignore[union-attr]
            assert proc.stderr.read() == ""  # type: ignore[union-attr]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[list[Children]]:
    started: list[Children] = []
    yield started
    for group in started:
        group.kill()


# -- one quota, four processes ------------------------------------------------------------------------
LIMITER_CHILD = """
import asyncio, json, logging, sys
from redis.asyncio import Redis
from premier.features.ratelimit import FixedWindow, SlidingWindow, TokenBucket
from premier.providers.redis import AsyncRedisCache

url, prefix, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
logged = []
handler = logging.Handler()
handler.emit = lambda record: logged.append(record.getMessage())
logging.getLogger("premier").addHandler(handler)

async def main():
    # Half the processes use the documented wiring (a plain client), half AsyncRedisCache.from_url, with
    # a timeout generous enough that opening 400 connections at once on a busy machine is no "outage".
    provider = AsyncRedisCache(Redis.from_url(url)) if index % 2 else AsyncRedisCache.from_url(url, timeout=10)
    await provider.client.ping()
    for limit in (FixedWindow(100, 1_000_000), SlidingWindow(100, 1_000_000), TokenBucket(100, 1_000_000)):
        print("ready", flush=True)
        assert sys.stdin.readline() == "go\\n"
        key = f"{prefix}:rl:shared:{limit.name}"
        decisions = await asyncio.gather(*(provider.acquire(key, limit) for _ in range(500)))
        print(json.dumps({
            "algorithm": limit.name,
            "admitted": sum(d.allowed for d in decisions),
            "rejections_have_retry_after": all(d.retry_after > 0 for d in decisions if not d.allowed),
            "logged": logged,
        }), flush=True)
    await provider.close()

asyncio.run(main())
"""


def test_four_processes_admit_exactly_the_shared_quota(redis_url: str, redis_prefix: str, children: list[Children]) -> None:
    group = Children(LIMITER_CHILD, 4, redis_url, redis_prefix)
    children.append(group)
    for name in ("fixed_window", "sliding_window", "token_bucket"):
        group.start_together()
        results = group.results()
        assert {r["algorithm"] for r in results} == {name}
        admitted = [r["admitted"] for r in results]
        assert sum(admitted) == 100, (name, admitted, [r["logged"] for r in results])  # 2,000 checks, quota 100
        assert all(r["rejections_have_retry_after"] for r in results)
        assert [r["logged"] for r in results] == [[]] * 4  # no process took a busy pool for an outage
    group.finish()


# -- one downstream call for one cache miss, three processes -------------------------------------------
CACHE_CHILD = """
import asyncio, json, os, sys
from redis.asyncio import Redis
from _asgi import call, paths
from premier.asgi import ASGIGateway
from premier.providers.redis import AsyncRedisCache

url, prefix = sys.argv[1], sys.argv[2]

async def main():
    counter = Redis.from_url(url)

    async def app(scope, receive, send):
        n = await counter.incr(f"{prefix}:downstream-calls")
        await asyncio.sleep(0.2)
        body = f"fetched by process {os.getpid()} as call {n}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"cache-control", b"max-age=60"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    provider = AsyncRedisCache.from_url(url, timeout=10)  # a busy machine is no outage
    gateway = ASGIGateway(paths(("/item", {"cache": {"expire_s": 300}}), keyspace=prefix), app=app,
                          cache_provider=provider)
    await provider.client.ping()
    await counter.ping()
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    responses = await asyncio.gather(*(call(gateway, path="/item") for _ in range(5)))
    print(json.dumps([{"status": r.status, "body": r.body.decode(), "x_cache": r.headers_named("x-cache")}
                      for r in responses]), flush=True)
    await provider.close()
    await counter.aclose()

asyncio.run(main())
"""


def test_concurrent_misses_in_three_processes_make_one_downstream_call(
    redis_url: str, redis_prefix: str, children: list[Children]
) -> None:
    import redis

    group = Children(CACHE_CHILD, 3, redis_url, redis_prefix)
    children.append(group)
    group.start_together()
    started = time.monotonic()
    responses = [response for result in group.results() for response in result]
    elapsed = time.monotonic() - started
    group.finish()

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(f"{redis_prefix}:downstream-calls") == b"1"
        # the lock is gone; the entry stays, and the record of its path's keys lives as long as it
        keys = {client.type(key): key for key in client.scan_iter(match=f"{redis_prefix}:http:*")}
        assert sorted(keys) == [b"string", b"zset"]
        assert 0 < client.pttl(keys[b"string"]) <= 60_000
        assert client.pttl(keys[b"string"]) <= client.pttl(keys[b"zset"]) <= 60_000
    finally:
        client.close()
    assert len(responses) == 15
    assert {r["status"] for r in responses} == {200}
    assert len({r["body"] for r in responses}) == 1
    assert responses[0]["body"].endswith("as call 1")
    assert sorted(tuple(r["x_cache"]) for r in responses) == [("HIT",)] * 14 + [("MISS",)]
    assert elapsed < 3  # the waiters were served once the entry was stored, not after a lock timeout
