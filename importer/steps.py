"""What one answer means for its row, decided purely: settle, retry, wait out a ban, or stop.

The dispatcher's loop only acts on the ``Step`` that ``next_step`` returns, so every rule of the
design's answer table lives here and is tested as a table, with no event loop:

=============  ==========================================================================
answer kind    step
=============  ==========================================================================
accepted       settle ``success`` (a final answer: it feeds the canary, breaker, qps auto)
declined       settle ``failed`` (final answer)
rejected       settle ``failed`` (final answer)
fatal          settle ``failed``, stop the run (``StopReason.FATAL``)
throttled      wait out the ban (every worker), then again; a ban over ``max_ban`` stops the
               run, and a row throttled ``MAX_THROTTLE_RETRIES`` times is failed
transient      retry after ``backoff_delay``, up to ``retries``; then settle ``failed``
               (``not_sent`` when no attempt ever left the machine)
uncertain      the platform may have acted: settle ``unknown`` -- unless the user chose
               at-least-once (``resend_uncertain``), then as transient
=============  ==========================================================================

And one rule over all of them: a row that had an uncertain attempt and does not end in a
success is ``unknown``, whatever the last answer said.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from enum import Enum

from importer.advice import EARLIER_LOST, UNKNOWN_ADVICE, advice
from importer.i18n import N_, _, and_then, shown
from importer.protocol import AnswerKind, Reply, describe
from importer.rows import Outcome, Status

MAX_THROTTLE_RETRIES = 100  # a row throttled this often is failed rather than retried forever


class StopReason(str, Enum):
    NONE = ""
    FATAL = "fatal"
    BAN_TOO_LONG = "ban"
    INTERRUPTED = "interrupted"
    DEADLINE = "deadline"
    CANARY = "canary"  # too many of the first rows failed with business errors
    FAILURE_RATE = "failure_rate"  # too many of the last answers did
    UNREACHABLE = "unreachable"  # calls in a row could not even connect to the gateway


class Action(str, Enum):
    SETTLE = "settle"  # the row is done with ``status``
    RETRY = "retry"  # call again after ``delay`` seconds (this row only)
    THROTTLE = "throttle"  # every worker waits ``delay`` seconds (the ban), then this row again
    STOP = "stop"  # settle the row with ``status``, then stop the run for ``reason``


@dataclass(frozen=True)
class Step:
    action: Action
    status: Status | None = None  # SETTLE and STOP: the row's status
    error: str = ""  # SETTLE and STOP: the error column ("" keeps the reply's own)
    delay: float = 0.0
    reason: StopReason = StopReason.NONE
    message: str = ""  # STOP: what the platform said and what to do
    final: bool = False  # a final platform answer (success or business failure)


@dataclass(frozen=True)
class RetryLimits:
    retries: int = 5  # transient retries per row
    max_ban: float = 300.0  # a longer ban stops the run
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    resend_uncertain: bool = False  # at-least-once: retry calls whose answer was lost


@dataclass
class Tries:
    """One row's history while it is being worked on (the dispatcher counts, ``next_step``
    reads)."""

    attempts: int = 0
    sent: int = 0  # attempts whose request left the machine
    lost: int = 0  # attempts sent whose answer was lost (uncertain): they may have acted
    retries: int = 0  # transient (and, with resend_uncertain, uncertain) retries used
    throttles: int = 0
    started: float = 0.0  # monotonic time of the first call
    last: Reply | None = None


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before transient retry number ``retry`` (0 for the first retry).

    Exponential backoff with *full* jitter: uniform over ``[0, min(cap, base * 2**retry)]``.
    Full jitter spreads workers that failed together (a gateway hiccup) instead of sending them
    back in lockstep; the caveat is that a single delay may be near zero, so the bound, not each
    delay, grows exponentially.
    """
    return rng.uniform(0.0, min(cap, base * 2.0**retry))


def next_step(reply: Reply, tries: Tries, limits: RetryLimits, rng: random.Random) -> Step:
    """The step after ``reply``, the answer to call number ``tries.attempts`` of a row (whose
    own kind ``tries`` already counts).

    A row that had an attempt whose answer was lost and does not end in a success is
    ``unknown``, whatever the last answer said: that earlier attempt may have acted.
    """
    step = _next_step(reply, tries, limits, rng)
    if tries.lost and step.status in (Status.FAILED, Status.NOT_SENT):
        error = step.error or platform_words(reply)
        return replace(step, status=Status.UNKNOWN, error=and_then(error, EARLIER_LOST))
    return step


def _next_step(reply: Reply, tries: Tries, limits: RetryLimits, rng: random.Random) -> Step:
    kind = reply.kind
    if kind is AnswerKind.ACCEPTED:
        return Step(Action.SETTLE, Status.SUCCESS, final=True)
    if kind is AnswerKind.DECLINED:
        error = "" if reply.msg else N_("the API answered result.success = false")
        return Step(Action.SETTLE, Status.FAILED, error, final=True)
    if kind is AnswerKind.REJECTED:
        return Step(Action.SETTLE, Status.FAILED, final=True)
    if kind is AnswerKind.FATAL:
        return Step(
            Action.STOP,
            Status.FAILED,
            reply.error or advice(reply),
            reason=StopReason.FATAL,
            message=_("The platform refused the call: {what}; {advice}.").format(
                what=shown(describe(reply)), advice=_(advice(reply))
            ),
        )
    if kind is AnswerKind.THROTTLED:
        return _throttled(reply, tries, limits)
    if kind is AnswerKind.UNCERTAIN and not limits.resend_uncertain:
        return Step(Action.SETTLE, Status.UNKNOWN, and_then(reply.error, UNKNOWN_ADVICE))
    # transient, or uncertain with at-least-once chosen
    if tries.retries >= limits.retries:
        error = N_("{answer} (after {attempts} attempts)").format(
            answer=platform_words(reply), attempts=tries.attempts
        )
        return Step(Action.SETTLE, last_status(reply, tries), error)
    delay = backoff_delay(tries.retries, limits.backoff_base, limits.backoff_cap, rng)
    return Step(Action.RETRY, delay=delay)


def _throttled(reply: Reply, tries: Tries, limits: RetryLimits) -> Step:
    if reply.ban_seconds > limits.max_ban:
        ban, limit = seconds_text(reply.ban_seconds), seconds_text(limits.max_ban)
        return Step(
            Action.STOP,
            Status.FAILED,
            N_("{answer}: a ban of {ban} s").format(answer=describe(reply), ban=ban),
            reason=StopReason.BAN_TOO_LONG,
            message=_(
                "The platform throttled the app for {ban} s, longer than --max-ban {limit} s: "
                "{answer}; {advice}."
            ).format(ban=ban, limit=limit, answer=shown(describe(reply)), advice=_(advice(reply))),
        )
    if tries.throttles >= MAX_THROTTLE_RETRIES:
        error = N_("{answer} (still throttled after {attempts} attempts)").format(
            answer=describe(reply), attempts=tries.attempts
        )
        return Step(Action.SETTLE, Status.FAILED, error)
    return Step(Action.THROTTLE, delay=reply.ban_seconds)


IN_FLIGHT_INTERRUPTED = and_then(N_("interrupted with the call in flight"), UNKNOWN_ADVICE)
# the report of a run that died (kill -9, the machine stopped): the rows it had started, and
# the rows it never reached
IN_FLIGHT_AT_THE_END = and_then(
    N_("the run was killed (or its machine stopped) with this call in flight"), UNKNOWN_ADVICE
)
NEVER_TRIED = N_("the run was killed (or its machine stopped) before this row's call")


def outcome_of(
    status: Status, reply: Reply, tries: Tries, elapsed_ms: int, error: str = ""
) -> Outcome:
    """The row's outcome: its status, with the last reply's words and the attempts made."""
    return Outcome(
        status,
        code=reply.code,
        msg=reply.msg,
        sub_code=reply.sub_code,
        sub_msg=reply.sub_msg,
        request_id=reply.request_id,
        system_time=reply.system_time,
        attempts=tries.attempts,
        elapsed_ms=elapsed_ms,
        error=error or reply.error,
        sent=tries.sent,
    )


def cut_off(tries: Tries, elapsed_ms: int) -> Outcome:
    """The run stopped before this row's next call: ``not_sent``, or its last answer kept
    (``unknown`` when that was a lost answer, else ``failed``)."""
    if tries.last is None:
        return Outcome(Status.NOT_SENT)
    error = N_("{answer} (after {attempts} attempts; the run stopped before a retry)").format(
        answer=platform_words(tries.last), attempts=tries.attempts
    )
    return outcome_of(last_status(tries.last, tries), tries.last, tries, elapsed_ms, error)


def interrupted(tries: Tries, elapsed_ms: int) -> Outcome:
    """The call in flight was cancelled (a second Ctrl-C): it may have left, so ``unknown``."""
    return Outcome(
        Status.UNKNOWN,
        attempts=tries.attempts,
        elapsed_ms=elapsed_ms,
        error=IN_FLIGHT_INTERRUPTED,
        sent=tries.sent,
    )


def last_status(reply: Reply, tries: Tries) -> Status:
    """A row that ends on a failed attempt: ``not_sent`` if no attempt ever left the machine,
    ``unknown`` if one may have acted (its answer was lost), else ``failed``."""
    if tries.sent == 0:
        return Status.NOT_SENT
    return Status.UNKNOWN if tries.lost else Status.FAILED


def seconds_text(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def platform_words(reply: Reply) -> str:
    """The reply's own words: the transport error, or the platform's code and message."""
    return reply.error or describe(reply)
