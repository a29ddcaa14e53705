"""``from premier.timer import timeit, timeout``: time calls, and bound how long they may run."""

from premier.features.monitoring import timeit
from premier.features.timeout import timeout

__all__ = ["timeit", "timeout"]
