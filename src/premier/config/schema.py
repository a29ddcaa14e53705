"""The configuration schema: frozen dataclasses, one per section of ``gateway.yaml``.

Every field's type, default and constraints live here and nowhere else; ``loader.py`` reads them to
validate input, so a new field is one line in this module. Constraints are small functions returning an
error message (or ``None``), attached with :func:`_field`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "ALGORITHMS",
    "FEATURE_NAMES",
    "CacheConfig",
    "CircuitBreakerConfig",
    "DashboardConfig",
    "FeaturesConfig",
    "GatewayConfig",
    "HealthCheckConfig",
    "MessageRateConfig",
    "MonitoringConfig",
    "PassiveHealthConfig",
    "PathConfig",
    "RateLimitConfig",
    "RetryConfig",
    "ServerConfig",
    "StorageConfig",
    "TimeoutConfig",
    "UpstreamConfig",
    "WebSocketConfig",
    "without_password",
]

Algorithm = Literal["fixed_window", "sliding_window", "token_bucket", "leaky_bucket"]
ALGORITHMS: tuple[str, ...] = ("fixed_window", "sliding_window", "token_bucket", "leaky_bucket")
LoadBalancing = Literal["round_robin", "weighted_round_robin", "least_connections"]

Check = Callable[[Any], "str | None"]


def _field(default: Any = MISSING, *checks: Check) -> Any:
    """A dataclass field with validation checks; no default means the field is required."""
    return field(default=default, metadata={"checks": checks})


def _positive(value: float) -> str | None:
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def _non_negative(value: float) -> str | None:
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None if value >= 0 else f"must be 0 or greater, got {value!r}"


def _non_negative_each(values: tuple[float, ...] | float) -> str | None:
    items = values if isinstance(values, tuple) else (values,)
    if isinstance(values, tuple) and not values:
        return "must not be an empty list"
    for value in items:
        if not math.isfinite(value):
            return f"waits must be finite numbers, got {value!r}"
        if value < 0:
            return f"waits must be 0 or greater, got {value!r}"
    return None


def _http_error_status(value: int) -> str | None:
    return None if 400 <= value <= 599 else f"must be an HTTP error status between 400 and 599, got {value!r}"


def _http_statuses(values: tuple[int, ...]) -> str | None:
    bad = [v for v in values if not 100 <= v <= 599]
    return f"must be HTTP statuses between 100 and 599, got {bad[0]!r}" if bad else None


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _rate_limit_key(value: str) -> str | None:
    if value in ("client", "global"):
        return None
    if value.startswith("header:") and re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value[7:]):
        return None
    return f"must be 'client', 'global' or 'header:<Header-Name>', got {value!r}"


def resolve_exception(name: str) -> type[BaseException]:
    """The exception class a config names: a built-in (``ConnectionError``) or ``package.module.Class``."""
    import builtins
    import importlib

    module_name, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr) if module_name else getattr(builtins, name)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise ValueError(f"names no importable exception class: {name!r}") from None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(f"is not an exception class: {name!r}")
    return found


def exception_classes(value: Any, path: str) -> tuple[type[BaseException], ...]:
    """A decorator's exception option — a class, a name, or a tuple or list of them — as classes; a
    :class:`~premier.errors.ConfigError` naming ``path`` for anything else."""
    from premier.errors import ConfigError, ConfigIssue

    found: list[type[BaseException]] = []
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(item, str):
            try:
                item = resolve_exception(item)
            except ValueError as exc:
                raise ConfigError(ConfigIssue(path, str(exc))) from None
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigError(ConfigIssue(path, f"must be exception classes (or their names), got {item!r}"))
        found.append(item)
    return tuple(found)


def _exception_names(values: tuple[str, ...]) -> str | None:
    for name in values:
        try:
            resolve_exception(name)
        except ValueError as exc:
            return str(exc)
    return None


def without_password(url: str) -> str:
    """``url`` (or a text holding URLs) as a message may show it: each password replaced by ``***``."""
    return re.sub(r"(//[^/@:\s]*:)[^/\s]*@", r"\1***@", url)  # (greedy: a password may hold an @)


def _server_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        if "@" in value:  # (it may hold credentials its parser could not tell apart: not shown)
            return "is not a valid URL (it holds credentials, so it is not shown)"
        return f"is not a valid URL ({exc}): {value!r}"
    if parts.username is not None or parts.password is not None:
        # (never sent to the backend, and the URL is shown in 502 answers, logs and metrics' labels)
        return f"must not hold credentials (user:password@): the gateway does not send them, got {without_password(value)!r}"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {value!r}"
    if not parts.hostname:
        return f"must name a host, got {value!r}"
    if parts.query or parts.fragment:
        return f"must not have a query or fragment, got {value!r}"
    if port == 0:
        return f"must not use port 0, got {value!r}"
    return None


def _storage_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        if "@" in value:  # (it may hold credentials its parser could not tell apart: not shown)
            return "is not a valid URL (it holds credentials, so it is not shown)"
        return f"is not a valid URL ({exc}): {value!r}"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"must be a redis://, rediss:// or unix:// URL, got {without_password(value)!r}"
    if parts.scheme == "unix":
        return None if parts.path else f"must name a socket path, got {without_password(value)!r}"
    if not parts.hostname:
        return f"must name a host, got {without_password(value)!r}"
    if parts.path.strip("/") and not parts.path[1:].isdigit():
        # redis-py would silently use database 0 for anything else
        return f"must end with a database number (redis://host:port/0), got {without_password(value)!r}"
    return None


def _ratio(value: float) -> str | None:
    return None if 0 < value <= 1 else f"must be greater than 0 and at most 1, got {value!r}"


def _path_prefix(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must start with '/', got {value!r}"
    if any(c in value for c in "?#*") or any(ord(c) <= 32 for c in value):
        return f"must be a literal path (no '?', '#', '*' or spaces), got {value!r}"
    return None


def _ip_networks(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"must be IP addresses or CIDR networks, got {value!r}"
    return None


def _pattern(value: str) -> str | None:
    from premier.asgi.router import compile_pattern  # (a light module: no ASGI server is imported)

    if not value:
        return "must not be empty"
    if not value.startswith(("^", "/", "*")):
        return f"a glob pattern must start with '/' or '*' (or use '^' for a regular expression), got {value!r}"
    try:
        compile_pattern(value)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        kind = "regular expression" if value.startswith("^") else "glob pattern (a {name} used twice?)"
        return f"is not a valid {kind} ({exc}): {value!r}"
    return None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    expire_s: float | None = _field(None, _positive)
    """Seconds an entry stays fresh; ``None`` keeps it until evicted (or the response's own max-age)."""
    cache_key: str | None = _field(None, _non_empty)
    """A ``{name}`` template filled from path parameters and the query (gateway) or arguments (decorator)."""
    max_entry_bytes: int = _field(1024 * 1024, _positive)
    """Gateway: responses with larger bodies stream through without being stored."""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    quota: int = _field(MISSING, _positive)
    duration: float = _field(MISSING, _positive)
    algorithm: Algorithm = "fixed_window"
    bucket_size: int | None = _field(None, _positive)
    """``leaky_bucket`` only: how many calls may wait for their turn (default: ``quota``)."""
    error_status: int = _field(429, _http_error_status)
    error_message: str = "Rate limit exceeded"
    key: str = _field("client", _rate_limit_key)
    """Whose counter a request uses: ``client`` (address), ``global`` or ``header:<Header-Name>``."""


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    seconds: float = _field(MISSING, _positive)
    error_status: int = _field(504, _http_error_status)
    error_message: str = "Request timeout"


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = _field(3, _positive)
    wait: float | tuple[float, ...] = _field(1.0, _non_negative_each)
    """Seconds between attempts: one number, or a list whose last value repeats."""
    exceptions: tuple[str, ...] = _field(("Exception",), _exception_names)
    """Exception class names (built-in, or ``package.module.Class``) that trigger a retry."""
    retry_on_status: tuple[int, ...] = _field((502, 503, 504), _http_statuses)
    """Gateway: response statuses that count as a failed attempt."""
    max_body_bytes: int = _field(1024 * 1024, _non_negative)
    """Gateway: the largest request body buffered for replay; larger requests are sent once."""


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    failure_threshold: int = _field(5, _positive)
    recovery_timeout: float = _field(60.0, _positive)
    half_open_max_calls: int = _field(1, _positive)
    expected_exception: str = _field("Exception", lambda name: _exception_names((name,)))
    shared: bool = False
    """Gateway with ``storage``: when one process opens the circuit, every process opens it (within
    a quarter of a second); each still counts its own failures."""


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    log_threshold: float = _field(0.1, _non_negative)


@dataclass(frozen=True, slots=True)
class MessageRateConfig:
    quota: int = _field(MISSING, _positive)
    duration: float = _field(MISSING, _positive)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """WebSocket connections of a path (connection attempts count against its ``rate_limit``)."""

    message_rate: MessageRateConfig | None = None
    """At most ``quota`` messages from the client per ``duration`` seconds, per connection; beyond it the
    connection is closed with code 1008."""
    idle_timeout: float | None = _field(None, _positive)
    """Seconds without a message either way after which the connection is closed (code 1001)."""
    max_message_bytes: int = _field(1024 * 1024, _positive)
    """Larger messages close the connection with code 1009."""


FEATURE_NAMES: tuple[str, ...] = (
    "cache", "rate_limit", "timeout", "retry", "circuit_breaker", "monitoring", "websocket",
)


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """The features of one path (or the defaults). A feature written as ``null`` is in ``disabled``."""

    cache: CacheConfig | None = None
    rate_limit: RateLimitConfig | None = None
    timeout: TimeoutConfig | None = None
    retry: RetryConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    monitoring: MonitoringConfig | None = None
    websocket: WebSocketConfig | None = None
    disabled: frozenset[str] = frozenset()

    def merged_over(self, defaults: FeaturesConfig | None) -> FeaturesConfig:
        """This path's features on top of ``defaults``: a feature set here replaces the default one,
        a feature set to ``null`` here switches the default off."""
        if defaults is None:
            return self
        values: dict[str, Any] = {
            name: None if name in self.disabled else (getattr(self, name) or getattr(defaults, name))
            for name in FEATURE_NAMES
        }
        return FeaturesConfig(**values)

    def enabled(self) -> dict[str, Any]:
        return {name: value for name in FEATURE_NAMES if (value := getattr(self, name)) is not None}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A backend of standalone mode, written as a URL or as ``{url, weight}``."""

    url: str = _field(MISSING, _server_url)
    weight: int = _field(1, _positive)
    """Its share of requests relative to the other servers of its list."""


@dataclass(frozen=True, slots=True)
class PathConfig:
    pattern: str = _field(MISSING, _pattern)
    """A glob (``*`` any run of characters, ``?`` one) or, starting with ``^``, a regular expression."""
    features: FeaturesConfig = FeaturesConfig()
    servers: tuple[ServerConfig, ...] = ()
    """Standalone mode: this path's backends, instead of the top-level ``servers``."""
    strip_prefix: str | None = _field(None, _path_prefix)
    """Standalone mode: removed from the start of the path before it is sent to a backend."""


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active health checks: every ``interval`` seconds each backend gets ``GET path``; a 2xx or 3xx
    answer within ``timeout`` is a pass."""

    path: str = _field("/health", _path_prefix)
    interval: float = _field(5.0, _positive)
    timeout: float = _field(2.0, _positive)
    unhealthy_threshold: int = _field(2, _positive)
    """Consecutive failed checks that take a backend out of the rotation."""
    healthy_threshold: int = _field(1, _positive)
    """Consecutive passed checks that bring it back."""


@dataclass(frozen=True, slots=True)
class PassiveHealthConfig:
    """A circuit breaker per backend, fed by real traffic. A failure is a refused, reset or timed-out
    connection or a 502/503/504 answer. ``failure_threshold`` consecutive failures, or a failure ratio of
    ``failure_ratio`` over the last ``window`` seconds (once ``min_requests`` were seen), take the
    backend out of the rotation; after ``recovery_timeout`` seconds one request probes it, and a
    success brings it back."""

    failure_threshold: int = _field(3, _positive)
    failure_ratio: float = _field(0.5, _ratio)
    window: float = _field(10.0, _positive)
    min_requests: int = _field(20, _positive)
    recovery_timeout: float = _field(10.0, _positive)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Standalone mode: how the gateway talks to its backends."""

    load_balancing: LoadBalancing = "round_robin"
    """``round_robin`` (the default) and ``weighted_round_robin`` both honour server weights, spreading
    each server's turns evenly (equal weights: plain rotation); ``least_connections`` picks the server
    with the fewest requests in flight per unit of weight."""
    connect_timeout: float = _field(5.0, _positive)
    """Seconds to open a connection to a backend; past it the next backend is tried."""
    read_timeout: float = _field(60.0, _positive)
    """Seconds to wait for the response's head and then between any two reads of its body; also the
    longest pause in a client's request body before the gateway answers 408."""
    max_idle_connections: int = _field(256, _positive)
    """Keep-alive connections kept open per backend between requests."""
    idle_timeout: float = _field(4.0, _positive)
    """Seconds an idle keep-alive connection is kept before it is closed. Keep it below the backends'
    own keep-alive timeout (uvicorn's, Node's and Apache's is 5 s): a request that cannot be replayed
    (a POST) on a connection the backend closes at that very moment can only be answered 502."""
    preserve_host: bool = False
    """Send the client's ``Host`` to the backend instead of the backend's own host and port."""
    health_check: HealthCheckConfig | None = None
    passive_health: PassiveHealthConfig = PassiveHealthConfig()


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where shared state lives. Without this section, in this process's memory."""

    url: str = _field(MISSING, _storage_url)
    """``redis://host:port/db`` (or ``rediss://``, ``unix://``): Redis shared by every gateway process."""
    on_backend_error: Literal["local", "allow", "deny"] = "local"
    """While Redis is unreachable: keep limiting and caching in memory (``local``), admit everything
    (``allow``) or reject rate-limited requests (``deny``)."""
    timeout: float = _field(0.5, _positive)
    """Seconds allowed for connecting to Redis and for each command."""


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The dashboard (live statistics, configuration editing) and the Prometheus ``/metrics`` endpoint."""

    path: str = _field("/premier/dashboard", _path_prefix)
    """Where the dashboard's page and API are served."""
    metrics_path: str | None = _field("/metrics", _path_prefix)
    """Where Prometheus metrics are served (``null``: nowhere)."""
    token: str | None = _field(None, _non_empty)
    """The bearer token the dashboard, its API and the metrics require (e.g. ``${PREMIER_DASHBOARD_TOKEN}``)."""
    open_on_loopback: bool = False
    """Requests to a loopback-bound gateway from a loopback client need no token."""
    save_config: bool = False
    """Edits applied from the dashboard may be written back to the configuration file (a backup is kept)."""
    slow_threshold: float = _field(0.5, _non_negative)
    """Requests at least this slow (seconds) are listed among the recent slow requests."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole, validated configuration. Immutable: reloading builds a new one.

    Build one with :meth:`from_file`, :meth:`from_yaml` or :meth:`from_dict`; each raises
    :class:`~premier.errors.ConfigError` naming every bad field.
    """

    keyspace: str = _field("asgi-gateway", _non_empty)
    servers: tuple[ServerConfig, ...] = ()
    """Standalone mode: the backends that requests are proxied to."""
    upstream: UpstreamConfig = UpstreamConfig()
    paths: tuple[PathConfig, ...] = ()
    default_features: FeaturesConfig | None = None
    trusted_proxies: tuple[str, ...] = _field((), _ip_networks)
    """Addresses or networks whose ``X-Forwarded-For`` is believed when finding the client address."""
    storage: StorageConfig | None = None
    dashboard: DashboardConfig | None = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> GatewayConfig:
        """From a mapping shaped like the YAML: ``{"premier": {...}}``."""
        from premier.config.loader import load_dict

        return load_dict(data, source=source)

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> GatewayConfig:
        from premier.config.loader import load_yaml

        return load_yaml(text, source=source)

    @classmethod
    def from_file(cls, path: Any) -> GatewayConfig:
        from premier.config.loader import load_file

        return load_file(path)

    def features_for(self, path: PathConfig | None) -> FeaturesConfig:
        """The effective features of ``path`` (``None``: a request no path matched)."""
        if path is None:
            return self.default_features or FeaturesConfig()
        return path.features.merged_over(self.default_features)
