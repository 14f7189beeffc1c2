"""When a run must stop because of its answers: the canary, the failure-rate breaker, an
unreachable gateway (``RunGuard``), and the digest their messages quote.

On the platform a failed business call (``isv.*``, ``result.success`` false) counts against the
app's success rate, which quota tiers require to stay high. A file whose rows are mostly wrong
must therefore stop early instead of spending thousands of failing calls:

* the **canary**: the dispatcher sends the first rows at low concurrency, and the guard judges
  them with ``too_many`` before the bulk;
* ``FailureBreaker`` watches the last ``window`` final answers during the bulk.

And calls that cannot even connect, ``UNREACHABLE_AFTER`` in a row, stop a run too.

Only final platform answers count: a success, or a business failure (``AnswerKind.DECLINED`` /
``REJECTED``). Throttles, transient errors that ran out of retries and rows never sent say nothing
about the data and are not recorded at all. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from importer.advice import RERUN_ADVICE
from importer.i18n import N_, _, pgettext, shown
from importer.protocol import AnswerKind, Reply
from importer.steps import StopReason

UNREACHABLE_AFTER = 10  # calls in a row with no connection that stop the run


def too_many(failed: int, total: int, max_rate: float) -> bool:
    """More than ``max_rate`` of ``total`` answers failed (exactly ``max_rate`` is fine)."""
    return total > 0 and failed > max_rate * total


class FailureBreaker:
    """Trips when more than ``max_rate`` of the last ``window`` answers were business failures.

    It may only trip once the window is full: a share of a handful of answers is noise, and the
    canary already judges the first rows of a run. So a run never stops on this breaker before
    ``window`` answers, and at most ``max_rate * window`` failures pass before it can.
    """

    def __init__(self, max_rate: float, window: int = 200) -> None:
        if not 0 <= max_rate <= 1 or window < 1:
            raise ValueError("need 0 <= max_rate <= 1 and window >= 1")
        self.max_rate = max_rate
        self.window = window
        self._last: deque[bool] = deque(maxlen=window)
        self.failed = 0  # business failures among the last ``window``

    def __repr__(self) -> str:
        return (
            f"<FailureBreaker {self.failed}/{len(self._last)} failed of window {self.window}, "
            f"max rate {self.max_rate:g}, tripped={self.tripped}>"
        )

    def record(self, business_failure: bool) -> bool:
        """Count one final answer; True when the breaker is (now) tripped."""
        if len(self._last) == self.window and self._last[0]:
            self.failed -= 1
        self._last.append(business_failure)
        self.failed += business_failure
        return self.tripped

    @property
    def tripped(self) -> bool:
        return len(self._last) == self.window and too_many(self.failed, self.window, self.max_rate)


class FailureDigest:
    """Business failures per code, each with the first source row that met it, for messages."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.example: dict[str, int] = {}
        self.total = 0

    def add(self, key: str, source_row: int) -> None:
        self.counts[key] += 1
        self.total += 1
        self.example.setdefault(key, source_row)

    def top(self, n: int = 3) -> str:
        """``isv.invalid-parameter ×6 (e.g. row 3), code 500 ×2 (e.g. row 9)``: most first."""
        # most_common keeps first-seen order among equal counts
        parts = [
            _("{code} ×{count} (e.g. row {row})").format(
                code=shown(key), count=count, row=self.example[key]
            )
            for key, count in self.counts.most_common(n)
        ]
        if len(self.counts) > n:
            parts.append(_("{count} more codes").format(count=len(self.counts) - n))
        return pgettext("list", ", ").join(parts)


def failure_key(reply: Reply) -> str:
    """How a business failure is named in messages: its sub_code, else its code."""
    if reply.sub_code:
        return reply.sub_code
    return N_("code {code}").format(code=reply.code) if reply.code else "result.success false"


@dataclass(frozen=True)
class Verdict:
    """The run must stop: why, and a message that says what the platform said and what to do."""

    reason: StopReason
    message: str


class RunGuard:
    """The stop rules that watch a run's answers, and the digest their messages quote.

    * the **canary**: ``canary_start()`` before the first rows, ``canary_verdict(rows)`` once
      they are settled and rows remain: stop when more than ``max_rate`` of them failed;
    * the **failure-rate breaker** over the last ``window`` final answers (``answered``);
    * an **unreachable gateway** (``where``): ``UNREACHABLE_AFTER`` calls in a row that could
      not connect (``attempted``).

    ``max_rate`` None turns the canary verdict and the breaker off. Pure: the dispatcher passes
    each answer and stops the run on a verdict.
    """

    def __init__(self, max_rate: float | None, window: int = 200, where: str = "") -> None:
        self.breaker = None if max_rate is None else FailureBreaker(max_rate, window)
        self.digest = FailureDigest()  # business failures of the run, for the messages
        self._where = where
        self._unconnected = 0  # calls in a row that could not connect
        self._failed_before_canary = 0

    def __repr__(self) -> str:
        return f"<RunGuard {self.breaker!r} unconnected={self._unconnected}>"

    def canary_start(self) -> None:
        self._failed_before_canary = self.digest.total

    def canary_verdict(self, rows: int) -> Verdict | None:
        """The canary's ``rows`` are settled and rows remain: go on with the bulk, or stop."""
        if self.breaker is None:
            return None
        failed, max_rate = self.digest.total - self._failed_before_canary, self.breaker.max_rate
        if not too_many(failed, rows, max_rate):
            return None
        return Verdict(
            StopReason.CANARY,
            _(
                "Canary: {failed} of {rows} rows failed with business errors (more than "
                "--max-failure-rate {rate}): {top}; {advice}"
            ).format(
                failed=failed,
                rows=rows,
                rate=f"{max_rate:g}",
                top=self.digest.top(),
                advice=_(RERUN_ADVICE),
            ),
        )

    def answered(self, reply: Reply, source_row: int) -> Verdict | None:
        """A final platform answer: a success or a business failure."""
        failed = reply.kind is not AnswerKind.ACCEPTED
        if failed:
            self.digest.add(failure_key(reply), source_row)
        if self.breaker is None or not self.breaker.record(failed):
            return None
        b = self.breaker
        return Verdict(
            StopReason.FAILURE_RATE,
            _(
                "Failure rate: {failed} of the last {window} answers were business errors "
                "(more than --max-failure-rate {rate}); so far {top}; {advice}"
            ).format(
                failed=b.failed,
                window=b.window,
                rate=f"{b.max_rate:g}",
                top=self.digest.top(),
                advice=_(RERUN_ADVICE),
            ),
        )

    def attempted(self, reply: Reply) -> Verdict | None:
        """Any attempt's reply: calls in a row that could not connect stop the run."""
        if reply.sent:
            self._unconnected = 0
            return None
        self._unconnected += 1
        if self._unconnected < UNREACHABLE_AFTER:
            return None
        return Verdict(
            StopReason.UNREACHABLE,
            _(
                "The gateway {where} cannot be reached: {why} ({count} calls in a row got no "
                "connection). Check --gateway / TOP_GATEWAY, the network and any proxy; nothing "
                "of the rest was sent, and a rerun resumes."
            ).format(where=self._where, why=shown(reply.error), count=self._unconnected),
        )


__all__ = [
    "UNREACHABLE_AFTER",
    "FailureBreaker",
    "FailureDigest",
    "RunGuard",
    "Verdict",
    "failure_key",
    "too_many",
]
