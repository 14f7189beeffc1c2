"""Exit codes: what a command tells cron and scripts, decided in one place.

``for_file`` is the code of one input from its summary, ``for_error`` the code of an error that
stopped a command before or instead of a run, ``worst`` the code of a command over several
inputs. The CLI only returns it; ``ExitCode.meaning`` is how messages and summaries say it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from importer.errors import AbortedError, ImporterError, JournalLost
from importer.i18n import N_, _
from importer.rows import Status
from importer.steps import StopReason
from importer.summary import FileSummary


class ExitCode(IntEnum):
    OK = 0
    ROWS = 1  # some rows are not done: the workbook says which
    USAGE = 2  # nothing was sent: a bad option, input, spec or journal
    ABORTED = 3  # the platform refused the app, or the data failed too often to go on
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143

    @property
    def meaning(self) -> str:
        """What the code says, in the current language (the code itself is the contract)."""
        return _(_MEANINGS[self])


_MEANINGS = {
    ExitCode.OK: N_("every row succeeded, was skipped as already sent, or is valid"),
    ExitCode.ROWS: N_("some rows failed, are invalid, duplicate, unknown or not sent"),
    ExitCode.USAGE: N_("nothing was sent: fix the option, input, spec or journal named"),
    ExitCode.ABORTED: N_(
        "the run stopped early: the platform refused the app, or too many rows failed"
    ),
    ExitCode.SIGHUP: N_("stopped by SIGHUP, after writing the workbook"),
    ExitCode.SIGINT: N_("stopped by Ctrl-C (SIGINT), after writing the workbook"),
    ExitCode.SIGTERM: N_("stopped by SIGTERM, after writing the workbook"),
}
SIGNALS = {1: ExitCode.SIGHUP, 2: ExitCode.SIGINT, 15: ExitCode.SIGTERM}
ABORTS = frozenset(
    {
        StopReason.FATAL,
        StopReason.BAN_TOO_LONG,
        StopReason.CANARY,
        StopReason.FAILURE_RATE,
        StopReason.UNREACHABLE,
    }
)
NOT_DONE = (Status.FAILED, Status.INVALID, Status.DUPLICATE, Status.UNKNOWN, Status.NOT_SENT)
# For several inputs the worst code wins; a signal is worse than any row, Ctrl-C the worst.
_SEVERITY = [ExitCode.OK, ExitCode.ROWS, ExitCode.USAGE, ExitCode.ABORTED]
_SEVERITY += [ExitCode.SIGHUP, ExitCode.SIGTERM, ExitCode.SIGINT]


def for_signal(signal: int | None) -> ExitCode:
    return SIGNALS.get(signal or 2, ExitCode.SIGINT)


def for_error(error: ImporterError) -> ExitCode:
    return ExitCode.ABORTED if isinstance(error, (AbortedError, JournalLost)) else ExitCode.USAGE


def for_file(summary: FileSummary) -> ExitCode:
    """0 all success/skipped/valid, 1 some rows not, 3 aborted, 129/130/143 a signal."""
    if summary.interrupt_signal is not None:
        return for_signal(summary.interrupt_signal)
    if summary.stop_reason in ABORTS:
        return ExitCode.ABORTED
    if summary.command == "run" and summary.workbook is None:
        return ExitCode.ROWS  # sent, but the workbook is missing: `top-import report` rebuilds it
    return ExitCode.ROWS if any(summary.counts[s] for s in NOT_DONE) else ExitCode.OK


def worst(codes: Iterable[int]) -> ExitCode:
    return max((ExitCode(c) for c in codes), key=_SEVERITY.index, default=ExitCode.OK)


__all__ = ["ABORTS", "ExitCode", "for_error", "for_file", "for_signal", "worst"]
