"""Runs sharing an app key's quota (``sharing.shared_quota``), on a virtual clock: a joiner waits
until the others have slowed down and their faster starts have left the window, every run paces
to its part, renews it, and gives it back when it leaves. No test sleeps: they take milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

import pytest

from importer.errors import JournalError
from importer.journal import LEASE_STALE_S, SQLiteJournal
from importer.pacing import WINDOW_S, AdaptiveRate, Pacer, QuotaShare, paced_rate
from importer.sharing import RENEW_S, Clock, shared_quota

T0 = 1_000.0
POLL_S = RENEW_S / 5  # how often a joiner asks whether the others have seen it


class VirtualClock:
    """Seconds that move only when the test advances them; sleepers wake in the order of their
    deadlines, each before the clock moves on (unlike a clock that jumps on every sleep, several
    tasks can sleep on this one at once)."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.t

    @property
    def protocol(self) -> Clock:
        """This clock as the sharing protocol reads it: wall and monotonic alike."""
        return Clock(wall=self, monotonic=self, sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        wakeup = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.t + max(0.0, seconds), next(self._order), wakeup))
        await wakeup

    @staticmethod
    async def settle() -> None:
        """Let every task that can run, run (nothing here waits on anything but this clock)."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        end = self.t + seconds
        await self.settle()
        while self._timers and self._timers[0][0] <= end:
            when, _, wakeup = heapq.heappop(self._timers)
            self.t = max(self.t, when)
            if not wakeup.done():  # a cancelled sleeper is done already
                wakeup.set_result(None)
            await self.settle()
        self.t = end


Answer = tuple[float, int, bool]


class FakeRun:
    """A run's lease as the protocol sees it (``RunJournal.share`` and ``end_share``): the
    journal's answer at each moment comes from ``answer`` (an exception is raised), and every
    call is recorded."""

    def __init__(self, answer: Callable[[float], Answer | Exception]) -> None:
        self.answer = answer
        self.calls: list[tuple[float, float]] = []  # (the limit passed, the time passed)
        self.ended = 0

    def share(self, qps: float, now: float) -> Answer:
        self.calls.append((qps, now))
        answer = self.answer(now)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def end_share(self) -> None:
        self.ended += 1

    @property
    def times(self) -> list[float]:
        return [now for _, now in self.calls]


class Sender:
    """A run's send pass inside ``shared_quota``: notes when it entered (made its first call
    could) and at what pace, then sends until ``done`` is set (or ``fail`` raises in it)."""

    def __init__(self, run: object, quota: QuotaShare, clock: VirtualClock) -> None:
        self.quota, self.clock = quota, clock
        self.entered: tuple[float, float, float] | None = None  # (time, qps, rate)
        self.done = asyncio.Event()
        self.fail = False
        self.task = asyncio.create_task(self._send(run))

    async def _send(self, run: object) -> None:
        async with shared_quota(run, self.quota, self.clock.protocol):  # type: ignore[arg-type]
            pacer = self.quota.pacer
            self.entered = (self.clock(), pacer.qps, pacer.rate)
            await self.done.wait()
            if self.fail:
                raise RuntimeError("the send pass failed")

    @property
    def pace(self) -> tuple[float, float]:
        return self.quota.pacer.qps, self.quota.pacer.rate

    async def leave(self) -> None:
        self.done.set()
        await self.clock.settle()
        assert self.task.done()


def sender(answer: Callable[[float], Answer | Exception], clock: VirtualClock, qps: float = 40):
    run = FakeRun(answer)
    return run, Sender(run, QuotaShare(Pacer(qps, time=clock, sleep=clock.sleep)), clock)


# -- joining ------------------------------------------------------------------------------------


async def test_a_run_alone_starts_at_once_at_its_own_limit():
    clock = VirtualClock()
    run, send = sender(lambda now: (math.inf, 1, True), clock)
    await clock.settle()
    assert send.entered == (T0, 40, paced_rate(40))
    assert run.calls == [(40, T0)]
    await send.leave()


async def test_a_joiner_waits_until_every_other_run_has_seen_it_then_a_window_span():
    """The other run renews at T0 + 0.35 s, so the joiner's poll at T0 + 0.4 s finds itself seen;
    its first call comes one window (1.005 s) later, when the other's faster starts are gone."""
    clock = VirtualClock()
    run, send = sender(lambda now: (30, 2, now >= T0 + 0.35), clock)
    await clock.advance(0.4 + WINDOW_S - 0.001)
    assert send.entered is None
    assert send.pace == (40, paced_rate(40))  # not yet paced: it sends nothing yet
    await clock.advance(0.002)
    assert send.entered == (pytest.approx(T0 + 0.4 + WINDOW_S), 15, paced_rate(30) / 2)
    assert run.times == pytest.approx([T0 + i * POLL_S for i in range(5)])
    await send.leave()


async def test_a_joiner_seen_at_once_still_waits_a_window_span():
    clock = VirtualClock()
    run, send = sender(lambda now: (30, 2, True), clock)
    await clock.advance(WINDOW_S - 0.001)
    assert send.entered is None
    await clock.advance(0.002)
    assert send.entered == (pytest.approx(T0 + WINDOW_S), 15, paced_rate(30) / 2)
    assert run.times == [T0]
    await send.leave()


async def test_a_joiner_gives_up_waiting_after_lease_stale_s():
    """A lease that is never renewed since the joiner came (a run that stopped renewing) is
    stale after LEASE_STALE_S: the joiner stops waiting for it then, at the pace last read."""
    clock = VirtualClock()
    run, send = sender(lambda now: (30, 2, False), clock)
    await clock.advance(LEASE_STALE_S + WINDOW_S - 0.001)
    assert send.entered is None
    await clock.advance(POLL_S + 0.002)
    assert send.entered is not None
    waited = send.entered[0] - T0
    assert LEASE_STALE_S + WINDOW_S <= waited <= LEASE_STALE_S + POLL_S + WINDOW_S + 1e-9
    assert send.entered[1:] == (15, paced_rate(30) / 2)
    polls = run.times[1:]  # after the first share, one every POLL_S until the deadline
    assert [b - a for a, b in itertools.pairwise(run.times)] == pytest.approx([POLL_S] * len(polls))
    assert polls[-1] - T0 == pytest.approx(LEASE_STALE_S, abs=POLL_S)
    await send.leave()


@pytest.mark.parametrize(
    ("others", "live", "qps", "rate"),
    [
        (math.inf, 1, 40, paced_rate(40)),  # alone: its own limit
        (30, 2, 15, paced_rate(30) / 2),  # the lowest limit, halved
        (50, 4, 10, paced_rate(40) / 4),  # others above its own: its own, divided by four
        (10, 3, 10 / 3, paced_rate(10) / 3),
    ],
)
async def test_a_run_paces_at_the_lowest_limit_divided_by_the_live_runs(others, live, qps, rate):
    clock = VirtualClock()
    run, send = sender(lambda now: (others, live, True), clock)
    await clock.advance(WINDOW_S + 0.001)
    assert send.entered is not None
    assert send.entered[1:] == (pytest.approx(qps), pytest.approx(rate))
    assert run.calls[0] == (40, T0)  # its own limit in its lease
    await send.leave()


# -- renewing -----------------------------------------------------------------------------------


async def test_renewal_every_renew_s_updates_the_share_and_passes_the_limit_learnt():
    """Another run comes at T0 + 1.2 s and ends at T0 + 2.2 s: the next renewal after each
    changes the pace. A ``--qps auto`` run renews with the limit it has learnt meanwhile."""
    clock = VirtualClock()

    def answer(now: float) -> Answer:
        return (30, 2, True) if T0 + 1.2 <= now < T0 + 2.2 else (math.inf, 1, True)

    run = FakeRun(answer)
    policy = AdaptiveRate(20, maximum=100)
    quota = QuotaShare(Pacer(20, time=clock, sleep=clock.sleep), policy)
    send = Sender(run, quota, clock)
    await clock.settle()
    assert send.entered == (T0, 20, paced_rate(20))
    policy.rate = 24.0  # learnt (the dispatcher applies it, and the next lease carries it)
    quota.apply()
    await clock.advance(1.4)
    assert run.times == pytest.approx([T0, T0 + 0.5, T0 + 1.0])
    assert send.pace == (24, paced_rate(24))  # the other came after the last renewal
    await clock.advance(0.2)  # renewal at T0 + 1.5
    assert send.pace == (12, paced_rate(24) / 2)  # its own learnt limit (24 < 30), halved
    assert policy.share == 0.5
    await clock.advance(0.6)  # renewal at T0 + 2.0: the other is still there
    assert send.pace == (12, paced_rate(24) / 2)
    await clock.advance(0.5)  # renewal at T0 + 2.5: it has ended
    assert send.pace == (24, paced_rate(24))
    assert policy.share == 1.0
    assert [qps for qps, _ in run.calls[1:]] == [24.0] * 5
    assert run.times[1:] == pytest.approx([T0 + RENEW_S * i for i in (1, 2, 3, 4, 5)])
    await send.leave()


async def test_a_journal_error_during_renewal_keeps_the_pace_and_renews_next_time():
    clock = VirtualClock()

    def answer(now: float) -> Answer | Exception:
        if T0 + 0.9 <= now < T0 + 1.6:  # the renewals at T0 + 1.0 and 1.5 find it busy
            return JournalError("database is locked")
        return (30, 2, True) if now >= T0 + 0.9 else (math.inf, 1, True)

    run, send = sender(answer, clock)
    await clock.settle()
    assert send.pace == (40, paced_rate(40))
    await clock.advance(1.55)
    assert len(run.calls) == 4  # T0, 0.5, and the two that failed
    assert send.pace == (40, paced_rate(40))  # kept
    assert not send.task.done()
    await clock.advance(0.5)  # T0 + 2.0: renewed
    assert len(run.calls) == 5
    assert send.pace == (15, paced_rate(30) / 2)
    await send.leave()


# -- leaving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ends", "raises", "is cancelled"])
async def test_leaving_gives_the_share_back_and_stops_renewing(how):
    clock = VirtualClock()
    run, send = sender(lambda now: (math.inf, 1, True), clock)
    await clock.advance(1.2)
    assert len(run.calls) == 3 and run.ended == 0
    if how == "is cancelled":  # Ctrl-C, a deadline: the send pass is cancelled mid-way
        send.task.cancel()
    send.fail = how == "raises"
    send.done.set()
    await clock.settle()
    assert send.task.done()
    assert run.ended == 1
    if how == "raises":
        assert isinstance(send.task.exception(), RuntimeError)
    await clock.advance(5.0)
    assert len(run.calls) == 3  # no renewal after it left


# -- two runs on one real journal ------------------------------------------------------------------


async def test_two_runs_on_one_journal_take_turns_slowing_down_and_speeding_up(tmp_path):
    """The second run joins at T0 + 0.2 s; the first halves its pace at its next renewal, and the
    second's first call comes a window span after that; when the second leaves, the first takes
    the whole quota back at its next renewal."""
    path = tmp_path / "j.sqlite"
    first_run, second_run = (  # a connection each, as two processes would have
        SQLiteJournal(path).start_run(input_path=name, input_key=name, app_key="k", method="m.x")
        for name in ("a.csv", "b.csv")
    )
    clock = VirtualClock()
    paces: list[tuple[float, float]] = []  # (when, qps) of every change of the first's pace

    class Watched(QuotaShare):
        def apply(self) -> None:
            super().apply()
            paces.append((clock(), self.pacer.qps))

    first = Sender(first_run, Watched(Pacer(40, time=clock, sleep=clock.sleep)), clock)
    await clock.advance(0.2)
    assert first.entered == (T0, 40, paced_rate(40))
    second = Sender(second_run, QuotaShare(Pacer(30, time=clock, sleep=clock.sleep)), clock)
    await clock.advance(0.4)
    assert paces[-1] == (pytest.approx(T0 + 0.5), 15)  # the first's renewal: halved
    assert second.entered is None
    await clock.advance(2.0)
    assert second.entered is not None
    slowed_at = paces[-1][0]
    assert slowed_at + WINDOW_S <= second.entered[0] <= slowed_at + POLL_S + WINDOW_S + 1e-9
    assert second.entered[1:] == (15, paced_rate(30) / 2)
    await second.leave()
    left_at = clock()
    await clock.advance(RENEW_S)
    assert paces[-1][1] == 40 and left_at < paces[-1][0] <= left_at + RENEW_S
    await first.leave()
    assert first_run.share(40, clock())[:2] == (math.inf, 1)  # both leases were given back
    first_run.finish()
    second_run.finish()
