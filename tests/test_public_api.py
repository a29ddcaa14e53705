"""The curated public API: exports, import paths, the exception tree, and lazy optional imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import premier
from premier import errors


def test_all_is_sorted_and_every_name_exists():
    assert premier.__all__ == sorted(premier.__all__)
    assert len(set(premier.__all__)) == len(premier.__all__)
    missing = [name for name in premier.__all__ if not hasattr(premier, name)]
    assert missing == []


def test_exports_expected_names():
    expected = {
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
    }
    assert expected <= set(premier.__all__)


@pytest.mark.parametrize(
    "module",
    [
        "premier.errors",
        "premier.config",
        "premier.providers",
        "premier.features.ratelimit",
        "premier.retry",
        "premier.timer",
    ],
)
def test_submodule_all_is_sorted_and_exists(module):
    mod = __import__(module, fromlist=["__all__"])
    assert list(mod.__all__) == sorted(mod.__all__)
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_documented_import_paths():
    from premier.retry import retry
    from premier.timer import timeit, timeout

    assert callable(retry) and callable(timeit) and callable(timeout)
    assert retry is premier.retry
    assert timeout is premier.timeout and timeit is premier.timeit
    from premier.features.retry import retry as feature_retry

    assert retry is feature_retry


def test_retry_stays_the_decorator_after_the_documented_import():
    # Importing the submodule premier.retry must not rebind the package attribute premier.retry (the
    # decorator) to the module.
    code = (
        "import premier\n"
        "from premier.retry import retry\n"  # the documented import path
        "from premier import retry as exported\n"
        "assert exported is retry, exported\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)


def test_exception_tree():
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.PremierTimeoutError, TimeoutError)
    assert issubclass(errors.BackendError, ConnectionError)
    for name in ("ConfigError", "RateLimitExceeded", "CircuitOpenError", "PremierTimeoutError", "BackendError"):
        assert issubclass(getattr(errors, name), errors.PremierError), name
    assert issubclass(errors.PremierError, Exception)
    assert not issubclass(errors.RateLimitExceeded, (ValueError, TimeoutError, ConnectionError))


def test_exceptions_carry_their_details():
    limited = errors.RateLimitExceeded(retry_after=1.5, key="k")
    assert (str(limited), limited.retry_after, limited.key) == ("Rate limit exceeded", 1.5, "k")
    opened = errors.CircuitOpenError(retry_after=3.0)
    assert (str(opened), opened.retry_after) == ("Circuit is open", 3.0)
    timed_out = errors.PremierTimeoutError(seconds=2.0)
    assert (str(timed_out), timed_out.seconds) == ("Timed out", 2.0)


def test_import_premier_does_not_import_optional_dependencies():
    heavy = ["redis", "aiohttp", "uvicorn", "prometheus_client", "httpx", "fastapi", "starlette"]
    code = (
        "import sys, json, premier, premier.retry, premier.timer, premier.config, premier.cli\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout) == []


def test_version():
    assert isinstance(premier.__version__, str) and premier.__version__


def test_package_is_typed():
    from importlib.resources import files

    assert files("premier").joinpath("py.typed").is_file()
