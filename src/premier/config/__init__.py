"""Premier's configuration: a typed, frozen schema and the loaders that validate YAML into it."""

from premier.config.schema import (
    ALGORITHMS,
    CacheConfig,
    CircuitBreakerConfig,
    FeaturesConfig,
    GatewayConfig,
    HealthCheckConfig,
    MonitoringConfig,
    PassiveHealthConfig,
    PathConfig,
    RateLimitConfig,
    RetryConfig,
    ServerConfig,
    StorageConfig,
    TimeoutConfig,
    UpstreamConfig,
)

__all__ = [
    "ALGORITHMS",
    "CacheConfig",
    "CircuitBreakerConfig",
    "FeaturesConfig",
    "GatewayConfig",
    "HealthCheckConfig",
    "MonitoringConfig",
    "PassiveHealthConfig",
    "PathConfig",
    "RateLimitConfig",
    "RetryConfig",
    "ServerConfig",
    "StorageConfig",
    "TimeoutConfig",
    "UpstreamConfig",
]
