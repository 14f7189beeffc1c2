"""The per-second quota pacer: the platform never sees more than ``qps`` calls in a clock second.

Two rules, applied to every call start:

* an **even schedule**: start *k* is due at ``slot_0 + k / rate`` with ``rate`` a little below the
  quota (``paced_rate``), so that N+1 consecutive starts span ``N / rate`` > 1 s and latency
  jitter up to that surplus (20 ms at 2 %, more for small quotas) cannot push N+1 arrivals into
  one platform second. A caller whose slot is already past goes at once, so at high rates one
  timer wakeup releases every caller that fell due meanwhile: there is no per-call sleep, which
  asyncio's ~1 ms timer granularity could not sustain above a few hundred calls/s. Only slots up
  to ``catch_up`` seconds old are caught up: after idleness the schedule restarts from the first
  caller, so an idle pacer banks no burst (a burst would also echo one second later, when the
  window below holds its followers back to the burst's anniversary).
* a **hard sliding window**: a start must come at least ``WINDOW_S`` (1 s and a 5 ms guard for
  loopback jitter) after the start N places before it. Every window of 1 s (sliding, hence also
  every clock second, whatever its phase) then holds at most N starts. A plain leaky bucket of
  capacity N allows nearly 2N in one clock second (a full bucket plus a second's refill); this
  rule cannot.

Only the caller at the head of the line sleeps; the others queue on a FIFO lock. The clock and the
sleep are injectable so tests move a fake clock instead of sleeping. ``pause_until`` holds every
caller until a throttle ban is over; ``set_rate`` changes the quota mid-run (``--qps auto``,
where the small pure policy ``AdaptiveRate`` decides the rate from the answers, and runs that
share an app key, where ``QuotaShare`` gives each its part).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

# The hard window: 1 s, and a guard for loopback jitter. A start older than this no longer counts
# against any quota (``sharing`` waits this long for the others' faster starts to leave it).
WINDOW_S = 1.005


def paced_rate(qps: float, margin: float = 0.02, headroom: float = 0.5) -> float:
    """The even rate used for a quota of ``qps`` calls per second.

    ``margin`` (a fraction) keeps N+1 starts ``margin`` seconds beyond one second apart. Small
    quotas keep at least ``headroom`` calls/s (at most half the quota) in reserve instead: at
    qps 1 one call every 2 s, at qps 5 one every 0.22 s, so the jitter they absorb (0.5/(N-0.5) s:
    1 s at qps 1, 53 ms at qps 10) never falls below the 2 % of large quotas; from qps 25 the
    margin rules. Caveat: qps 1 thus uses half its quota, the price of never meeting a ban there.
    """
    if qps <= 0:
        raise ValueError("qps must be positive")
    return qps - max(qps * margin, min(headroom, qps / 2))


class Pacer:
    """Paces call starts to ``qps`` per clock second; ``await pacer.acquire()`` before each call."""

    def __init__(
        self,
        qps: float,
        *,
        margin: float = 0.02,
        window: float = WINDOW_S,
        catch_up: float = 0.02,
        time: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.qps = qps
        self._margin = margin
        self.rate = paced_rate(qps, margin)
        self.capacity = max(1, math.floor(qps))  # most starts allowed in any 1 s
        self._interval = 1.0 / self.rate
        self._span = window  # the hard window's length (WINDOW_S)
        self._catch_up = catch_up
        self._time = time
        self._sleep = sleep
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._window: deque[float] = deque(maxlen=self.capacity)
        self._lock = asyncio.Lock()
        self.starts = 0
        self.waiting = 0  # callers inside acquire(): the head of the line and those queued

    def __repr__(self) -> str:
        now = self._time()
        due = max(0.0, self._next_slot - now) if self._next_slot > -math.inf else 0.0
        paused = max(0.0, self._paused_until - now)
        return (
            f"<Pacer qps={self.qps:g} rate={self.rate:g}/s starts={self.starts} "
            f"next_slot_in={due:.4f}s window={len(self._window)}/{self.capacity} "
            f"paused_for={paused:.3f}s waiting={self.waiting}>"
        )

    def now(self) -> float:
        """The pacer's clock (``pause_until`` takes times on it)."""
        return self._time()

    def pause_until(self, when: float) -> None:
        """Start nothing before ``when`` (a time on ``now()``'s clock); pauses only ever extend."""
        self._paused_until = max(self._paused_until, when)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._time() + seconds)

    def set_rate(self, qps: float, rate: float | None = None) -> None:
        """Pace to ``qps`` from the next start on (``--qps auto``, a shared quota); the recent
        starts still count. ``rate``, the even rate, defaults to ``paced_rate(qps)``: a share of
        a quota passes the share of the whole quota's paced rate, not a margin of its own.

        The window keeps the last ``capacity`` starts of the new quota, so a lower quota holds the
        next start back until the window allows it, and a higher one releases starts at once.
        """
        old_interval = self._interval
        self.qps = qps
        self.rate = paced_rate(qps, self._margin) if rate is None else min(rate, qps)
        self.capacity = max(1, math.floor(qps))
        self._interval = 1.0 / self.rate
        if self._next_slot > -math.inf:  # the next slot moves by the change of the gap
            self._next_slot += self._interval - old_interval
        self._window = deque(self._window, maxlen=self.capacity)

    def _earliest(self) -> float:
        """When the next start may happen."""
        at = max(self._next_slot, self._paused_until)
        if len(self._window) == self.capacity:
            at = max(at, self._window[0] + self._span)
        return at

    async def acquire(self) -> None:
        """Wait for this caller's turn; returns at the moment the call may start."""
        self.waiting += 1
        try:
            async with self._lock:
                now = self._time()
                at = self._earliest()
                while at > now:
                    await self._sleep(at - now)
                    now = self._time()
                    at = self._earliest()  # a pause may have been set meanwhile
                # Slots missed by a late wakeup (up to catch_up ago) are caught up; after
                # idleness or a longer stall the schedule restarts from now, not with a burst.
                slot = self._next_slot if self._next_slot >= now - self._catch_up else now
                self._next_slot = slot + self._interval
                self._window.append(now)
                self.starts += 1
        finally:
            self.waiting -= 1


AUTO_START_QPS = 5.0  # where --qps auto starts: low enough for almost any app's quota


class AdaptiveRate:
    """``--qps auto``: the quota to pace to, learnt from the platform's answers.

    Additive increase, multiplicative decrease, with a memory of where throttling happened,
    because every throttle costs a pause of every worker for the announced ban:

    * **slow start**: until the first throttle, each ``interval`` in which calls were accepted
      and none throttled multiplies the rate by ``grow`` (5, 7.5, 11, 17, ... calls/s);
    * **decrease**: a throttle cuts the rate by ``decrease``. ``good``, the highest rate that ran
      a whole interval unthrottled, becomes at most ``margin`` (3 %) under the throttled rate: a
      rate just above the limit can pass an interval by luck of the clock's phase, and a limit
      that fell pulls ``good`` down with it. Throttles within an interval of the cut (and during
      the ban) answer calls sent before it: one cut only;
    * **recovery**: back to ``good`` by ``grow`` an interval, where no throttle is expected;
    * **probe** (additive increase): above ``good``, ``probe`` of the rate an interval, but only
      after a hold that starts at ``hold`` seconds and doubles with each throttle (up to
      ``max_hold``), so a fixed limit costs one probe in ``hold``, then ``2 * hold``, ... seconds.

    An interval only counts when its accepted calls came to at least half the rate (times
    ``share``, this run's part of it when runs share the app key): a run held back by
    concurrency or slow answers learns nothing about the limit and does not climb.
    Never above ``maximum`` nor below ``minimum``. Pure: the caller passes the time.
    """

    def __init__(
        self,
        start: float,
        maximum: float,
        *,
        minimum: float = 1.0,
        interval: float = 1.0,
        grow: float = 1.5,
        decrease: float = 0.5,
        probe: float = 0.01,
        margin: float = 0.03,
        hold: float = 30.0,
        max_hold: float = 600.0,
    ) -> None:
        if not 0 < start <= maximum or not 0 < decrease < 1 < grow:
            raise ValueError("need 0 < start <= maximum and 0 < decrease < 1 < grow")
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.rate = max(self.minimum, start)
        self.good = 0.0  # highest rate that ran a whole interval unthrottled
        self.ceiling: float | None = None  # the rate of the last throttle
        self.throttles = 0
        self.share = 1.0  # this run's part of the app key's calls (1 / the runs sharing it)
        self._interval = interval
        self._grow, self._decrease, self._probe, self._margin = grow, decrease, probe, margin
        self._hold, self._max_hold = hold, max_hold
        self._hold_until = -math.inf
        self._since = -math.inf  # start of the current interval
        self._quiet_until = -math.inf  # throttles before this belong to the last cut
        self._accepted = 0  # calls accepted since then

    def __repr__(self) -> str:
        ceiling = "none" if self.ceiling is None else f"{self.ceiling:.3g}"
        return (
            f"<AdaptiveRate rate={self.rate:.3g} good={self.good:.3g} ceiling={ceiling} "
            f"throttles={self.throttles} hold={self._hold:g}s>"
        )

    def accepted(self, now: float) -> float | None:
        """A call the quota let through (success or business answer); the new rate, if any."""
        if self._since == -math.inf:
            self._since = now
        if now < self._since:  # an answer that arrived during a ban pause
            return None
        self._accepted += 1
        elapsed = now - self._since
        if elapsed < self._interval:
            return None
        busy = self._accepted >= 0.5 * self.rate * self.share * elapsed
        self._since, self._accepted = now, 0
        if not busy:
            return None
        self.good = max(self.good, self.rate)
        if self.ceiling is None:
            rate = self.rate * self._grow  # slow start
        elif self.rate < self.good:
            rate = min(self.good, self.rate * self._grow)  # recovery (after a cut)
        elif now >= self._hold_until:
            rate = self.rate * (1 + self._probe)  # additive probe above the known-good rate
        else:
            return None
        return self._set(rate)

    def throttled(self, now: float, ban: float = 0.0) -> float | None:
        """A throttle answer (the ban, in seconds, is paused by the caller); the new rate."""
        if now < self._quiet_until:  # answers to calls sent before the cut took effect
            return None
        self.throttles += 1
        self.ceiling = self.rate
        # A rate a little above the limit can pass an interval by luck of the clock's phase:
        # what counts as good stays a margin under every rate that met a throttle.
        below = self.rate * (1 - self._margin)
        self.good = min(self.good, below) if self.good else self.rate * self._decrease
        if self._hold_until > -math.inf:
            self._hold = min(self._max_hold, self._hold * 2)
        self._since, self._accepted = now + ban, 0  # the next interval starts after the ban
        self._quiet_until = now + max(ban, self._interval)
        self._hold_until = now + ban + self._hold
        return self._set(self.rate * self._decrease)

    def _set(self, rate: float) -> float | None:
        rate = min(self.maximum, max(self.minimum, rate))
        if rate == self.rate:
            return None
        self.rate = rate
        return rate


class QuotaShare:
    """What a run's pacer runs at: the app key's limit, divided among the runs that share it.

    The limit is the lowest of the live runs' own limits (``--qps``, or the rate ``--qps auto``
    has learnt); each of ``live`` runs paces to its part of it and of its paced rate, so
    together they pace as one run would. ``sharing.shared_quota`` tells it the others' limits;
    alone, it is the run's own limit. A ``--qps auto`` run judges its intervals by its part
    (``AdaptiveRate.share``), so the run with the lowest limit climbs as one run alone would,
    and the others climb no further than twice that limit (their intervals are not busy above).
    """

    def __init__(self, pacer: Pacer, policy: AdaptiveRate | None = None) -> None:
        self.pacer, self.policy = pacer, policy
        self._own = pacer.qps  # the run's --qps (without a policy)
        self.others = math.inf  # the lowest limit of the other live runs on the app key
        self.live = 1

    def __repr__(self) -> str:
        return f"<QuotaShare limit={self.limit:.3g} others={self.others:.3g} live={self.live}>"

    @property
    def limit(self) -> float:
        """This run's own limit for the app key."""
        return self.policy.rate if self.policy is not None else self._own

    def shared(self, others: float, live: int) -> None:
        """The lowest limit of the other live runs on the app key (``inf``: none), and how many
        live runs share it, this one included."""
        changed = (others, live) != (self.others, self.live)
        self.others, self.live = others, live
        if self.policy is not None:
            self.policy.share = 1 / live
        if changed:
            self.apply()

    def apply(self) -> None:
        """Pace to this run's part of the limit (after either changed)."""
        limit = min(self.limit, self.others)
        if self.live == 1:
            self.pacer.set_rate(limit)
        else:
            self.pacer.set_rate(limit / self.live, rate=paced_rate(limit) / self.live)
