"""The four rate-limit algorithms, driven directly with chosen times (no clock, no provider).

Example tests pin exact edges and numbers; property tests (hypothesis) check each algorithm's invariant
for arbitrary non-decreasing call times. Times in the property tests are multiples of 1/64 s and windows
multiples of 1/4 s, so every window edge is exact in binary floating point.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from premier.features.ratelimit import Decision, FixedWindow, LeakyBucket, SlidingWindow, TokenBucket


def run(algorithm, state, times, cost=1):
    return [algorithm.acquire(state, t, cost) for t in times]


def allowed(decisions):
    return [d.allowed for d in decisions]


# ---------------------------------------------------------------------------------------------------
# fixed window


class TestFixedWindow:
    def test_burst_up_to_quota_then_rejected_until_window_end(self):
        algo = FixedWindow(quota=3, duration=10)
        state = algo.new_state()
        decisions = run(algo, state, [100.0, 100.0, 100.0, 100.0])
        assert allowed(decisions) == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert all(d.limit == 3 for d in decisions)
        assert decisions[0].reset_after == 10
        assert decisions[3].retry_after == 10
        assert decisions[0].retry_after == 0 and decisions[0].delay == 0

    def test_windows_are_aligned_to_multiples_of_duration(self):
        algo = FixedWindow(quota=1, duration=10)
        state = algo.new_state()
        first = algo.acquire(state, 105.0)
        assert first.allowed
        assert first.reset_after == pytest.approx(5.0)  # the window is [100, 110), not [105, 115)
        late = algo.acquire(state, 109.5)
        assert not late.allowed
        assert late.retry_after == pytest.approx(0.5)
        assert late.reset_after == pytest.approx(0.5)

    def test_call_exactly_at_the_edge_starts_a_new_window(self):
        algo = FixedWindow(quota=2, duration=10)
        state = algo.new_state()
        assert allowed(run(algo, state, [100.0, 109.999, 109.999])) == [True, True, False]
        at_edge = algo.acquire(state, 110.0)
        assert at_edge.allowed
        assert at_edge.remaining == 1
        assert at_edge.reset_after == 10

    def test_burst_of_twice_the_quota_across_an_edge(self):
        # The documented weakness of fixed windows: quota just before and quota just after an edge.
        algo = FixedWindow(quota=3, duration=10)
        state = algo.new_state()
        decisions = run(algo, state, [109.9] * 3 + [110.0] * 3 + [110.0])
        assert allowed(decisions) == [True] * 6 + [False]

    def test_rejections_do_not_use_quota(self):
        algo = FixedWindow(quota=2, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0, 0.0] + [1.0] * 50)
        assert algo.acquire(state, 10.0).remaining == 1

    def test_state_expires_at_window_end(self):
        algo = FixedWindow(quota=2, duration=10)
        state = algo.new_state()
        algo.acquire(state, 123.0)
        assert state[0] == 130.0  # a store may forget the key from then on

    def test_cost_above_what_is_left_is_rejected_without_spending(self):
        algo = FixedWindow(quota=3, duration=10)
        state = algo.new_state()
        algo.acquire(state, 0.0, cost=2)
        big = algo.acquire(state, 1.0, cost=2)
        assert not big.allowed
        assert big.remaining == 1
        assert algo.acquire(state, 1.0, cost=1).allowed


# ---------------------------------------------------------------------------------------------------
# sliding window


class TestSlidingWindow:
    def test_quota_in_any_window_and_exact_retry_after(self):
        algo = SlidingWindow(quota=3, duration=10)
        state = algo.new_state()
        decisions = run(algo, state, [0.0, 1.0, 2.0])
        assert allowed(decisions) == [True, True, True]
        assert [d.remaining for d in decisions] == [2, 1, 0]
        assert all(d.reset_after == 10 for d in decisions)
        rejected = algo.acquire(state, 9.9)
        assert not rejected.allowed
        assert rejected.remaining == 0
        assert rejected.retry_after == pytest.approx(0.1)  # the call at 0 leaves the window at 10
        assert rejected.reset_after == pytest.approx(2.1)  # the call at 2 leaves it at 12

    def test_window_is_half_open_a_call_duration_old_no_longer_counts(self):
        algo = SlidingWindow(quota=3, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0, 1.0, 2.0])
        assert algo.acquire(state, 10.0).allowed  # (0, 10] holds 1, 2 and now 10
        still_full = algo.acquire(state, 10.5)
        assert not still_full.allowed
        assert still_full.retry_after == pytest.approx(0.5)
        assert algo.acquire(state, 11.0).allowed

    def test_genuinely_sliding_no_burst_across_a_boundary(self):
        algo = SlidingWindow(quota=3, duration=10)
        state = algo.new_state()
        run(algo, state, [9.75, 9.75, 9.75])
        # A fixed window would start afresh at 10; the sliding window holds until 19.75.
        assert allowed(run(algo, state, [10.0, 15.0, 19.5])) == [False, False, False]
        assert allowed(run(algo, state, [19.75, 19.75, 19.75, 19.75])) == [True, True, True, False]

    def test_rejections_do_not_use_quota(self):
        algo = SlidingWindow(quota=2, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0, 5.0] + [6.0] * 20)
        decision = algo.acquire(state, 10.0)
        assert decision.allowed
        assert decision.remaining == 0

    def test_idle_key_gets_its_full_quota_back(self):
        algo = SlidingWindow(quota=4, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0] * 4)
        decisions = run(algo, state, [100.0] * 5)
        assert allowed(decisions) == [True] * 4 + [False]
        assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]

    def test_remaining_counts_admissions_that_left_the_window(self):
        algo = SlidingWindow(quota=3, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0, 1.0, 2.0])
        assert algo.acquire(state, 11.5).remaining == 1  # 0 and 1 left; one of their slots used now

    def test_cost_larger_than_quota_can_never_succeed(self):
        algo = SlidingWindow(quota=3, duration=10)
        decision = algo.acquire(algo.new_state(), 0.0, cost=4)
        assert not decision.allowed
        assert math.isinf(decision.retry_after)

    def test_cost_waits_for_enough_slots(self):
        algo = SlidingWindow(quota=3, duration=10)
        state = algo.new_state()
        run(algo, state, [0.0, 1.0, 2.0])
        decision = algo.acquire(state, 5.0, cost=2)
        assert not decision.allowed
        assert decision.retry_after == pytest.approx(6.0)  # 0 and 1 must both leave: at 11
        assert algo.acquire(state, 11.0, cost=2).allowed

    def test_resize_to_a_larger_quota_keeps_recent_admissions(self):
        old = SlidingWindow(quota=3, duration=10)
        state = old.new_state()
        run(old, state, [0.0, 1.0, 2.0])
        new = SlidingWindow(quota=5, duration=10)
        decisions = run(new, state, [3.0, 4.0, 5.0])
        assert allowed(decisions) == [True, True, False]
        assert decisions[2].retry_after == pytest.approx(5.0)  # the admission at 0 leaves at 10

    def test_resize_to_a_smaller_quota_keeps_the_newest_admissions(self):
        old = SlidingWindow(quota=3, duration=10)
        state = old.new_state()
        run(old, state, [0.0, 1.0, 2.0])
        new = SlidingWindow(quota=2, duration=10)
        rejected = new.acquire(state, 3.0)
        assert not rejected.allowed
        assert rejected.retry_after == pytest.approx(8.0)  # kept 1 and 2; 1 leaves at 11
        assert allowed(run(new, state, [10.5, 11.0, 11.5, 12.0])) == [False, True, False, True]

    def test_resize_of_a_fresh_state(self):
        state = SlidingWindow(quota=2, duration=10).new_state()
        new = SlidingWindow(quota=4, duration=10)
        assert allowed(run(new, state, [0.0] * 5)) == [True] * 4 + [False]


# ---------------------------------------------------------------------------------------------------
# token bucket


class TestTokenBucket:
    def test_burst_of_quota_then_steady_rate(self):
        algo = TokenBucket(quota=3, duration=2)  # 1.5 tokens per second
        state = algo.new_state()
        decisions = run(algo, state, [0.0] * 4)
        assert allowed(decisions) == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert decisions[2].reset_after == pytest.approx(2.0)
        assert decisions[3].retry_after == pytest.approx(2 / 3)

    def test_fractional_tokens_half_a_token_is_not_a_call(self):
        algo = TokenBucket(quota=3, duration=2)
        state = algo.new_state()
        run(algo, state, [0.0] * 3)
        half = algo.acquire(state, 1 / 3)
        assert not half.allowed
        assert half.remaining == 0
        assert half.retry_after == pytest.approx(1 / 3)  # the other half token takes 1/3 s more
        assert half.reset_after == pytest.approx(2.5 / 1.5)
        whole = algo.acquire(state, 2 / 3)
        assert whole.allowed
        assert not algo.acquire(state, 2 / 3).allowed

    def test_rejected_calls_keep_the_refill_progress(self):
        algo = TokenBucket(quota=3, duration=2)
        state = algo.new_state()
        run(algo, state, [0.0] * 3)
        assert allowed(run(algo, state, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])) == [False] * 6
        assert algo.acquire(state, 2 / 3).allowed

    def test_idle_refill_is_capped_at_quota(self):
        algo = TokenBucket(quota=3, duration=2)
        state = algo.new_state()
        run(algo, state, [0.0] * 3)
        assert allowed(run(algo, state, [1000.0] * 4)) == [True, True, True, False]

    def test_partial_idle_refill(self):
        algo = TokenBucket(quota=10, duration=10)  # 1 token per second
        state = algo.new_state()
        run(algo, state, [0.0] * 10)
        decisions = run(algo, state, [3.5] * 4)
        assert allowed(decisions) == [True, True, True, False]
        assert decisions[3].retry_after == pytest.approx(0.5)

    def test_a_clock_stepping_back_adds_no_tokens(self):
        algo = TokenBucket(quota=2, duration=2)
        state = algo.new_state()
        run(algo, state, [10.0, 10.0])
        assert not algo.acquire(state, 9.0).allowed
        assert not algo.acquire(state, 10.5).allowed
        assert algo.acquire(state, 11.0).allowed

    def test_state_expires_when_the_bucket_is_full_again(self):
        algo = TokenBucket(quota=4, duration=2)
        state = algo.new_state()
        run(algo, state, [5.0, 5.0])
        assert state[0] == pytest.approx(6.0)

    def test_cost_above_capacity_can_never_succeed(self):
        algo = TokenBucket(quota=3, duration=2)
        decision = algo.acquire(algo.new_state(), 0.0, cost=4)
        assert not decision.allowed
        assert math.isinf(decision.retry_after)


# ---------------------------------------------------------------------------------------------------
# leaky bucket


class TestLeakyBucket:
    def test_queueing_delays_are_spaced_one_interval_apart(self):
        algo = LeakyBucket(quota=4, duration=2, bucket_size=3)  # one call every 0.5 s
        state = algo.new_state()
        decisions = run(algo, state, [0.0] * 4)
        assert allowed(decisions) == [True] * 4
        assert [d.delay for d in decisions] == pytest.approx([0.0, 0.5, 1.0, 1.5])
        assert [d.remaining for d in decisions] == [3, 2, 1, 0]
        assert [d.reset_after for d in decisions] == pytest.approx([0.5, 1.0, 1.5, 2.0])

    def test_overflow_beyond_bucket_size_is_rejected_with_retry_after(self):
        algo = LeakyBucket(quota=4, duration=2, bucket_size=3)
        state = algo.new_state()
        run(algo, state, [0.0] * 4)
        overflow = algo.acquire(state, 0.0)
        assert not overflow.allowed
        assert overflow.remaining == 0
        assert overflow.retry_after == pytest.approx(0.5)
        assert overflow.reset_after == pytest.approx(2.0)
        later = algo.acquire(state, 0.2)
        assert not later.allowed
        assert later.retry_after == pytest.approx(0.3)
        # Once one queued call has drained, exactly one more fits, at the back of the queue.
        at_retry = algo.acquire(state, 0.5)
        assert at_retry.allowed
        assert at_retry.delay == pytest.approx(1.5)
        assert not algo.acquire(state, 0.5).allowed

    def test_rejections_do_not_join_the_queue(self):
        algo = LeakyBucket(quota=2, duration=1, bucket_size=1)
        state = algo.new_state()
        run(algo, state, [0.0, 0.0] + [0.1] * 10)
        decision = algo.acquire(state, 1.0)
        assert decision.allowed
        assert decision.delay == 0.0

    def test_idle_bucket_lets_a_call_through_at_once(self):
        algo = LeakyBucket(quota=4, duration=2, bucket_size=3)
        state = algo.new_state()
        run(algo, state, [0.0] * 4)
        assert state[0] == pytest.approx(2.0)  # the queue is empty at 2: the key may be forgotten
        decision = algo.acquire(state, 2.0)
        assert decision.allowed and decision.delay == 0.0
        assert decision.remaining == 3

    def test_bucket_size_defaults_to_quota(self):
        algo = LeakyBucket(quota=3, duration=3)
        assert algo.bucket_size == 3
        assert allowed(run(algo, algo.new_state(), [0.0] * 5)) == [True] * 4 + [False]

    def test_fractional_interval(self):
        algo = LeakyBucket(quota=3, duration=2, bucket_size=2)  # one call every 2/3 s
        state = algo.new_state()
        decisions = run(algo, state, [0.0] * 4)
        assert allowed(decisions) == [True, True, True, False]
        assert [d.delay for d in decisions[:3]] == pytest.approx([0.0, 2 / 3, 4 / 3])
        assert decisions[3].retry_after == pytest.approx(2 / 3)


def test_decision_repr_names_its_fields():
    text = repr(Decision(False, 5, 0, 1.5, 0.25))
    assert "allowed=False" in text and "limit=5" in text and "retry_after=0.250" in text


# ---------------------------------------------------------------------------------------------------
# properties

# Call times: cumulative sums of non-negative gaps, in 1/64 s, often zero to produce bursts.
gaps = st.lists(st.one_of(st.just(0), st.integers(0, 64), st.integers(0, 640)), min_size=1, max_size=60)
quotas = st.integers(1, 6)
durations = st.integers(1, 40).map(lambda quarters: quarters / 4)  # 0.25 s .. 10 s


def times_from(gap_list):
    now, times = 0, []
    for gap in gap_list:
        now += gap
        times.append(now / 64)
    return times


@settings(max_examples=200, deadline=None)
@given(gap_list=gaps, quota=quotas, duration=durations)
def test_sliding_window_never_exceeds_quota_in_any_window_and_never_over_rejects(gap_list, quota, duration):
    algo = SlidingWindow(quota, duration)
    state = algo.new_state()
    admitted: list[float] = []
    for t in times_from(gap_list):
        in_window = [a for a in admitted if t - duration < a <= t]
        decision = algo.acquire(state, t)
        if decision.allowed:
            admitted.append(t)
            assert len(in_window) + 1 <= quota
            assert decision.remaining == quota - len(in_window) - 1
        else:
            # Rejected only when the window (t - duration, t] is really full...
            assert len(in_window) == quota
            # ...and retry_after is exactly when its oldest admission leaves it.
            assert decision.retry_after == admitted[-quota] + duration - t
            assert decision.retry_after > 0
    for t in admitted:  # no half-open window ending at any admission holds more than quota
        assert sum(1 for a in admitted if t - duration < a <= t) <= quota


@settings(max_examples=200, deadline=None)
@given(gap_list=gaps, quota=quotas, duration=durations)
def test_fixed_window_never_exceeds_quota_in_an_aligned_window(gap_list, quota, duration):
    algo = FixedWindow(quota, duration)
    state = algo.new_state()
    per_window: dict[int, int] = {}
    for t in times_from(gap_list):
        window = math.floor(Fraction(t) / Fraction(duration))
        decision = algo.acquire(state, t)
        used = per_window.get(window, 0)
        assert decision.allowed == (used < quota)
        if decision.allowed:
            per_window[window] = used + 1
        else:
            assert decision.retry_after == (window + 1) * duration - t
    assert all(count <= quota for count in per_window.values())


@settings(max_examples=200, deadline=None)
@given(gap_list=gaps, quota=quotas, duration=durations)
def test_token_bucket_admits_at_most_burst_plus_rate_times_interval(gap_list, quota, duration):
    algo = TokenBucket(quota, duration)
    state = algo.new_state()
    rate = Fraction(quota) / Fraction(duration)
    tokens, last = Fraction(quota), None  # an exact model of the bucket
    admitted: list[float] = []
    for t in times_from(gap_list):
        if last is not None:
            tokens = min(Fraction(quota), tokens + (Fraction(t) - last) * rate)
        last = Fraction(t)
        expected = tokens >= 1
        decision = algo.acquire(state, t)
        assert decision.allowed == expected
        if expected:
            tokens -= 1
            admitted.append(t)
        else:
            assert decision.retry_after == pytest.approx(float((1 - tokens) / rate))
            assert algo.acquire(list(state), t + decision.retry_after).allowed  # a retry then gets in
    for i, t1 in enumerate(admitted):
        for j in range(i, len(admitted)):
            t2 = admitted[j]
            assert j - i + 1 <= quota + (t2 - t1) * quota / duration + 1e-9


@settings(max_examples=200, deadline=None)
@given(gap_list=gaps, quota=quotas, duration=durations, bucket_size=st.integers(1, 5))
def test_leaky_bucket_spaces_calls_and_bounds_the_queue(gap_list, quota, duration, bucket_size):
    algo = LeakyBucket(quota, duration, bucket_size)
    interval = duration / quota
    state = algo.new_state()
    starts: list[float] = []
    for t in times_from(gap_list):
        waiting_before = sum(1 for s in starts if s > t + 1e-7)
        decision = algo.acquire(state, t)
        if decision.allowed:
            assert 0 <= decision.delay <= bucket_size * interval + 1e-7
            starts.append(t + decision.delay)
            waiting = sum(1 for s in starts if s > t + 1e-7)
            assert waiting <= bucket_size
        else:
            # Rejected only when the queue is full; retry_after is when a place frees up.
            assert waiting_before >= bucket_size
            assert decision.retry_after == pytest.approx(starts[-1] + interval - bucket_size * interval - t)
            assert decision.retry_after > 0
            assert algo.acquire(list(state), t + decision.retry_after).allowed  # a retry then gets in
    for earlier, later in itertools.pairwise(starts):
        assert later - earlier >= interval - 1e-7


def test_sliding_window_memory_follows_traffic_not_quota() -> None:
    # A huge quota with client-chosen keys (e.g. key: header:X-Api-Key) must not allocate `quota`
    # slots per key: 2,000 keys seen once each stay far below a megabyte per key.
    import tracemalloc

    from premier.providers import AsyncInMemoryCache

    provider = AsyncInMemoryCache()
    algorithm = SlidingWindow(quota=10**12, duration=60)
    tracemalloc.start()
    try:
        for i in range(2000):
            assert provider.acquire_nowait(f"client-{i}", algorithm).allowed
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert used < 2000 * 2048  # under 2 KiB per key (it was 800 KB per key at quota 100,000)
