"""Premier: an API gateway toolkit — decorators, ASGI middleware and a standalone gateway, all driven
by one policy engine and one YAML configuration.

Heavy dependencies (uvicorn, redis) are imported only by the modules that need them.
"""

# The modules `premier.retry` and `premier.timer` are imported first: importing a submodule binds it as
# an attribute of the package, which would otherwise replace the `retry` decorator bound below.
import premier.retry
import premier.timer  # noqa: F401
from premier.config import GatewayConfig
from premier.errors import (
    BackendError,
    CircuitOpenError,
    ConfigError,
    PremierError,
    PremierTimeoutError,
    RateLimitExceeded,
)
from premier.features.cache import cache
from premier.features.circuit_breaker import CircuitBreaker, circuit_breaker
from premier.features.monitoring import timeit
from premier.features.ratelimit import Decision, RateLimiter, rate_limit
from premier.features.retry import retry
from premier.features.timeout import timeout
from premier.providers import AsyncInMemoryCache, CacheProvider

__version__ = "0.5.0.dev0"

__all__ = [
    "AsyncInMemoryCache",
    "BackendError",
    "CacheProvider",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "Decision",
    "GatewayConfig",
    "PremierError",
    "PremierTimeoutError",
    "RateLimitExceeded",
    "RateLimiter",
    "cache",
    "circuit_breaker",
    "rate_limit",
    "retry",
    "timeit",
    "timeout",
]
