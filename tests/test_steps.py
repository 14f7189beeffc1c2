"""What one answer means for its row: ``next_step`` as a table, no event loop."""

from __future__ import annotations

import random

import pytest

from importer.protocol import AnswerKind, Reply
from importer.rows import Status
from importer.steps import (
    MAX_THROTTLE_RETRIES,
    Action,
    RetryLimits,
    StopReason,
    Tries,
    next_step,
)

LIMITS = RetryLimits(retries=3, max_ban=300)
AT_LEAST_ONCE = RetryLimits(retries=3, max_ban=300, resend_uncertain=True)


def reply(kind: AnswerKind, **fields: object) -> Reply:
    return Reply(kind, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "tries", "limits", "action", "status"),
    [
        (reply(AnswerKind.ACCEPTED), Tries(1), LIMITS, Action.SETTLE, Status.SUCCESS),
        (reply(AnswerKind.DECLINED, msg="no"), Tries(1), LIMITS, Action.SETTLE, Status.FAILED),
        (reply(AnswerKind.REJECTED, code="50"), Tries(1), LIMITS, Action.SETTLE, Status.FAILED),
        (reply(AnswerKind.FATAL, code="25"), Tries(1), LIMITS, Action.STOP, Status.FAILED),
        (reply(AnswerKind.THROTTLED, ban_seconds=2), Tries(1), LIMITS, Action.THROTTLE, None),
        (
            reply(AnswerKind.THROTTLED, ban_seconds=301),
            Tries(1),
            LIMITS,
            Action.STOP,
            Status.FAILED,
        ),
        (
            reply(AnswerKind.THROTTLED, ban_seconds=1),
            Tries(101, throttles=MAX_THROTTLE_RETRIES),
            LIMITS,
            Action.SETTLE,
            Status.FAILED,
        ),
        # not sent, or answered with a passing error: retried, then failed
        (reply(AnswerKind.TRANSIENT, error="refused"), Tries(1), LIMITS, Action.RETRY, None),
        (
            reply(AnswerKind.TRANSIENT, code="15", sub_code="isp.x"),
            Tries(4, sent=4, retries=3),
            LIMITS,
            Action.SETTLE,
            Status.FAILED,
        ),
        # an earlier attempt's answer was lost: whatever comes after, unknown unless a success
        (
            reply(AnswerKind.TRANSIENT, error="HTTP 502"),
            Tries(2, sent=2, lost=1, retries=1),
            RetryLimits(retries=1, resend_uncertain=True),
            Action.SETTLE,
            Status.UNKNOWN,
        ),
        (
            reply(AnswerKind.REJECTED, code="50", sub_code="isv.exists"),
            Tries(2, sent=2, lost=1, retries=1),
            AT_LEAST_ONCE,
            Action.SETTLE,
            Status.UNKNOWN,
        ),
        (
            reply(AnswerKind.ACCEPTED),
            Tries(2, sent=2, lost=1),
            AT_LEAST_ONCE,
            Action.SETTLE,
            Status.SUCCESS,
        ),
        # no attempt ever left the machine: truthfully not sent
        (
            reply(AnswerKind.TRANSIENT, error="refused", sent=False),
            Tries(4, sent=0, retries=3),
            LIMITS,
            Action.SETTLE,
            Status.NOT_SENT,
        ),
        # sent, no readable answer: unknown at once unless at-least-once was chosen
        (
            reply(AnswerKind.UNCERTAIN, error="lost"),
            Tries(1),
            LIMITS,
            Action.SETTLE,
            Status.UNKNOWN,
        ),
        (reply(AnswerKind.UNCERTAIN, error="lost"), Tries(1), AT_LEAST_ONCE, Action.RETRY, None),
        (
            reply(AnswerKind.UNCERTAIN, error="lost"),
            Tries(4, sent=4, lost=4, retries=3),
            AT_LEAST_ONCE,
            Action.SETTLE,
            Status.UNKNOWN,
        ),
    ],
    ids=[
        "accepted",
        "declined",
        "rejected",
        "fatal",
        "throttled",
        "ban-too-long",
        "throttled-too-often",
        "transient",
        "transient-out-of-retries",
        "lost-then-502",
        "lost-then-business-error",
        "lost-then-success",
        "never-connected-out-of-retries",
        "uncertain",
        "uncertain-at-least-once",
        "uncertain-at-least-once-out-of-retries",
    ],
)
def test_next_step(answer, tries, limits, action, status):
    step = next_step(answer, tries, limits, random.Random(1))
    assert step.action is action
    assert step.status is status


def test_an_uncertain_answer_says_what_to_do():
    step = next_step(
        reply(AnswerKind.UNCERTAIN, error="no answer"), Tries(1), LIMITS, random.Random()
    )
    assert step.error.startswith("no answer; the platform may have acted on it")
    assert "--resend-unknown" in step.error


def test_only_final_answers_feed_the_run_policies():
    rng = random.Random(1)
    finals = {
        kind
        for kind in AnswerKind
        if next_step(reply(kind, ban_seconds=1), Tries(1), LIMITS, rng).final
    }
    assert finals == {AnswerKind.ACCEPTED, AnswerKind.DECLINED, AnswerKind.REJECTED}


def test_stops_name_their_reason():
    rng = random.Random(1)
    fatal = next_step(reply(AnswerKind.FATAL, code="25"), Tries(1), LIMITS, rng)
    ban = next_step(reply(AnswerKind.THROTTLED, ban_seconds=9999), Tries(1), LIMITS, rng)
    assert (fatal.reason, ban.reason) == (StopReason.FATAL, StopReason.BAN_TOO_LONG)
    assert "check TOP_APP_SECRET" in fatal.message
    assert "9999 s" in ban.message


def test_retry_delays_grow_within_the_cap():
    rng = random.Random(3)
    delays = [
        next_step(reply(AnswerKind.TRANSIENT), Tries(n + 1, retries=n), LIMITS, rng).delay
        for n in range(3)
    ]
    assert all(0 <= d <= 0.5 * 2**n for n, d in enumerate(delays))
