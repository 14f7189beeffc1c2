"""The run guard: when a run's answers must stop it, decided with no event loop."""

from __future__ import annotations

import pytest

from importer.failures import UNREACHABLE_AFTER, RunGuard
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
