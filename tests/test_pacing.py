"""The pacer, on a fake clock: no second ever sees more than N starts, and the quota is used."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import Counter

import pytest
from helpers import FakeClock

from importer.pacing import AdaptiveRate, Pacer, QuotaShare, paced_rate


async def run_starts(
    pacer: Pacer, clock: FakeClock, count: int, workers: int = 8, work: float = 0.0
) -> list[float]:
    """``count`` starts by ``workers`` tasks; each may 'work' (move the clock) between calls."""
    starts: list[float] = []
    rng = random.Random(1)

    async def worker() -> None:
        while len(starts) < count:
            await pacer.acquire()
            starts.append(clock())
            if work:
                clock.t += rng.uniform(0, work)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return starts


def max_in_sliding_second(starts: list[float]) -> int:
    """The most starts in any half-open window [t, t + 1)."""
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def max_in_clock_second(starts: list[float], phase: float) -> int:
    return max(Counter(math.floor(t - phase) for t in starts).values())


def long_run_rate(starts: list[float]) -> float:
    return (len(starts) - 1) / (starts[-1] - starts[0])


PHASES = (0.0, 0.001, 0.123, 0.5, 0.77, 0.999)


@pytest.mark.parametrize("qps", [1, 3, 10, 50, 2000, 5000])
@pytest.mark.parametrize("overshoot", [0.0, 0.002])
async def test_no_second_sees_more_than_qps_and_the_quota_is_used(qps, overshoot):
    clock = FakeClock(overshoot=overshoot)
    pacer = Pacer(qps, time=clock, sleep=clock.sleep)
    count = max(12, 5 * qps)
    starts = await run_starts(pacer, clock, count, workers=min(64, qps + 1))

    assert len(starts) >= count
    assert max_in_sliding_second(starts) <= qps
    for phase in PHASES:
        assert max_in_clock_second(starts, phase) <= qps
    rate = long_run_rate(starts)
    assert rate <= qps
    if qps >= 50:
        assert rate >= 0.95 * qps
    else:  # small quotas keep half a call per second in reserve (see paced_rate)
        assert rate == pytest.approx(paced_rate(qps), rel=0.03)


@pytest.mark.parametrize("qps", [2000, 5000])
async def test_a_coarse_timer_still_reaches_the_rate(qps):
    """Timers that wake 0-3 ms late: the callers that fell due meanwhile go on the same wakeup."""
    clock = FakeClock(overshoot=0.003)
    pacer = Pacer(qps, time=clock, sleep=clock.sleep)
    starts = await run_starts(pacer, clock, 4 * qps, workers=64)
    assert long_run_rate(starts) >= 0.95 * qps
    assert max_in_sliding_second(starts) <= qps
    assert clock.sleeps < len(starts) / 2


@pytest.mark.parametrize("qps", [3, 10, 50, 2000])
async def test_steady_pace_leaves_room_for_jitter(qps):
    """Once running, N+1 consecutive starts span more than 1 s by the margin (20 ms or more)."""
    clock = FakeClock()
    pacer = Pacer(qps, time=clock, sleep=clock.sleep)
    starts = await run_starts(pacer, clock, 4 * qps + 10)
    spans = [starts[i + qps] - starts[i] for i in range(len(starts) - qps)]
    assert min(spans) >= 1.0 + 0.0199


@pytest.mark.parametrize("qps", [1, 10, 2000])
async def test_callers_arriving_irregularly_stay_within_quota(qps):
    clock = FakeClock(overshoot=0.003)
    pacer = Pacer(qps, time=clock, sleep=clock.sleep)
    starts = await run_starts(pacer, clock, 4 * qps + 10, workers=16, work=2.0 / qps)
    assert max_in_sliding_second(starts) <= qps
    for phase in PHASES:
        assert max_in_clock_second(starts, phase) <= qps


async def test_an_idle_pacer_does_not_bank_a_burst():
    clock = FakeClock()
    pacer = Pacer(1000, time=clock, sleep=clock.sleep)
    await run_starts(pacer, clock, 100)
    clock.t += 60.0  # idle for a minute
    burst_at = clock()
    starts = await run_starts(pacer, clock, 200, workers=64)
    assert sum(1 for t in starts if t == burst_at) == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(1 / pacer.rate)  # evenly paced from the first caller on


async def test_pause_holds_every_caller_until_it_ends():
    clock = FakeClock()
    pacer = Pacer(100, time=clock, sleep=clock.sleep)
    starts: list[float] = []
    paused: list[float] = []

    async def worker(i: int) -> None:
        for _ in range(30):
            await pacer.acquire()
            starts.append(clock())
            if len(starts) == 20 and not paused:
                paused.append(clock())
                pacer.pause_until(clock() + 5.0)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(i) for i in range(8)))
    ban_start = paused[0]
    assert len(starts) == 240
    assert not [t for t in starts if ban_start < t < ban_start + 5.0]
    assert sum(1 for t in starts if t >= ban_start + 5.0) == 220


async def test_pauses_only_extend():
    clock = FakeClock()
    pacer = Pacer(10, time=clock, sleep=clock.sleep)
    pacer.pause_until(clock() + 3.0)
    pacer.pause_for(1.0)
    start = clock()
    await pacer.acquire()
    assert clock() == pytest.approx(start + 3.0)


def test_paced_rate():
    assert paced_rate(1) == 0.5
    assert paced_rate(10) == 9.5
    assert paced_rate(25) == pytest.approx(24.5)
    assert paced_rate(2000) == pytest.approx(1960)
    assert paced_rate(0.5) == 0.25
    with pytest.raises(ValueError):
        paced_rate(0)


async def test_repr_shows_live_state():
    clock = FakeClock()
    pacer = Pacer(50, time=clock, sleep=clock.sleep)
    for _ in range(3):
        await pacer.acquire()
    pacer.pause_for(2.0)
    text = repr(pacer)
    assert "qps=50" in text
    assert "starts=3" in text
    assert "window=3/50" in text
    assert "paused_for=2.000s" in text
    assert "waiting=0" in text


async def test_repr_counts_the_callers_waiting_their_turn():
    """The head of the line (asleep until the pause ends) and the callers queued behind it; one
    that gives up (cancelled) no longer counts."""

    async def parked(seconds: float) -> None:  # the head of the line sleeps until cancelled
        await asyncio.Event().wait()

    pacer = Pacer(50, time=FakeClock(), sleep=parked)
    pacer.pause_for(60.0)
    callers = [asyncio.create_task(pacer.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert pacer.waiting == 3 and "waiting=3" in repr(pacer)
    callers[2].cancel()
    await asyncio.gather(callers[2], return_exceptions=True)
    assert pacer.waiting == 2
    for caller in callers[:2]:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert "waiting=0" in repr(pacer) and pacer.starts == 0


# -- set_rate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(50, 10), (10, 50), (40, 41), (41, 40)])
async def test_a_new_rate_applies_from_the_next_start_and_the_window_still_holds(before, after):
    clock = FakeClock()
    pacer = Pacer(before, time=clock, sleep=clock.sleep)
    first = await run_starts(pacer, clock, 3 * before)
    changed_at = clock()
    pacer.set_rate(after)
    second = await run_starts(pacer, clock, 3 * after)
    assert (pacer.qps, pacer.capacity) == (after, after)
    assert max_in_sliding_second(first + second) <= max(before, after)
    assert max_in_sliding_second([t for t in second if t >= changed_at + 1.01]) <= after
    assert long_run_rate(second[after:]) == pytest.approx(paced_rate(after), rel=0.03)


# -- the hard window: where the even schedule alone would let N+1 starts come too close --------

# The window's length as the pacer promises it (1 s and a 5 ms guard for loopback jitter), written
# out here on purpose rather than read from pacing.WINDOW_S: a shorter window must fail these.
GUARDED_SECOND = 1.005


def tightest_span(starts: list[float], capacity: int) -> float:
    """The shortest time any ``capacity + 1`` consecutive starts took."""
    return min(starts[i + capacity] - starts[i] for i in range(len(starts) - capacity))


def assert_the_window_binds(starts: list[float], capacity: int) -> None:
    """N+1 consecutive starts never span less than the guarded second, and here some span exactly
    that: the window held a start back (the even schedule alone would have sent it sooner), so
    latency jitter up to the guard cannot put N+1 arrivals into one platform second."""
    assert tightest_span(starts, capacity) == pytest.approx(GUARDED_SECOND, abs=1e-9)


class LateOnce(FakeClock):
    """A timer that wakes ``late_by`` seconds late once, at its ``nth`` sleep (a busy loop)."""

    def __init__(self, nth: int, late_by: float) -> None:
        super().__init__()
        self.nth, self.late_by = nth, late_by

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds + (self.late_by if self.sleeps == self.nth else 0.0)
        await asyncio.sleep(0)


@pytest.mark.parametrize("qps", [50, 2000])
async def test_a_late_wakeup_catches_up_and_the_window_holds_its_anniversary(qps):
    """A wakeup 19 ms late (within catch_up) sends the slots that fell due at once: one second
    later the schedule would send their followers 1.0014 s after them, the window 1.005 s."""
    clock = LateOnce(nth=qps // 10, late_by=0.019)
    pacer = Pacer(qps, time=clock, sleep=clock.sleep)
    starts = await run_starts(pacer, clock, 2 * qps, workers=64)
    assert_the_window_binds(starts, qps)
    assert max_in_sliding_second(starts) <= qps


async def test_a_short_pause_releases_what_fell_due_and_the_window_holds_its_anniversary():
    """A pause that ends within catch_up of the schedule (a ban shorter than 20 ms: a longer one
    restarts the schedule from its end and releases no burst) sends every caller due meanwhile
    at its end; the window holds the callers N places behind them to that burst plus 1.005 s."""
    clock = FakeClock()
    pacer = Pacer(2000, time=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def worker() -> None:
        while len(starts) < 2500:
            await pacer.acquire()
            starts.append(clock())
            if len(starts) == 200:
                pacer.pause_for(0.019)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(64)))
    burst = Counter(starts).most_common(1)[0][1]
    assert burst > 30  # the pause's 19 ms of slots, at once
    assert_the_window_binds(starts, 2000)


@pytest.mark.parametrize(("before", "after"), [(5, 7.5), (11.25, 16.875)])
async def test_a_rate_raised_to_a_fractional_quota_is_held_to_its_whole_calls(before, after):
    """``--qps auto`` slow start raises 5 -> 7.5 -> 11.25 -> 16.875: at 7.5 the even rate is
    7 calls/s, at 16.875 it is 16.375, so 8 (17) starts would span 1 s (0.977 s); the window lets
    ``capacity`` = 7 (16) through in any 1.005 s."""
    clock = FakeClock()
    pacer = Pacer(before, time=clock, sleep=clock.sleep)
    first = await run_starts(pacer, clock, 10)
    pacer.set_rate(after)
    second = await run_starts(pacer, clock, 3 * pacer.capacity + 10)
    assert pacer.capacity == math.floor(after)
    assert_the_window_binds(first + second, pacer.capacity)
    assert max_in_sliding_second(second) <= pacer.capacity


async def test_runs_sharing_a_quota_together_stay_within_it():
    """Three runs on a quota of 10 each pace to 10/3 calls/s (an even rate of 9.5/3): four of one
    run's starts would span 0.947 s, so three runs starting together would send 12 in a second;
    each run's window lets 3 through in any 1.005 s, 9 together."""
    clock = FakeClock()
    pacer = Pacer(10, time=clock, sleep=clock.sleep)
    QuotaShare(pacer).shared(10, 3)
    assert (pacer.capacity, pacer.rate) == (3, pytest.approx(9.5 / 3))
    starts = await run_starts(pacer, clock, 20)
    assert_the_window_binds(starts, 3)
    together = starts * 3  # three runs that joined at the same moment start at the same moments
    assert max_in_sliding_second(together) <= 10
    for phase in PHASES:
        assert max_in_clock_second(together, phase) <= 10


# -- AdaptiveRate (--qps auto) -----------------------------------------------------------------


def accept_for(policy: AdaptiveRate, start: float, seconds: float) -> tuple[float, list[float]]:
    """Calls accepted at the policy's own rate for ``seconds``; (end time, the rates it set)."""
    t, rates = start, []
    while t < start + seconds:
        t += 1.0 / policy.rate
        new = policy.accepted(t)
        if new is not None:
            rates.append(new)
    return t, rates


def test_slow_start_multiplies_the_rate_every_busy_second_up_to_the_maximum():
    policy = AdaptiveRate(5, maximum=40)
    _, rates = accept_for(policy, 0.0, 8.0)
    assert rates == pytest.approx([7.5, 11.25, 16.875, 25.3125, 37.96875, 40.0])
    assert policy.ceiling is None and policy.throttles == 0


def test_a_throttle_halves_the_rate_and_recovery_returns_to_the_last_good_rate():
    policy = AdaptiveRate(5, maximum=1000)
    t, _ = accept_for(policy, 0.0, 4.5)  # 5, 7.5, 11.25, 16.9, 25.3
    assert policy.rate == pytest.approx(25.3125)
    assert policy.throttled(t, ban=1.0) == pytest.approx(12.65625)
    assert policy.ceiling == pytest.approx(25.3125)
    assert policy.good == pytest.approx(16.875)  # the last rate that passed a whole second
    # answers to calls sent before the cut change nothing
    assert policy.throttled(t + 0.5, ban=1.0) is None
    assert policy.accepted(t + 0.5) is None
    assert policy.throttles == 1
    _, rates = accept_for(policy, t + 1.0, 3.5)
    assert rates == pytest.approx([16.875])  # back to good in one step, then held there


def test_above_the_good_rate_it_probes_slowly_and_only_after_a_hold_that_doubles():
    policy = AdaptiveRate(40, maximum=1000, hold=30)
    t, _ = accept_for(policy, 0.0, 1.5)
    policy.throttled(t, ban=1.0)  # at 60: good becomes 40
    t, rates = accept_for(policy, t + 1.0, 29.5)
    assert rates == pytest.approx([40.0])  # recovery, then held for 30 s after the ban
    t, rates = accept_for(policy, t, 3.0)
    assert rates == pytest.approx([40.4, 40.804, 41.21204], rel=1e-4)  # +1 % a second
    policy.throttled(t, ban=1.0)  # a probe met the limit: good goes 3 % under it
    assert policy.good == pytest.approx(0.97 * 41.21204, rel=1e-4)
    t, rates = accept_for(policy, t + 1.0, 59.5)
    assert rates[-1] == pytest.approx(policy.good)  # recovered, and no probe for 60 s this time
    assert max(rates) == pytest.approx(policy.good)


def test_a_limit_that_falls_pulls_the_good_rate_down_with_it():
    policy = AdaptiveRate(40, maximum=1000, hold=30)
    t, _ = accept_for(policy, 0.0, 1.5)
    policy.throttled(t, ban=1.0)
    t, _ = accept_for(policy, t + 1.0, 5.0)
    assert policy.rate == pytest.approx(policy.good) == pytest.approx(40.0)
    policy.throttled(t, ban=1.0)  # at the good rate itself, during the hold: the limit fell
    assert policy.good == pytest.approx(0.97 * 40.0)
    assert policy.rate == pytest.approx(20.0)
    t, rates = accept_for(policy, t + 1.0, 5.0)
    assert rates == pytest.approx([30.0, 38.8])  # recovery stops under the new good rate
    before = policy.good
    policy.throttled(t, ban=1.0)
    assert policy.good == pytest.approx(0.97 * before)


def test_an_idle_or_concurrency_bound_run_does_not_raise_the_rate():
    policy = AdaptiveRate(5, maximum=1000)
    assert policy.accepted(0.0) is None
    assert policy.accepted(1.0) is None  # 2 calls in a second at rate 5: not busy
    assert policy.accepted(60.0) is None  # a minute idle
    assert policy.rate == 5


def test_the_rate_stays_between_minimum_and_maximum():
    policy = AdaptiveRate(2, maximum=4, minimum=1)
    t = 0.0
    for _ in range(6):
        t += 10.0
        policy.throttled(t, ban=1.0)
    assert policy.rate == 1
    _, _ = accept_for(policy, t + 1.0, 30.0)
    assert policy.rate <= 4
    with pytest.raises(ValueError):
        AdaptiveRate(10, maximum=5)


def test_adaptive_repr_shows_its_state():
    policy = AdaptiveRate(5, maximum=100)
    policy.throttled(3.0, ban=1.0)
    assert repr(policy) == ("<AdaptiveRate rate=2.5 good=2.5 ceiling=5 throttles=1 hold=30s>")


# -- QuotaShare: the runs sending for one app key share its quota ---------------------------------


def test_a_run_alone_paces_to_its_own_limit_and_a_share_when_others_send():
    pacer = Pacer(40)
    quota = QuotaShare(pacer)
    quota.shared(math.inf, 1)  # alone
    assert (pacer.qps, pacer.rate) == (40, paced_rate(40))
    quota.shared(30, 2)  # another run at --qps 30: the lowest limit, halved
    assert (pacer.qps, pacer.rate) == (15, paced_rate(30) / 2)
    quota.shared(50, 4)  # others above this run's limit: its own, divided by four
    assert (pacer.qps, pacer.rate) == (10, paced_rate(40) / 4)
    quota.shared(math.inf, 1)  # they ended: the whole quota again
    assert (pacer.qps, pacer.rate) == (40, paced_rate(40))


def test_qps_auto_paces_to_the_lowest_limit_learnt_and_counts_its_share():
    policy = AdaptiveRate(20, maximum=1000)
    pacer = Pacer(20)
    quota = QuotaShare(pacer, policy)
    quota.shared(30, 2)  # another --qps auto run has learnt more: this run's limit rules
    assert policy.share == 0.5 and pacer.qps == 10
    # Its part of an interval: 6 accepted in 1 s is busy at a half share of 20 calls/s.
    for i in range(6):
        policy.accepted(100.0 + i * 0.2)
    assert policy.rate == 30  # (slow start: it has met no throttle)
    quota.apply()
    assert pacer.qps == 15  # its own limit went up, to the other's
    quota.shared(12, 2)  # the other was throttled and cut: the lowest limit rules
    assert pacer.qps == 6 and policy.rate == 30


def test_an_interval_at_a_small_share_is_not_busy_for_a_run_alone():
    policy = AdaptiveRate(20, maximum=1000)
    for i in range(6):  # 6 calls in 1 s: under half of 20 calls/s
        policy.accepted(100.0 + i * 0.2)
    assert policy.rate == 20
