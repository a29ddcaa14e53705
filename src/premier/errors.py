"""Premier's one exception tree.

::

    PremierError
    ├── ConfigError            (also ValueError)   a configuration names a bad field
    ├── RateLimitExceeded                          a call or request is over its quota
    ├── CircuitOpenError                           the circuit breaker is refusing calls
    ├── PremierTimeoutError    (also TimeoutError) a call ran past its deadline
    └── BackendError           (also ConnectionError) a storage backend (Redis, ...) failed

Errors raised by backends (redis, aiohttp) are translated where Premier talks to them, and keep the
original exception as ``__cause__``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BackendError",
    "CircuitOpenError",
    "ConfigError",
    "ConfigIssue",
    "PremierError",
    "PremierTimeoutError",
    "RateLimitExceeded",
]


class PremierError(Exception):
    """Root of every exception Premier raises on its own account."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: where (``premier.paths[0].features.rate_limit.quota``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(PremierError, ValueError):
    """A configuration is invalid. ``issues`` lists every problem found, each naming its field."""

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str, *, source: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        lines = [f"  {issue}" for issue in self.issues]
        super().__init__("\n".join([f"{head} ({len(self.issues)} problem{'s' * (len(self.issues) != 1)}):", *lines]))


class RateLimitExceeded(PremierError):
    """Over quota. ``retry_after`` is the number of seconds until a retry can succeed."""

    def __init__(self, message: str = "Rate limit exceeded", *, retry_after: float, key: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.key = key


class CircuitOpenError(PremierError):
    """The circuit is open (or its half-open probes are taken). Retry after ``retry_after`` seconds."""

    def __init__(self, message: str = "Circuit is open", *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PremierTimeoutError(PremierError, TimeoutError):
    """A call ran longer than its ``timeout``. Catchable as the built-in ``TimeoutError``."""

    def __init__(self, message: str = "Timed out", *, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class BackendError(PremierError, ConnectionError):
    """A storage backend could not be reached or failed; the backend's own error is ``__cause__``."""
