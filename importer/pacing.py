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
* a **hard sliding window**: a start must come at least ``1 s + guard`` after the start N places
  before it. Every window of 1 s (sliding, hence also every clock second, whatever its phase)
  then holds at most N starts. A plain leaky bucket of capacity N allows nearly 2N in one clock
  second (a full bucket plus a second's refill); this rule cannot.

Only the caller at the head of the line sleeps; the others queue on a FIFO lock. The clock and the
sleep are injectable so tests move a fake clock instead of sleeping. ``pause_until`` holds every
caller until a throttle ban is over.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable


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
        guard: float = 0.005,
        catch_up: float = 0.02,
        time: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.qps = qps
        self.rate = paced_rate(qps, margin)
        self.capacity = max(1, math.floor(qps))  # most starts allowed in any 1 s
        self._interval = 1.0 / self.rate
        self._span = 1.0 + guard  # the window's length, with a guard for loopback jitter
        self._catch_up = catch_up
        self._time = time
        self._sleep = sleep
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._window: deque[float] = deque(maxlen=self.capacity)
        self._lock = asyncio.Lock()
        self.starts = 0

    def __repr__(self) -> str:
        now = self._time()
        due = max(0.0, self._next_slot - now) if self._next_slot > -math.inf else 0.0
        paused = max(0.0, self._paused_until - now)
        waiting = len(getattr(self._lock, "_waiters", None) or ()) + self._lock.locked()
        return (
            f"<Pacer qps={self.qps:g} rate={self.rate:g}/s starts={self.starts} "
            f"next_slot_in={due:.4f}s window={len(self._window)}/{self.capacity} "
            f"paused_for={paused:.3f}s waiting={waiting}>"
        )

    def now(self) -> float:
        """The pacer's clock (``pause_until`` takes times on it)."""
        return self._time()

    def pause_until(self, when: float) -> None:
        """Start nothing before ``when`` (a time on ``now()``'s clock); pauses only ever extend."""
        self._paused_until = max(self._paused_until, when)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._time() + seconds)

    def _earliest(self) -> float:
        """When the next start may happen."""
        at = max(self._next_slot, self._paused_until)
        if len(self._window) == self.capacity:
            at = max(at, self._window[0] + self._span)
        return at

    async def acquire(self) -> None:
        """Wait for this caller's turn; returns at the moment the call may start."""
        async with self._lock:
            now = self._time()
            at = self._earliest()
            while at > now:
                await self._sleep(at - now)
                now = self._time()
                at = self._earliest()  # a pause may have been set meanwhile
            # Slots missed by a late wakeup (up to catch_up ago) are caught up; after idleness
            # or a longer stall the schedule restarts from now rather than sending a burst.
            slot = self._next_slot if self._next_slot >= now - self._catch_up else now
            self._next_slot = slot + self._interval
            self._window.append(now)
            self.starts += 1
