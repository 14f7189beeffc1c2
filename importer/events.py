"""What a run tells a caller that is not a terminal (a web page, a notebook, a scheduler): the
same moments that move the progress bar, as ``Event`` values given to an observer.

    def on_event(event: importer.Event) -> None:
        if event.kind is importer.EventKind.ROW: ...

    importer.run("t.xlsx", on_event=on_event, stop=handle)

An observer is called in the run's own thread (the event loop's, for the send pass) and must
return quickly; an exception it raises is reported once as a warning and never stops the run
(a run half-recorded because a display failed would break the promise of never twice).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from importer.rows import Outcome, Status

if TYPE_CHECKING:
    from importer.summary import FileSummary, Plan


class EventKind(str, Enum):
    PASS_STARTED = "pass_started"  # a pass over the input begins (``phase`` names it)
    PLAN = "plan"  # the pre-flight's Plan: what the send pass is about to send
    ROW = "row"  # a row of the send pass settled (``status``)
    PROBLEM = "problem"  # a check (validate, dry-run) found a row invalid or a duplicate
    PASS_ENDED = "pass_ended"  # ``rows``: how many the pass went through
    FINISHED = "finished"  # the input is done: its ``summary``, workbook written


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    input: Path  # the input as the caller named it
    phase: str = ""  # checking | pre-flight | sending | writing the workbook
    rows: int = 0  # rows of the pass so far
    status: Status | None = None  # ROW: how the row settled
    plan: Plan | None = None  # PLAN
    source_row: int | None = None  # ROW of a call, PROBLEM: the row's number in the input
    outcome: Outcome | None = None  # ROW of a call, PROBLEM: its outcome (code, error...)
    field: str = ""  # PROBLEM: the field its reason is about ("" for a duplicate)
    value: str = ""  # PROBLEM: that field's cell, as read
    summary: FileSummary | None = None  # FINISHED


Observer = Callable[[Event], None]


class Events:
    """An observer made safe to call from the engine: what it raises is a warning, once."""

    def __init__(self, observer: Observer | None) -> None:
        self._observer = observer
        self._failed = False

    def __bool__(self) -> bool:
        return self._observer is not None and not self._failed

    def __call__(self, event: Event) -> None:
        if not self:
            return
        try:
            self._observer(event)  # type: ignore[misc]
        except Exception as exc:  # any failure of the caller's code
            self._failed = True
            warnings.warn(
                f"the on_event observer raised {type(exc).__name__}: {exc}; it is not called "
                "again for this run, which goes on",
                RuntimeWarning,
                stacklevel=2,
            )


NO_EVENTS = Events(None)
