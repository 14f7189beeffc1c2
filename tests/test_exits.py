"""Exit codes, decided in one place and tested as a table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from importer import exits
from importer.errors import AbortedError, InputError, LockedError, UsageError
from importer.exits import ExitCode
from importer.steps import StopReason
from importer.summary import FileSummary


def summary(counts: dict, stop: StopReason = StopReason.NONE, **fields: object) -> FileSummary:
    fields.setdefault("workbook", Path("reports/x.result.xlsx"))
    return FileSummary(Path("x.csv"), "run", counts=Counter(counts), stop_reason=stop, **fields)


@pytest.mark.parametrize(
    ("file", "code"),
    [
        (summary({"success": 3, "skipped": 2}), ExitCode.OK),
        (summary({"success": 3, "failed": 1}), ExitCode.ROWS),
        (summary({"success": 3, "unknown": 1}), ExitCode.ROWS),
        (summary({"success": 3, "not_sent": 1}, StopReason.DEADLINE), ExitCode.ROWS),
        (summary({"success": 3}, workbook=None), ExitCode.ROWS),  # the workbook is missing
        (summary({"failed": 1}, StopReason.FATAL), ExitCode.ABORTED),
        (summary({"failed": 9}, StopReason.CANARY), ExitCode.ABORTED),
        (summary({"failed": 9}, StopReason.FAILURE_RATE), ExitCode.ABORTED),
        (summary({"not_sent": 9}, StopReason.UNREACHABLE), ExitCode.ABORTED),
        (summary({"failed": 1}, StopReason.BAN_TOO_LONG), ExitCode.ABORTED),
        (summary({"success": 1}, StopReason.INTERRUPTED, interrupt_signal=15), ExitCode.SIGTERM),
        (summary({"success": 1}, StopReason.INTERRUPTED, interrupt_signal=1), ExitCode.SIGHUP),
        (summary({"success": 1}, StopReason.INTERRUPTED, interrupt_signal=2), ExitCode.SIGINT),
        (FileSummary(Path("x.csv"), "validate", counts=Counter(valid=3)), ExitCode.OK),
        (FileSummary(Path("x.csv"), "validate", counts=Counter(invalid=1)), ExitCode.ROWS),
    ],
)
def test_the_exit_code_of_one_input(file, code):
    assert exits.for_file(file) is code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (InputError("x"), ExitCode.USAGE),
        (LockedError("x"), ExitCode.USAGE),
        (AbortedError("x"), ExitCode.ABORTED),
    ],
)
def test_the_exit_code_of_an_error(error, code):
    assert exits.for_error(error) is code


@pytest.mark.parametrize(
    ("codes", "code"),
    [
        ([], ExitCode.OK),
        ([0, 1, 0], ExitCode.ROWS),
        ([1, 2], ExitCode.USAGE),
        ([2, 3, 1], ExitCode.ABORTED),
        ([3, 129], ExitCode.SIGHUP),
        ([143, 129], ExitCode.SIGTERM),
        ([143, 130, 3], ExitCode.SIGINT),
    ],
)
def test_several_inputs_exit_with_the_worst_code(codes, code):
    assert exits.worst(codes) is code


def test_every_exit_code_says_what_it_means():
    assert all(code.meaning for code in ExitCode)
