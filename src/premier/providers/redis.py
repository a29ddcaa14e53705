"""The Redis provider: rate limits, cache entries and locks shared by every gateway process and machine
that uses the same Redis (``pip install 'premier[redis]'``).

- Rate-limit checks run the algorithm as a Lua script (``providers/lua/``): loaded once, called with
  EVALSHA (re-loaded after ``SCRIPT FLUSH`` or a restart), one round trip per check, atomic, on Redis's
  own clock (``TIME``), so hosts with skewed clocks agree. Each script touches one key, so a cluster
  client works too. Keys expire when their window is over.
- Cache values are stored pickled, with TTLs. Redis must therefore be trusted: whoever can write to it
  can make the gateway unpickle what they wrote.
- ``clear(prefix)`` removes only keys under ``prefix`` (the keyspace), with SCAN — never KEYS or FLUSHDB.
- Groups (``set_in_group``, ``clear_group``): the keys stored in a group are recorded at the group's own
  key, a sorted set of each key's expiry, so clearing the group costs its keys, not a SCAN of the
  database. A Lua script stores an entry and records it in one step, and another removes keys with their
  records, so a store racing a clear is never left unrecorded (see ``clear_group``). Those scripts touch
  keys of several slots: on a cluster client groups fall back to SCAN by their prefix.
- When Redis cannot be reached or times out, ``on_backend_error`` decides: ``local`` (the default) keeps
  limiting and caching in this process's memory until Redis is back — each process then enforces the
  quota on its own; ``allow`` admits every request and caches nothing; ``deny`` rejects rate-limited
  requests. The outage is logged once when it starts and once when it ends, never per request; Redis is
  tried again at most every ``retry_interval`` seconds, and the provider returns to it by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Literal

from premier.errors import BackendError
from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm
from premier.providers.memory import AsyncInMemoryCache

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import MaxConnectionsError as _PoolExhausted
    from redis.exceptions import NoScriptError, RedisError, ResponseError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the Redis provider needs redis-py: pip install 'premier[redis]'") from exc

__all__ = ["AsyncRedisCache", "OnBackendError"]

logger = logging.getLogger("premier")

OnBackendError = Literal["local", "allow", "deny"]

# Errors that mean "Redis is not there right now" (as opposed to a bug, which is raised).
_UNREACHABLE = (_RedisConnectionError, _RedisTimeoutError, OSError, TimeoutError)
_SCAN_BATCH = 500
_GROUP_BATCH = 500  # keys a clear_group removes per script call (Redis serves nothing else meanwhile)
# A client whose (non-blocking) pool has no free connection raises at once, before sending anything:
# this process is busy, Redis is not down. So the provider queues its commands for the pool's
# connections (see AsyncRedisCache._run), and a command that still finds none (the client is shared
# with other code, or has no single pool, as a cluster client) is retried, backing off up to
# _POOL_BACKOFF_MAX, for at most _POOL_WAIT seconds before it counts as Redis being unreachable.
_POOL_BACKOFF = 0.0005
_POOL_BACKOFF_MAX = 0.02
_POOL_WAIT = 1.0


def _script(name: str) -> str:
    return files("premier.providers").joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def _when_pool_free(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()``, retried while the client's connection pool is exhausted (see ``_POOL_WAIT``)."""
    backoff, deadline = _POOL_BACKOFF, 0.0
    while True:
        try:
            return await call()
        except _PoolExhausted:
            now = time.monotonic()
            if not deadline:
                deadline = now + _POOL_WAIT
            elif now >= deadline:
                raise
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, _POOL_BACKOFF_MAX)


class AsyncRedisCache:
    """A provider backed by a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``).

    ``on_backend_error``: what to do while Redis is unreachable (``local``, ``allow`` or ``deny``).
    ``retry_interval``: seconds between attempts to reach Redis again during an outage.
    """

    def __init__(
        self, client: Any, *, on_backend_error: OnBackendError = "local", retry_interval: float = 1.0
    ) -> None:
        if on_backend_error not in ("local", "allow", "deny"):
            raise ValueError(f"on_backend_error must be 'local', 'allow' or 'deny', got {on_backend_error!r}")
        self.client = client
        self.on_backend_error = on_backend_error
        self.retry_interval = retry_interval
        self._scripts = {
            name: client.register_script(_script(name))
            for name in (
                "fixed_window", "sliding_window", "token_bucket", "leaky_bucket", "unlock", "group_set", "group_clear"
            )
        }
        # A cluster client has no single pool; a group's keys lie in many slots, which a script may not span.
        self._cluster = getattr(client, "connection_pool", None) is None
        self._local = AsyncInMemoryCache()  # serves `local` during an outage
        # At most as many commands in flight as the pool has connections: the others queue here, where
        # they can be failed at once when Redis turns out to be gone (see _run), rather than each
        # waiting its turn for a connection and then a timeout.
        pool = getattr(client, "connection_pool", None)
        slots = getattr(pool, "max_connections", None)
        self._slots = asyncio.Semaphore(slots) if isinstance(slots, int) and slots > 0 else None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._failures = 0  # failed commands so far: a command that queued through one fails at once
        self._pending: list[tuple[str, str, list[Any], asyncio.Future[Any]]] = []  # checks to batch
        self._flushes: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, on_backend_error: OnBackendError = "local", timeout: float = 0.5,
                 retry_interval: float = 1.0, max_connections: int = 64) -> AsyncRedisCache:
        """A provider with its own client for ``url`` (``redis://host:port/db``); ``timeout`` bounds
        connecting and every command, so an unreachable Redis costs at most that per request.

        The client keeps at most ``max_connections`` connections; more concurrent commands wait for a
        free one (up to 10 s) instead of opening a connection each, which under a burst would flood
        Redis with connects and time out."""
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cls(Redis(connection_pool=pool), on_backend_error=on_backend_error, retry_interval=retry_interval)

    async def _run(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` (one Redis command), when the client's pool has a connection for it."""
        if self._slots is None:
            return await _when_pool_free(call)
        failures = self._failures
        async with self._slots:
            if self._failures != failures:
                # Redis failed while this command queued: fail it now rather than let the queue
                # drain one timeout at a time.
                raise _RedisConnectionError("Redis is unreachable")
            return await _when_pool_free(call)

    # -- batching -------------------------------------------------------------------------------
    async def _evalsha(self, name: str, key: str, args: list[Any]) -> Any:
        """Run script ``name`` for ``key``. The checks started in one event-loop iteration go to Redis
        as one pipeline — one write, one read for all of them — so each is still a single round trip
        for its caller, and atomic on its own (a pipeline is not a transaction), while the client's
        per-command cost, which dominates a check, is paid once per batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((name, key, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)  # (a running task must be referenced, or it may be collected)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[str, str, list[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._run(lambda: self._pipeline(batch))
        except BaseException as error:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up waiting (cancelled)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[tuple[str, str, list[Any], asyncio.Future[Any]]]) -> list[Any]:
        replies = await self._send(batch, range(len(batch)))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # Redis restarted or its scripts were flushed: load them again, send those again
            for name in {batch[i][0] for i in missing}:
                script = self._scripts[name]
                script.sha = await self.client.script_load(script.script)
            for i, reply in zip(missing, await self._send(batch, missing), strict=True):
                replies[i] = reply
        return replies

    async def _send(self, batch: list[tuple[str, str, list[Any], asyncio.Future[Any]]], items: Any) -> list[Any]:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:  # a cluster client: its pipeline sends each command to its key's node
            pipe = self.client.pipeline(transaction=False)
            for i in items:
                name, key, args, _ = batch[i]
                pipe.evalsha(self._scripts[name].sha, 1, key, *args)
            return list(await pipe.execute(raise_on_error=False))
        # What redis-py's pipeline sends, without its layers (they cost more per command than the script
        # in Redis): the commands packed here, one write on one connection, then each reply in turn.
        # No retry: a script that timed out may have run, and running it again would count it twice.
        conn = await pool.get_connection()
        try:
            encode, chunks = conn.encoder.encode, []
            for i in items:
                name, key, args, _ = batch[i]
                words = [b"EVALSHA", encode(self._scripts[name].sha), b"1", encode(key), *map(encode, args)]
                chunks.append(b"*%d\r\n" % len(words))
                chunks.extend(b"$%d\r\n%b\r\n" % (len(word), word) for word in words)
            await conn.send_packed_command(b"".join(chunks))
            replies: list[Any] = []
            for _ in items:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as error:  # this script's error (NOSCRIPT among them), not the batch's
                    replies.append(error)
        except BaseException:
            await conn.disconnect()  # replies may be left unread: the connection must not be reused as is
            raise
        finally:
            await pool.release(conn)
        return replies

    # -- outage bookkeeping -------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False during an outage until the next retry is due."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def _use_redis(self) -> bool:
        """Whether this call goes to Redis: always, except during an outage, when one call per
        ``retry_interval`` does (a probe), so a Redis that times out costs one timeout per interval
        rather than one per request."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_interval
        return True

    def _failed(self, error: BaseException) -> None:
        self._failures += 1
        now = time.monotonic()
        self._retry_at = now + self.retry_interval
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "Redis is unreachable (%s: %s); on_backend_error=%s until it is back",
                type(error).__name__, error, self.on_backend_error,
            )

    def _succeeded(self) -> None:
        if self._down_since is not None:
            logger.warning("Redis is reachable again after %.1fs; shared state resumed", time.monotonic() - self._down_since)
            self._down_since = None

    # -- cache ----------------------------------------------------------------------------------
    async def get(self, key: str) -> Any | None:
        if not self._use_redis():
            return self._local.get_nowait(key) if self.on_backend_error == "local" else None
        try:
            raw = await self._run(lambda: self.client.get(key))
        except _UNREACHABLE as error:
            self._failed(error)
            return self._local.get_nowait(key) if self.on_backend_error == "local" else None
        except RedisError as error:
            raise BackendError(f"Redis GET failed: {error}") from error
        self._succeeded()
        return None if raw is None else pickle.loads(raw)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self._set(key, value, ttl, None)

    async def set_in_group(self, group: str, key: str, value: Any, *, ttl: float | None = None) -> None:
        """``set``, and record ``key`` in ``group`` (a prefix of ``key``) for ``clear_group``: one round
        trip. The record lives as long as the group's longest-lived entry."""
        await self._set(key, value, ttl, None if self._cluster else group)

    async def _set(self, key: str, value: Any, ttl: float | None, group: str | None) -> None:
        if not self._use_redis():
            if self.on_backend_error == "local":
                self._local.set_nowait(key, value, ttl=ttl)  # (the fallback is cleared by prefix: no record)
            return
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        px = max(1, math.ceil(ttl * 1000)) if ttl is not None else None
        try:
            if group is None:
                await self._run(lambda: self.client.set(key, data, px=px))
            else:
                script = self._scripts["group_set"]
                await self._run(lambda: script(keys=[key, group], args=[data, px or 0]))
        except _UNREACHABLE as error:
            self._failed(error)
            if self.on_backend_error == "local":
                self._local.set_nowait(key, value, ttl=ttl)
            return
        except RedisError as error:
            raise BackendError(f"Redis SET failed: {error}") from error
        self._succeeded()

    async def delete(self, key: str) -> None:
        self._local.delete_nowait(key)
        try:
            await self._run(lambda: self.client.delete(key))
        except _UNREACHABLE as error:
            self._failed(error)
        except RedisError as error:
            raise BackendError(f"Redis DEL failed: {error}") from error

    async def clear(self, prefix: str = "") -> None:
        """Remove the keys under ``prefix`` — with SCAN and UNLINK, batch by batch; never KEYS or FLUSHDB."""
        self._local.clear_nowait(prefix)
        pattern = _glob_escape(prefix) + "*"
        try:
            batch: list[Any] = []
            async for key in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    await self.client.unlink(*batch)
                    batch.clear()
            if batch:
                await self.client.unlink(*batch)
        except _UNREACHABLE as error:
            self._failed(error)
            raise BackendError(f"Redis is unreachable; {prefix!r} was not cleared") from error
        except RedisError as error:
            raise BackendError(f"Redis SCAN/UNLINK failed: {error}") from error

    async def clear_group(self, group: str) -> None:
        """Remove the keys stored with ``set_in_group(group, ...)``, and their record: a round trip per
        ``_GROUP_BATCH`` of them, whatever else the database holds.

        Each key leaves the record in the same step as its entry leaves the store, so an entry stored
        meanwhile is either removed or stays recorded for the next clear; every entry stored before
        the call is gone when it returns. During an outage the local fallback is cleared and
        :class:`BackendError` raised, as ``clear`` does."""
        if self._cluster:
            await self.clear(group)  # (a group is a prefix of its keys)
            return
        self._local.clear_nowait(group)
        script = self._scripts["group_clear"]
        try:
            while await self._run(lambda: script(keys=[group], args=[_GROUP_BATCH])) == _GROUP_BATCH:
                pass
        except _UNREACHABLE as error:
            self._failed(error)
            raise BackendError(f"Redis is unreachable; {group!r} was not cleared") from error
        except RedisError as error:
            raise BackendError(f"Redis could not clear the group {group!r}: {error}") from error

    # -- rate limiting --------------------------------------------------------------------------
    async def acquire(self, key: str, algorithm: RateLimitAlgorithm, cost: int = 1) -> Decision:
        if not self._use_redis():
            return self._fallback_decision(key, algorithm, cost)
        args: list[Any] = [algorithm.quota, algorithm.duration, cost]
        if algorithm.name == "leaky_bucket":
            args.append(algorithm.bucket_size)  # type: ignore[attr-defined]
        try:
            reply = await self._evalsha(algorithm.name, key, args)
        except _UNREACHABLE as error:
            self._failed(error)
            return self._fallback_decision(key, algorithm, cost)
        except RedisError as error:
            raise BackendError(f"Redis rate-limit script {algorithm.name} failed: {error}") from error
        self._succeeded()
        if type(reply) is int:  # the sliding window's admission: remaining only; the window resets in full
            return Decision(True, algorithm.quota, reply, algorithm.duration)
        allowed, remaining, reset_after, retry_after, delay = reply
        return Decision(
            bool(allowed), algorithm.quota, int(remaining), float(reset_after), float(retry_after), float(delay)
        )

    def _fallback_decision(self, key: str, algorithm: RateLimitAlgorithm, cost: int) -> Decision:
        if self.on_backend_error == "local":
            return self._local.acquire_nowait(key, algorithm, cost)
        if self.on_backend_error == "allow":
            return Decision(True, algorithm.quota, algorithm.quota, 0.0)
        return Decision(False, algorithm.quota, 0, self.retry_interval, self.retry_interval)

    # -- locks (single flight across processes) ---------------------------------------------------
    async def lock(self, key: str, ttl: float) -> str | None:
        """Take the lock ``key`` for at most ``ttl`` seconds; its token, or ``None`` if someone holds
        it. During an outage every caller gets a (local, meaningless) token: nobody waits on Redis."""
        token = secrets.token_hex(16)
        if not self._use_redis():
            return token
        try:
            px = max(1, math.ceil(ttl * 1000))
            taken = await self._run(lambda: self.client.set(key, token, nx=True, px=px))
        except _UNREACHABLE as error:
            self._failed(error)
            return token
        self._succeeded()
        return token if taken else None

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if it is still ours (it may have expired and been taken by another). During
        an outage the lock is left to expire: Redis is not tried more often than ``retry_interval``."""
        if not self.available:
            return
        script = self._scripts["unlock"]
        try:
            await self._run(lambda: script(keys=[key], args=[token]))
        except _UNREACHABLE as error:
            self._failed(error)

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
        await self._local.close()
