"""The run guard: when a run's answers must stop it, decided with no event loop; and its parts
(``too_many``, ``FailureBreaker``, ``FailureDigest``)."""

from __future__ import annotations

import pytest

from importer.failures import UNREACHABLE_AFTER, FailureBreaker, FailureDigest, RunGuard, too_many
from importer.protocol import AnswerKind, Reply
from importer.steps import StopReason

OK = Reply(AnswerKind.ACCEPTED)
BAD = Reply(AnswerKind.DECLINED, code="15", sub_code="isv.invalid-parameter")
NO_CONNECTION = Reply(AnswerKind.TRANSIENT, error="connection refused", sent=False)
LOST = Reply(AnswerKind.UNCERTAIN, error="read timeout")


@pytest.mark.parametrize(
    ("answers", "rows", "stops"),
    [
        ([OK] * 20, 20, False),
        ([BAD] * 2 + [OK] * 18, 20, False),  # 10 % failed: at the limit, not over it
        ([BAD] * 3 + [OK] * 17, 20, True),
        ([BAD] * 3, 20, True),  # rows never answered count as rows, not as failures
        ([BAD] * 2, 20, False),
    ],
)
def test_the_canary_stops_a_run_whose_first_rows_mostly_fail(answers, rows, stops):
    guard = RunGuard(0.1, window=200)
    guard.answered(BAD, 1)  # before the canary: not its business
    guard.canary_start()
    for row, answer in enumerate(answers, start=2):
        assert guard.answered(answer, row) is None
    verdict = guard.canary_verdict(rows)
    assert (verdict is not None) == stops
    if verdict is not None:
        assert verdict.reason is StopReason.CANARY
        assert verdict.message.startswith(f"Canary: 3 of {rows} rows failed")
        assert "isv.invalid-parameter ×4 (e.g. row 1)" in verdict.message


def test_the_breaker_stops_a_run_once_its_window_holds_too_many_failures():
    guard = RunGuard(0.5, window=10)
    verdicts = [guard.answered(BAD if i % 3 else OK, i) for i in range(10)]
    assert verdicts[:9] == [None] * 9  # never before the window is full
    assert verdicts[9] is not None and verdicts[9].reason is StopReason.FAILURE_RATE
    assert "6 of the last 10 answers were business errors" in verdicts[9].message


def test_no_max_rate_means_no_canary_verdict_and_no_breaker():
    guard = RunGuard(None)
    guard.canary_start()
    assert all(guard.answered(BAD, i) is None for i in range(500))
    assert guard.canary_verdict(500) is None
    assert guard.digest.total == 500  # the digest still counts for the messages


@pytest.mark.parametrize(
    ("replies", "stops"),
    [
        ([NO_CONNECTION] * UNREACHABLE_AFTER, True),
        ([NO_CONNECTION] * (UNREACHABLE_AFTER - 1), False),
        ([NO_CONNECTION] * 5 + [LOST] + [NO_CONNECTION] * 5, False),  # one call left: reachable
        ([NO_CONNECTION] * 5 + [OK] + [NO_CONNECTION] * UNREACHABLE_AFTER, True),
    ],
)
def test_calls_in_a_row_that_cannot_connect_stop_the_run(replies, stops):
    guard = RunGuard(0.1, where="https://gw.example/router/rest")
    verdicts = [guard.attempted(reply) for reply in replies]
    stopped = [v for v in verdicts if v is not None]
    assert bool(stopped) == stops
    if stopped:
        assert stopped[0].reason is StopReason.UNREACHABLE
        assert "https://gw.example/router/rest cannot be reached" in stopped[0].message


def test_too_many_means_more_than_the_rate():
    assert too_many(5, 20, 0.2) is True
    assert too_many(4, 20, 0.2) is False
    assert too_many(0, 0, 0.0) is False
    assert too_many(1, 100, 0.0) is True


def test_the_breaker_trips_only_on_a_full_window_with_more_than_the_rate():
    breaker = FailureBreaker(0.2, window=10)
    assert [breaker.record(True) for _ in range(9)] == [False] * 9  # not full yet
    assert breaker.record(False) is True  # 9 of 10
    breaker = FailureBreaker(0.2, window=10)
    results = [breaker.record(i in (0, 1)) for i in range(10)]  # 2 of 10: not more than 0.2
    assert results == [False] * 10
    assert breaker.record(True) is False  # the window slid: a failure left, 2 of 10 again
    assert breaker.record(True) is False  # the other early failure left: 2 of 10
    assert breaker.record(True) is True  # 3 of the last 10
    assert breaker.failed == 3
    assert "3/10 failed" in repr(breaker)
    for _ in range(10):
        breaker.record(False)
    assert not breaker.tripped  # the failures left the window


def test_the_digest_names_the_commonest_codes_with_their_first_row():
    digest = FailureDigest()
    for code, row in [("a", 9), ("b", 3), ("b", 4), ("c", 7), ("d", 8), ("b", 5), ("a", 2)]:
        digest.add(code, row)
    assert digest.top(2) == "b ×3 (e.g. row 3), a ×2 (e.g. row 9), 2 more codes"
