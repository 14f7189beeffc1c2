"""Progress of one pass on stderr: a tqdm bar on a terminal, a log line every few seconds otherwise.

Every long pass shows it the same way: ``validate`` and ``--dry-run`` (checking), a run's
pre-flight, its send pass and its workbook write. ``update(status)`` counts a settled row of the
send pass (the bar shows success and failed as it goes); ``advance()`` a row of the other passes,
which go at up to a million rows a minute, so it looks at the clock only every ``CHECK_EVERY``
rows. ``total`` (the row count estimated from the file size) gives the bar its ETA. The same
moments go to the caller's observer, if any, as ``events.Event`` values (pass started, a row of
the send pass settled, pass ended).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from importer.events import NO_EVENTS, Event, EventKind, Events
from importer.i18n import _, pgettext
from importer.rows import Outcome, Status
from importer.summary import listed, plural

LOG_EVERY_S = 5.0
CHECK_EVERY = 1024  # rows of a fast pass between two looks at the clock
# The passes (``phase``, an events value: English in both languages), as a person reads them.
PHASES = ("checking", "pre-flight", "sending", "writing the workbook")


class Progress:
    def __init__(
        self,
        enabled: bool | None,
        label: str,
        total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
        events: Events = NO_EVENTS,
        source: Path | None = None,
        phase: str = "",
    ) -> None:
        """``enabled``: True a bar, False log lines, None a bar when stderr is a terminal;
        ``quiet``: neither. ``events`` also hears of it, as the pass ``phase`` of ``source``."""
        self._events, self._source, self._phase = events, source or Path(label), phase
        self._counts: Counter[Status] = Counter()
        self._label = label
        self._description = shown_label(label, phase)  # in the run's language, set by now
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._done = 0
        self._told = 0  # rows the bar has been told of
        self._quiet = quiet and not enabled
        use_bar = not self._quiet and (sys.stderr.isatty() if enabled is None else enabled)
        self._bar = (
            tqdm(
                total=total,
                desc=self._description,
                unit=pgettext("progress unit", "row"),
                file=sys.stderr,
                dynamic_ncols=True,
            )
            if use_bar
            else None
        )
        if events:
            events(Event(EventKind.PASS_STARTED, self._source, phase))

    def __repr__(self) -> str:
        return f"<Progress {self._label!r} {self._done} rows>"

    def update(
        self, status: Status, source_row: int | None = None, outcome: Outcome | None = None
    ) -> None:
        """A row of the send pass settled with ``status`` (a call's: its row and outcome)."""
        self._counts[status] += 1
        self._done += 1
        self._tick(postfix=True)
        if self._events:
            self._events(
                Event(
                    EventKind.ROW,
                    self._source,
                    self._phase,
                    self._done,
                    status,
                    source_row=source_row,
                    outcome=outcome,
                )
            )

    def advance(self) -> None:
        """A row of a pass that settles nothing (checking, pre-flight, writing)."""
        self._done += 1
        if self._done % CHECK_EVERY == 0:
            self._tick(postfix=False)

    def _tick(self, postfix: bool) -> None:
        if self._quiet:
            return
        now = self._clock()
        if self._bar is not None:
            if now - self._last_log >= 0.1 or not postfix:
                self._last_log = now
                self._bar.update(self._done - self._told)
                self._told = self._done
                if postfix:
                    self._bar.set_postfix(
                        success=self._counts[Status.SUCCESS],
                        failed=self._counts[Status.FAILED],
                        refresh=False,
                    )
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            text = _("{label}: {progress}").format(label=self._description, progress=self.line())
            print(f"top-import: {text}", file=sys.stderr, flush=True)

    def line(self) -> str:
        """``1,234 rows settled (1,200 success, 34 failed), 9.5 rows/s`` (the status words are
        the contract's in both languages)."""
        rate = self._done / max(self._clock() - self._started, 1e-9)
        rows = plural(self._done, "row")
        if not self._counts:
            return _("{rows}, {rate} rows/s").format(rows=rows, rate=f"{rate:,.0f}")
        parts = listed([f"{n:,} {s.value}" for s, n in sorted(self._counts.items())])
        return _("{rows} settled ({statuses}), {rate} rows/s").format(
            rows=rows, statuses=parts, rate=f"{rate:.1f}"
        )

    def close(self) -> None:
        if self._events:
            self._events(Event(EventKind.PASS_ENDED, self._source, self._phase, self._done))
        if self._bar is not None:
            self._bar.update(self._done - self._told)
            self._told = self._done
            if self._counts:
                self._bar.set_postfix(
                    success=self._counts[Status.SUCCESS],
                    failed=self._counts[Status.FAILED],
                    refresh=False,
                )
            self._bar.close()


def shown_label(label: str, phase: str) -> str:
    """The pass as a person reads it: the pipeline's ``t.csv: sending`` with the phase in the
    current language (``t.csv：发送``)."""
    name, colon, tail = label.rpartition(": ")
    if not colon or tail != phase or phase not in PHASES:
        return label
    return _("{input}: {phase}").format(input=name, phase=pgettext("phase", phase))
