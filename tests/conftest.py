"""Fixtures shared by Premier's tests."""

from __future__ import annotations

import pytest

from premier.providers import AsyncInMemoryCache


class FakeClock:
    """A clock for tests: ``clock()`` returns the current fake time in seconds; nothing moves it but
    :meth:`advance` and :meth:`set`, so windows, buckets and breakers are tested without sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def set(self, now: float) -> float:
        self.now = float(now)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    # A round start (a multiple of every window length the tests use) keeps fixed-window edges exact.
    return FakeClock(1_000_000.0)


@pytest.fixture
def provider(clock: FakeClock) -> AsyncInMemoryCache:
    """An in-memory provider running on the fake clock."""
    return AsyncInMemoryCache(clock=clock)
