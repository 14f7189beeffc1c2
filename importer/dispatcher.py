"""Workers over a bounded queue: pace -> sign -> send -> classify -> retry or settle.

A feeder task pulls records from the (possibly huge, lazy) iterator into a queue of
``2 * concurrency``, so memory does not grow with the input; ``concurrency`` workers take them.
Every record the iterator yields gets exactly one ``on_outcome`` call, also when the run stops:

* ``stop()`` (Ctrl-C, a deadline, a fatal answer, a ban longer than ``max_ban``): no new call
  starts, not even one whose claim is being committed; calls in flight finish and are settled
  normally; a row waiting for a retry keeps its last answer (failed, or unknown after a lost
  one); every row not yet tried is ``not_sent``, the rest of the iterator included.
* ``abort()`` (a second Ctrl-C): as ``stop()``, and calls in flight are cancelled: ``unknown``.

Before a row's first call, ``claim`` claims its payload in the journal; a row another run
holds is settled with the outcome the claim gives (``skipped``, ``duplicate``, ``unknown``).

Run policies (``DispatchSettings``): the **canary** sends the first ``canary`` records at
``CANARY_CONCURRENCY`` and waits for all their answers before the bulk. With ``qps_auto`` an
``AdaptiveRate`` sets the pacer's rate from the answers (``qps`` is where it starts, ``qps_max``
its ceiling), through the ``QuotaShare`` that also divides the app key's quota among runs.

The decisions are pure and live elsewhere; this module only acts on them: what to do with an
answer (``steps.next_step``), when the run must stop because of its answers (``failures.RunGuard``:
the canary's verdict, the failure-rate breaker, an unreachable gateway), the rate (``pacing``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from importer.failures import RunGuard, Verdict
from importer.gateway import Gateway
from importer.pacing import AdaptiveRate, Pacer, QuotaShare
from importer.phases import CALL, WAIT, Phases
from importer.protocol import AnswerKind, Reply, RequestBuilder
from importer.rows import Outcome, RequestRecord, Status
from importer.steps import (
    Action,
    RetryLimits,
    StopReason,
    Tries,
    cut_off,
    interrupted,
    next_step,
    outcome_of,
)

FEED_YIELD_EVERY = 500  # draining a huge input as not_sent still lets the loop breathe
CANARY_CONCURRENCY = 2  # calls in flight while the canary rows go

# claim(record) claims the row's payload before its first call: None (or an awaitable of
# None) to send it, an Outcome (another run holds the payload) to settle the row unsent.
Claim = Callable[[RequestRecord], "Awaitable[Outcome | None] | None"]


@dataclass(frozen=True)
class DispatchSettings:
    qps: float = 10
    concurrency: int = 8
    retries: int = 5
    max_ban: float = 300
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    canary: int = 0  # the first N records go first, at CANARY_CONCURRENCY, and are judged
    max_failure_rate: float | None = None  # None: no canary verdict and no breaker
    failure_window: int = 200  # answers the breaker looks back on
    qps_auto: bool = False  # find the rate (AdaptiveRate): qps is where it starts
    qps_max: float = 1000.0  # the most qps_auto may reach
    resend_uncertain: bool = False  # at-least-once: retry a call whose answer was lost

    def __post_init__(self) -> None:
        if self.qps <= 0 or self.concurrency < 1 or self.retries < 0 or self.max_ban < 0:
            raise ValueError(f"invalid dispatch settings: {self}")
        rate = self.max_failure_rate
        if self.canary < 0 or self.failure_window < 1 or (rate is not None and not 0 <= rate <= 1):
            raise ValueError(f"invalid failure policy: {self}")
        if self.qps_auto and not 0 < self.qps <= self.qps_max:
            raise ValueError(f"qps_auto starts at qps, which must be in (0, qps_max]: {self}")

    @property
    def limits(self) -> RetryLimits:
        return RetryLimits(
            self.retries, self.max_ban, self.backoff_base, self.backoff_cap, self.resend_uncertain
        )


@dataclass
class DispatchResult:
    stop_reason: StopReason
    message: str  # what the platform said and what to do; "" when there is nothing to say


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_DONE = object()  # end of input, one per worker


class Dispatcher:
    def __init__(
        self,
        builder: RequestBuilder,
        gateway: Gateway,
        settings: DispatchSettings,
        *,
        claim: Claim | None = None,
        on_outcome: Callable[[RequestRecord, Outcome], None],
        clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pacer: Pacer | None = None,
    ) -> None:
        self._builder = builder
        self._spec = builder.spec
        self._gateway = gateway
        self.settings = settings
        self._limits = settings.limits
        self._claim_row = claim
        self._on_outcome = on_outcome
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.pacer = pacer or Pacer(settings.qps, sleep=sleep)
        self.rate_policy = (
            AdaptiveRate(settings.qps, settings.qps_max) if settings.qps_auto else None
        )
        self.quota = QuotaShare(self.pacer, self.rate_policy)  # what the pacer runs at
        self.guard = RunGuard(settings.max_failure_rate, settings.failure_window, gateway.where)
        self._stop_reason = StopReason.NONE
        self._message = ""
        self._phases = Phases()  # which worker waits and which calls: what a stop cancels
        self.settled = 0

    def __repr__(self) -> str:
        calls = self._phases.count(CALL)
        return (
            f"<Dispatcher settled={self.settled} in_flight={calls} "
            f"stop={self._stop_reason.value or 'no'} {self.pacer!r}>"
        )

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not StopReason.NONE

    # -- control -------------------------------------------------------------------------------

    def stop(self, reason: StopReason = StopReason.INTERRUPTED, message: str = "") -> None:
        """Start no new calls; calls in flight finish. The first reason given is reported."""
        if not self.stopping:
            self._stop_reason, self._message = reason, message
        self._phases.interrupt(WAIT)

    def abort(self) -> None:
        """``stop()``, and cancel the calls in flight too (their rows become ``unknown``)."""
        self.stop()
        self._phases.interrupt(CALL)

    # -- the run -------------------------------------------------------------------------------

    async def run(self, records: Iterable[RequestRecord]) -> DispatchResult:
        iterator: Iterator[RequestRecord] = iter(records)
        feed_error: list[BaseException] = []
        if self.settings.canary and self.guard.breaker is not None:
            settled_before = self.settled
            self.guard.canary_start()
            few = min(CANARY_CONCURRENCY, self.settings.concurrency)
            await self._run_phase(itertools.islice(iterator, self.settings.canary), few, feed_error)
            iterator = self._after_canary(iterator, feed_error, self.settled - settled_before)
        if not feed_error:
            await self._run_phase(iterator, self.settings.concurrency, feed_error)
        if feed_error:
            raise feed_error[0]
        return DispatchResult(self._stop_reason, self._message)

    async def _run_phase(
        self, iterator: Iterator[RequestRecord], workers: int, feed_error: list
    ) -> None:
        """Feed ``iterator`` to ``workers`` workers until it is done (or settled as not_sent)."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * workers)
        feeder = self._feed(iterator, queue, feed_error, workers)
        tasks = [asyncio.create_task(feeder, name="feeder")]
        tasks += [
            asyncio.create_task(self._work(queue), name=f"worker-{i}") for i in range(workers)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _after_canary(
        self, iterator: Iterator[RequestRecord], feed_error: list, rows: int
    ) -> Iterator[RequestRecord]:
        """Judge the canary's ``rows``; the records still to go (all not_sent if it failed)."""
        if feed_error or self.stopping:
            return iterator
        try:
            first = next(iterator, None)
        except Exception as exc:  # the input broke right after the canary
            feed_error.append(exc)
            return iter(())
        if first is None:
            return iter(())  # every row went in the canary: no bulk left to protect
        self._stop_on(self.guard.canary_verdict(rows))
        return itertools.chain([first], iterator)

    async def _feed(
        self, iterator: Iterator[RequestRecord], queue: asyncio.Queue, error: list, workers: int
    ) -> None:
        drained = 0
        try:
            for record in iterator:
                if self.stopping:
                    self._settle(record, Outcome(Status.NOT_SENT))
                    drained += 1
                    if drained % FEED_YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                else:
                    await queue.put(record)
        except Exception as exc:  # the input broke: finish what was read, then re-raise in run()
            error.append(exc)
        for _ in range(workers):
            await queue.put(_DONE)

    async def _work(self, queue: asyncio.Queue) -> None:
        while True:
            record = await queue.get()
            if record is _DONE:
                return
            if self.stopping:
                self._settle(record, Outcome(Status.NOT_SENT))
            else:
                await self._process(record)

    async def _wait(self, awaitable: Awaitable[object]) -> bool:
        """Await the pacer or a backoff; False when stop() cut the wait short."""
        waited, _ = await self._phases.during(WAIT, awaitable)
        return waited and not self.stopping

    async def _claim(self, record: RequestRecord) -> Outcome | None:
        """Claim the row's payload (the journal's in-flight mark, committed before the call):
        None to send it, else the outcome of a row that must not be sent."""
        if self._claim_row is None:
            return None
        claimed = self._claim_row(record)
        if claimed is not None and not isinstance(claimed, Outcome):
            claimed = await claimed
        return claimed if isinstance(claimed, Outcome) else None

    async def _call(self, record: RequestRecord, tries: Tries) -> Reply | None:
        """One HTTP call; None when abort() cancelled it in flight."""
        tries.attempts += 1
        request = self._builder.build(record, self._clock())
        _, reply = await self._phases.during(CALL, self._gateway.post(request, self._spec))
        return reply

    async def _process(self, record: RequestRecord) -> None:
        tries = Tries()
        while True:
            if self.stopping or not await self._wait(self.pacer.acquire()):
                return self._cut_off(record, tries)
            if tries.attempts == 0:
                refused = await self._claim(record)
                if refused is not None:
                    return self._settle(record, refused)
                if self.stopping:  # stop() came while the claim was being committed
                    return self._cut_off(record, tries)
                tries.started = time.monotonic()
            reply = await self._call(record, tries)
            if reply is None:
                tries.sent += 1  # cancelled in flight: it may have left
                return self._settle(record, interrupted(tries, self._elapsed(tries)))
            tries.last = reply
            tries.sent += reply.sent
            tries.lost += reply.kind is AnswerKind.UNCERTAIN
            self._stop_on(self.guard.attempted(reply))
            step = next_step(reply, tries, self._limits, self._rng)
            if step.action is Action.THROTTLE:
                tries.throttles += 1
                self.pacer.pause_for(step.delay)  # every worker waits, not just this one
                self._adapt(reply)
                continue
            if step.action is Action.RETRY:
                tries.retries += 1
                if not await self._wait(self._sleep(step.delay)):
                    return self._cut_off(record, tries)
                continue
            assert step.status is not None
            self._settle(
                record, outcome_of(step.status, reply, tries, self._elapsed(tries), step.error)
            )
            if step.action is Action.STOP:
                return self.stop(step.reason, step.message)
            if step.final:  # a success or a business failure
                self._adapt(reply)
                self._stop_on(self.guard.answered(reply, record.source_row))
            return None

    # -- policies ------------------------------------------------------------------------------

    def _stop_on(self, verdict: Verdict | None) -> None:
        """The run guard's verdict on an answer (the first reason to stop is the one reported)."""
        if verdict is not None and not self.stopping:
            self.stop(verdict.reason, verdict.message)

    def _adapt(self, reply: Reply) -> None:
        """``--qps auto``: an answer the quota let through, or a throttle, may move the rate."""
        if self.rate_policy is None:
            return
        now = self.pacer.now()
        if reply.kind is AnswerKind.THROTTLED:
            rate = self.rate_policy.throttled(now, reply.ban_seconds)
        else:
            rate = self.rate_policy.accepted(now)
        if rate is not None:
            self.quota.apply()

    # -- outcomes ------------------------------------------------------------------------------

    def _cut_off(self, record: RequestRecord, tries: Tries) -> None:
        self._settle(record, cut_off(tries, self._elapsed(tries)))

    @staticmethod
    def _elapsed(tries: Tries) -> int:
        return round((time.monotonic() - tries.started) * 1000) if tries.attempts else 0

    def _settle(self, record: RequestRecord, outcome: Outcome) -> None:
        self.settled += 1
        self._on_outcome(record, outcome)


__all__ = [
    "Claim",
    "DispatchResult",
    "DispatchSettings",
    "Dispatcher",
]
