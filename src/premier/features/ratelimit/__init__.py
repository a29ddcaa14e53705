"""Rate limiting: four algorithms (one module each, pure logic over a clock) and the feature that runs
them in a provider."""

from premier.features.ratelimit.algorithm import Decision, RateLimitAlgorithm
from premier.features.ratelimit.fixed_window import FixedWindow
from premier.features.ratelimit.leaky_bucket import LeakyBucket
from premier.features.ratelimit.limiter import RateLimiter, make_algorithm, rate_limit
from premier.features.ratelimit.sliding_window import SlidingWindow
from premier.features.ratelimit.token_bucket import TokenBucket

__all__ = [
    "Decision",
    "FixedWindow",
    "LeakyBucket",
    "RateLimitAlgorithm",
    "RateLimiter",
    "SlidingWindow",
    "TokenBucket",
    "make_algorithm",
    "rate_limit",
]
