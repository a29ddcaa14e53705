"""``from premier.retry import retry``: retry a function while it fails (see :mod:`premier.features.retry`)."""

from premier.features.retry import RetryPolicy, retry

__all__ = ["RetryPolicy", "retry"]
