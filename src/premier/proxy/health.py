"""Is a backend fit to take requests? Two opinions, both needed for a yes.

- Passive (:class:`BackendHealth`): a circuit breaker fed by the backend's real traffic. Consecutive
  failures, or too high a failure ratio over a recent window, open it; after the recovery time one
  request probes the backend, and its success closes the breaker again.
- Active (:class:`HealthChecker`, optional): a task that sends ``GET health_check.path`` to every
  backend at an interval, taking a backend out after consecutive failed checks and back after passed ones.

Everything that decides takes the time as an argument, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from premier.config.schema import HealthCheckConfig, PassiveHealthConfig
from premier.features.circuit_breaker import CircuitBreaker

if TYPE_CHECKING:
    from premier.proxy.pool import Backend

__all__ = ["BackendHealth", "HealthChecker", "record"]

logger = logging.getLogger("premier")

_BUCKETS = 10  # the failure-ratio window is kept as this many counters: memory stays constant


class BackendHealth:
    """The passive view of one backend, plus the verdict of the active checks (``checks_pass``)."""

    __slots__ = ("_bucket_span", "_buckets", "_current", "breaker", "checks_pass", "config", "fails", "passes")

    def __init__(self, config: PassiveHealthConfig, name: str) -> None:
        self.config = config
        self.breaker = CircuitBreaker(config.failure_threshold, config.recovery_timeout, name=f"backend {name}")
        self.checks_pass = True
        self.passes = self.fails = 0  # consecutive active-check results
        self._bucket_span = config.window / _BUCKETS
        self._buckets = [[-1, 0, 0] for _ in range(_BUCKETS)]  # [bucket number, requests, failures]
        self._current = self._buckets[0]

    def available(self, now: float) -> bool:
        """Whether the balancer may choose this backend now (counts nothing)."""
        if not self.checks_pass:
            return False
        breaker = self.breaker
        if breaker._state == "closed":
            return True
        return breaker.state(now) == "half_open" and breaker.probes < breaker.half_open_max_calls

    def admit(self, now: float) -> None:
        """The balancer chose this backend: a half-open breaker counts its probe."""
        if self.breaker._state != "closed":
            self.breaker.before_call(now)

    def responded(self, now: float, status: int) -> None:
        """The backend answered with ``status``: 502, 503 and 504 count as failures."""
        if 502 <= status <= 504:
            self.failure(now)
        else:
            self.success(now)

    def success(self, now: float) -> None:
        self._count(now, 0)
        if self.breaker._state != "closed" or self.breaker.failures:
            self.breaker.on_success(now)

    def failure(self, now: float) -> None:
        requests, failures = self._count(now, 1)
        self.breaker.on_failure(now)
        config = self.config
        if self.breaker._state == "closed" and requests >= config.min_requests and failures >= config.failure_ratio * requests:
            logger.warning(
                "backend %s: %d of its last %d requests failed (%.0f s window)",
                self.breaker.name.removeprefix("backend "), failures, requests, config.window,
            )
            self.breaker.trip(now)

    def abandoned(self) -> None:
        self.breaker.on_abandoned()

    def _count(self, now: float, failed: int) -> tuple[int, int]:
        """Adds one result; returns the requests and failures within the window."""
        number = math.floor(now / self._bucket_span)
        bucket = self._current
        if bucket[0] != number:
            bucket = self._current = self._buckets[number % _BUCKETS]
            bucket[0], bucket[1], bucket[2] = number, 0, 0
        bucket[1] += 1
        bucket[2] += failed
        if not failed:
            return 0, 0
        oldest = number - _BUCKETS + 1
        requests = failures = 0
        for n, r, f in self._buckets:
            if n >= oldest:
                requests += r
                failures += f
        return requests, failures


class HealthChecker:
    """Checks ``backends`` every ``config.interval`` seconds with ``probe(backend, path, timeout)``,
    which returns the answer's status (an exception or a timeout is a failed check)."""

    def __init__(
        self, backends: Sequence[Backend], config: HealthCheckConfig, probe: Callable[[Backend, str, float], Awaitable[int]]
    ) -> None:
        self.backends = backends
        self.config = config
        self.probe = probe
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="premier-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(backend) for backend in self.backends))

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.config.interval)

    async def _check(self, backend: Backend) -> None:
        config = self.config
        try:
            status = await asyncio.wait_for(self.probe(backend, config.path, config.timeout), config.timeout)
            passed, why = 200 <= status < 400, f"status {status}"
        except (OSError, asyncio.TimeoutError) as exc:
            passed, why = False, str(exc) or type(exc).__name__
        record(backend.health, passed, config, backend.url, why)


def record(health: BackendHealth, passed: bool, config: HealthCheckConfig, url: str, why: str = "") -> None:
    """One active check's result: flips ``checks_pass`` after enough consecutive results."""
    if passed:
        health.passes, health.fails = health.passes + 1, 0
        if not health.checks_pass and health.passes >= config.healthy_threshold:
            health.checks_pass = True
            logger.info("backend %s: health check passed, back in rotation", url)
    else:
        health.passes, health.fails = 0, health.fails + 1
        if health.checks_pass and health.fails >= config.unhealthy_threshold:
            health.checks_pass = False
            logger.warning("backend %s: health check failed %d times (%s), out of rotation", url, health.fails, why)
