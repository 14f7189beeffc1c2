"""The result report: one row per input row, streamed to a temporary file and renamed at the end.

``.xlsx`` gives a workbook with three sheets, in this order:

- ``results``: ``source_row``, the input columns, then ``Outcome.COLUMNS``, for every row;
- ``failed``: the failed, invalid and not_sent rows, input columns *first* (then ``source_row`` and
  the outcome columns), so the sheet can be fixed in Excel and fed back as input;
- ``summary``: written by ``close``: a dashboard (``summary.Dashboard``: a headline, rows per
  status, the top sub_codes, the run's details, calls per minute, each table with its native
  Excel chart), or plain ``item`` / ``value`` pairs.

A sheet holds at most 1,048,575 data rows (Excel's limit minus the header); past that it continues
in ``results_2``, ``results_3``, ... (``failed_2``, ...), each with the header. A continuation
sheet is added when it is needed, so it sits after the sheets that already exist
(``results, failed, results_2, summary``). Every value is a literal: text is always a string cell
(``=1+1`` stays the text ``=1+1``, an 18-digit ID stays text), and only the integer columns
(``source_row``, ``attempts``, ``elapsed_ms``) are numbers. Excel stores at most 32,767
characters in a cell: longer text is cut there.

Made to be read: a bold, frozen header with an autofilter on ``results`` and ``failed``;
column widths that fit the header and the first ``WIDTH_SAMPLE`` rows of each sheet (an 18-digit
ID or a 36-character corp_id shows whole; any column is capped at ``MAX_WIDTH`` characters: a
longer message shows its start, and whole in the formula bar; it does not wrap, because a
wrapped cell needs a taller row, which Excel computes on opening but LibreOffice does not, so
there the lines would run over the rows below); the status cell coloured by conditional
formatting (success and valid green, failed and invalid red, unknown, not_sent and duplicate
amber), so the red rows are two clicks away. All of
it is plain Excel formatting (it opens the same in Excel, WPS and LibreOffice) and costs nothing
per row beyond measuring the sampled cells.

``.csv`` gives the ``results`` columns only: a CSV file holds one table, so there is no ``failed``
and no ``summary`` (``close`` ignores the summary). It is UTF-8 with a BOM (so Excel detects the
encoding), and since CSV has no cell types, text starting with ``=``, ``+``, ``-``, ``@``, tab or
CR gets a leading ``'`` so that a spreadsheet never runs it as a formula (OWASP's advice).

Memory does not grow with the number of rows: xlsxwriter's ``constant_memory`` mode writes each row
to a per-sheet temporary file as soon as the next one starts. Everything goes to
``.{name}.tmp-{pid}`` next to the target (xlsxwriter's own temporary files to
``.{name}.tmp-{pid}.d/``) and ``close`` renames it over the target with ``os.replace``, so the
target is either the previous file or the complete new one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import math
import multiprocessing
import os
import shutil
import signal
import stat
import sys
import traceback
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import xlsxwriter
from xlsxwriter.exceptions import XlsxWriterException

from importer.config import is_result_name
from importer.errors import UsageError
from importer.i18n import _, pgettext
from importer.labels import DECISION, ERROR, SOURCE_ROW, Sheet, is_label, label, shown_status
from importer.loader import cell_text
from importer.processes import pid_alive
from importer.rows import (
    DECISIONS_SHOWN,
    EXACT_FLOAT_LIMIT,
    Outcome,
    Row,
    Status,
    rounded_by_excel,
)
from importer.summary import Dashboard

EXCEL_MAX_DATA_ROWS = 1_048_575  # 1,048,576 rows per sheet, minus the header
FAILED_STATUSES = frozenset({Status.FAILED, Status.INVALID, Status.NOT_SENT})
CHECK_STATUSES = frozenset({Status.UNKNOWN})
SUMMARY_HEADER = ("item", "value")
_ATTEMPTS = Outcome.COLUMNS.index("attempts")  # followed by elapsed_ms
# the result columns written as numbers (every other cell is text, but for a rounded number
# cell of an input column: see ``_XlsxSink.rounded``); ``report_reader`` reads them back so
INTEGER_COLUMNS = frozenset({SOURCE_ROW, *Outcome.COLUMNS[_ATTEMPTS : _ATTEMPTS + 2]})
_ERROR = Outcome.COLUMNS.index("error")  # the last one
_TEXT_FORMAT = "@"  # Excel's Text: a value typed into such a cell stays text (a whole ID)
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ...and "'" itself, so that the loader can undo it exactly (loader.unquoted)
_CSV_QUOTED_START = (*_CSV_FORMULA_START, "'")
WIDTH_SAMPLE = 1000  # rows per sheet measured for the column widths
MAX_WIDTH = 60  # characters: the widest a column gets
_STATUS_COLOURS = {  # (font, fill) per status, Excel's own "good", "bad" and "neutral" styles
    "success": ("#006100", "#C6EFCE"),
    "valid": ("#006100", "#C6EFCE"),
    "failed": ("#9C0006", "#FFC7CE"),
    "invalid": ("#9C0006", "#FFC7CE"),
    "unknown": ("#9C5700", "#FFEB9C"),
    "not_sent": ("#9C5700", "#FFEB9C"),
    "duplicate": ("#9C5700", "#FFEB9C"),
}
_WORKBOOK_OPTIONS = {
    "constant_memory": True,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    "use_zip64": True,  # only parts above 4 GiB get ZIP64 records; without it close() would fail
}


def results_header(input_headers: Sequence[str]) -> tuple[str, ...]:
    return (label(SOURCE_ROW), *input_headers, *map(label, Outcome.COLUMNS))


def failed_header(input_headers: Sequence[str]) -> tuple[str, ...]:
    """The user's columns, then the reason (``error``) beside them, then the rest."""
    return (*input_headers, label(ERROR), label(SOURCE_ROW), *map(label, Outcome.COLUMNS[:_ERROR]))


def check_header(input_headers: Sequence[str]) -> tuple[str, ...]:
    """The user's columns, the ``decision`` a person fills in, the reason, then the rest."""
    return (
        *input_headers,
        label(DECISION),
        label(ERROR),
        label(SOURCE_ROW),
        *map(label, Outcome.COLUMNS[:_ERROR]),
    )


def part_title(name: str, part: int) -> str:
    """The title of a sheet's ``part``: ``results``, then ``results_2``, ``results_3``..."""
    return name if part == 1 else f"{name}_{part}"


def is_part_of(title: str, key: str) -> bool:
    """Whether ``title`` is a part of the sheet ``key`` (``results``, ``results_2``...), by any
    label the sheet has had (``labels``)."""
    base, _sep, part = title.rpartition("_")
    return is_label(title, key) or (part.isdigit() and is_label(base, key))


def scientific(text: str) -> str:
    """A number's text as Excel shows a rounded one, ``3.96743391396743E+17``: how a number
    cell that Excel rounded is written to a CSV, so that it is refused again when fed back."""
    mantissa, exponent = f"{float(text):.14E}".split("E")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}E{exponent[0]}{int(exponent[1:]):02d}"


class ReportWriter:
    """Writes the report row by row; ``close`` publishes it, ``abort`` throws it away.

    Use as a context manager: leaving the block with an exception (Ctrl-C included) aborts,
    leaving it normally without having called ``close`` closes with an empty summary.
    """

    def __init__(
        self,
        path: Path,
        input_headers: Sequence[str],
        *,
        max_rows_per_sheet: int = EXCEL_MAX_DATA_ROWS,
        call_columns: bool = True,
        text_columns: Iterable[int] = (),
        number_columns: Iterable[int] = (),
        like: Path | None = None,
        rows: int | None = None,
    ) -> None:
        """``call_columns=False`` (validate, dry run: no call is ever made) leaves ``attempts``
        and ``elapsed_ms`` empty instead of writing zeros (it also saves ~20% of the write time)
        and the workbook has no ``check`` sheet. ``text_columns`` are the indexes of the input
        columns formatted as Text (the ID columns: a value retyped there stays whole); a column
        that holds a value of 16+ digits is formatted as Text too. ``like`` is the input: the
        report, which echoes every cell of it, is made no more open than it (a ``chmod 600``
        input gives a ``600`` workbook). ``number_columns`` are the spec's Number fields: a number
        cell there up to 2^53 is exact (it was sent as it is) and is written so. ``rows``:
        about how many rows will be written (None: unknown); a workbook of ``FORKED_ROWS`` or
        more is written by a child process (``_ForkedSink``) while this one reads the rows.
        """
        if not 1 <= max_rows_per_sheet <= EXCEL_MAX_DATA_ROWS:
            raise ValueError(f"max_rows_per_sheet must be 1..{EXCEL_MAX_DATA_ROWS}")
        self.path = Path(path)
        self.input_headers = tuple(input_headers)
        self._width = len(self.input_headers)
        self._call_columns = call_columns
        self._like = like
        self._numbers = frozenset(number_columns)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._closed = False
        suffix = self.path.suffix.lower()
        if not is_result_name(self.path):
            raise UsageError(
                _(
                    "Cannot write the result file {path}: its name must end with .xlsx or .csv."
                ).format(path=self.path)
            )
        self._prepare_directory()
        self._remove_stale()
        sink: _XlsxSink | _ForkedSink | _CsvSink
        try:
            if suffix == ".xlsx":
                make = functools.partial(
                    _XlsxSink,
                    self._tmp,
                    self.input_headers,
                    max_rows_per_sheet,
                    frozenset(text_columns),
                    checks=call_columns,
                )
                forked = rows is not None and rows >= FORKED_ROWS and _can_fork()
                sink = _ForkedSink(make, self._tmp) if forked else make()
            else:
                sink = _CsvSink(self._tmp, self.input_headers)
        except OSError as exc:
            raise self._unwritable(exc) from None
        self._sink = sink

    def write(self, row: Row, outcome: Outcome) -> None:
        """Add one row (call in input order).

        ``row.cells`` is padded or cut to the number of input headers, so that the outcome columns
        always sit under their headers.
        """
        if self._closed:
            raise RuntimeError("ReportWriter is closed")
        cells: Sequence[object] = row.cells
        if len(cells) != self._width:  # keep the outcome columns under their headers
            cells = (*cells, *([""] * self._width))[: self._width]
        if row.numeric:
            cells = self._rounded_kept(cells, row.numeric)
        values = outcome.values()
        if not self._call_columns:
            values = (*values[:_ATTEMPTS], "", "", *values[_ATTEMPTS + 2 :])
        status = outcome.status
        sheet = "failed" if status in FAILED_STATUSES else ""
        if status in CHECK_STATUSES:
            sheet = "check"
        try:
            self._sink.write(row.shown_row, cells, values, sheet)
        except OSError as exc:  # a full disk mid-write: one sentence, no temporary file left
            self.abort()
            raise self._unwritable(exc) from None

    def _rounded_kept(self, cells: Sequence[object], numeric: frozenset[int]) -> Sequence[object]:
        """The number cells Excel rounded, in the sink's form of a rounded number (a number
        cell again, or Excel's scientific text in a CSV), so that fed back they are refused
        again. A Number field's cell up to 2^53 is exact (it was sent as it is) and stays text."""
        out: list[object] | None = None
        for i in numeric:
            text = cells[i] if i < len(cells) else None
            if not (isinstance(text, str) and rounded_by_excel(text)):
                continue
            if i in self._numbers and not _beyond(text):
                continue
            if out is None:
                out = list(cells)
            out[i] = self._sink.rounded(text)
        return cells if out is None else out

    def close(self, summary: Dashboard | Sequence[tuple[str, object]]) -> Path:
        """Write the summary (a ``Dashboard``, or plain item/value pairs), finish the file and
        rename it over ``path``; returns ``path``. A CSV report has no summary."""
        if self._closed:
            raise RuntimeError("ReportWriter is closed")
        self._closed = True
        try:
            self._sink.finish(summary)
            if self._like is not None:
                no_more_open_than(self._tmp, self._like)
            os.replace(self._tmp, self.path)
        except BaseException as exc:  # a second Ctrl-C too: never leave the temp file behind
            self._sink.discard()
            if isinstance(exc, (OSError, XlsxWriterException)):
                raise self._unwritable(exc) from None
            raise
        return self.path

    def abort(self) -> None:
        """Remove the temporary file; the target is left as it was. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._sink.discard()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close(())

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ReportWriter {str(self.path)!r} {state}>"

    def _remove_stale(self) -> None:
        """Temporary files of runs that were killed while writing this report (pid gone)."""
        for tmp in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            pid = tmp.name.rsplit(".tmp-", 1)[1].split(".", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def _prepare_directory(self) -> None:
        if self.path.is_dir():
            raise UsageError(
                _(
                    "Cannot write the result file {path}: it is a directory; "
                    "give a file name ending with .xlsx or .csv."
                ).format(path=self.path)
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: BaseException) -> UsageError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return UsageError(
            _(
                "Cannot write the result file {path} ({reason}); "
                "choose a path in a writable directory with free space."
            ).format(path=self.path, reason=reason)
        )


FORKED_ROWS = 10_000  # fewer rows are written before a child process would have started
_FORKED_BATCH = 1_000  # rows a message to the child holds


def _row_store(tmp: Path) -> Path:
    """The folder of xlsxwriter's row stores beside the temporary workbook ``tmp``."""
    return tmp.with_name(tmp.name + ".d")


def _can_fork() -> bool:
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods()


class _ForkedSink:
    """The workbook written by a child process (forked: it has everything imported): the
    rows go to it in batches through a pipe, so that on a machine of two cores reading and
    checking the rows (this process) and writing the XML (xlsxwriter, the child) go on at the
    same time. The child ignores Ctrl-C (this process decides: ``discard``) and ends when the
    pipe does (this process killed): its temporary files go with it. An error of the child
    (a full disk) is raised here as it was raised there, at the next batch or at ``finish``."""

    def __init__(self, make: Callable[[], _XlsxSink], tmp: Path) -> None:
        self._tmp = tmp
        self._rows: list[tuple] = []
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._child = context.Process(
            target=_write_in_child, args=(make, tmp, theirs, self._pipe), daemon=True
        )
        self._child.start()
        theirs.close()
        self._answer()  # the sink made (its files opened), or the error that stopped it

    @staticmethod
    def rounded(text: str) -> object:
        return _XlsxSink.rounded(text)

    def write(self, source_row: int, cells: Sequence[object], values: tuple, sheet: str) -> None:
        self._rows.append((source_row, cells, values, sheet))
        if len(self._rows) >= _FORKED_BATCH:
            self._send()

    def _send(self) -> None:
        if self._pipe.poll():  # the child stopped early: its error, now
            self._answer()
        rows, self._rows = self._rows, []
        self._tell(("rows", rows))

    def finish(self, summary: Dashboard | Iterable[tuple[str, object]]) -> None:
        if self._rows:
            self._send()
        self._tell(("finish", summary if isinstance(summary, Dashboard) else list(summary)))
        self._answer()
        self._child.join()

    def discard(self) -> None:
        with contextlib.suppress(OSError, EOFError, ValueError):
            self._pipe.send(("discard", None))
            if self._pipe.poll(_FORKED_WAIT_S):
                self._pipe.recv()
        self._child.join(_FORKED_WAIT_S)
        if self._child.is_alive():
            self._child.kill()
            self._child.join()
        with contextlib.suppress(OSError):
            self._pipe.close()
        # what a child that died left behind
        self._tmp.unlink(missing_ok=True)
        shutil.rmtree(_row_store(self._tmp), ignore_errors=True)

    def _tell(self, message: tuple) -> None:
        try:
            self._pipe.send(message)
        except (OSError, EOFError) as exc:  # the child is gone: its error, if it said one
            if self._pipe.poll():
                self._answer()
            raise OSError(f"the workbook's writer process ended ({exc})") from None

    def _answer(self) -> None:
        try:
            kind, error = self._pipe.recv()
        except (OSError, EOFError):
            self._child.join()
            raise OSError(
                f"the workbook's writer process ended (exit code {self._child.exitcode})"
            ) from None
        if kind == "error":
            raise error


_FORKED_WAIT_S = 30.0  # a discard waits this long for the child to remove its files


def _write_in_child(make: Callable[[], _XlsxSink], tmp: Path, pipe: Any, parents: Any) -> None:
    """The child's loop: make the sink, write each batch, then finish or discard it."""
    parents.close()  # else the pipe never ends when the parent dies: the child would wait on
    # Ctrl-C, a kill (timeout, systemctl stop) and a hang-up are the parent's to handle: it
    # finishes the workbook or discards it; a parent killed outright ends the pipe, and this
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sink = None
    try:
        sink = make()
        pipe.send(("ready", None))
        while True:
            kind, payload = pipe.recv()
            if kind == "rows":
                for source_row, cells, values, sheet in payload:
                    sink.write(source_row, cells, values, sheet)
            elif kind == "finish":
                sink.finish(payload)
                sink = None
                try:
                    pipe.send(("done", None))
                except OSError:  # the parent died before it could publish the workbook
                    tmp.unlink(missing_ok=True)
                return
            else:  # discard
                break
    except EOFError:  # the parent is gone
        pass
    except Exception as exc:  # a full disk, xlsxwriter's own: the parent raises it
        with contextlib.suppress(Exception):
            pipe.send(("error", exc))
    finally:
        if sink is not None:
            sink.discard()
        with contextlib.suppress(Exception):
            pipe.send(("discarded", None))
        os._exit(0)  # nothing of the parent's (atexit, its threads' locks) runs here


def _drop_quietly(exc: BaseException) -> None:
    """Let go of what the frames of ``exc`` hold without a word: xlsxwriter's ``close`` that
    failed (a full disk while zipping) leaves its ZipFile open in a frame, whose finalizer
    would print "Exception ignored ... No space left" beside the one sentence we say."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _unraisable: None
    try:
        seen: set[int] = set()
        chained: BaseException | None = exc
        while chained is not None and id(chained) not in seen:  # xlsxwriter wraps the OSError
            seen.add(id(chained))
            traceback.clear_frames(chained.__traceback__)
            chained = chained.__context__ or chained.__cause__
        gc.collect()
    finally:
        sys.unraisablehook = hook


class _XlsxSink:
    """``results``, ``failed`` and ``check`` (the unknown rows; not in a validate workbook),
    then ``summary``. A number cell Excel rounded stays a number cell; the ID columns are Text."""

    def __init__(
        self,
        tmp: Path,
        input_headers: Sequence[str],
        limit: int,
        text_columns: frozenset[int],
        checks: bool,
    ) -> None:
        self._tmp = tmp
        self._tmpdir = _row_store(tmp)
        self._tmpdir.mkdir(mode=0o700, exist_ok=True)  # xlsxwriter's row stores: private
        try:
            self._fh: IO[bytes] = open(tmp, "wb")  # noqa: SIM115 - closed in finish/discard
            options = {**_WORKBOOK_OPTIONS, "tmpdir": str(self._tmpdir)}
            self._workbook = xlsxwriter.Workbook(self._fh, options)
            self._looks = _Looks(self._workbook)
            width = len(input_headers)
            sheet = functools.partial(_Sheet, self._workbook, limit=limit, looks=self._looks)
            self._results = sheet(
                label(Sheet.RESULTS),
                results_header(input_headers),
                text=frozenset(i + 1 for i in text_columns),
                freeze=min(2, width + 1),  # source_row and the user's first column
            )
            self._failed = sheet(
                label(Sheet.FAILED),
                failed_header(input_headers),
                text=text_columns,
                freeze=min(1, width),
            )
            self._check = None
            if checks:
                self._check = sheet(
                    label(Sheet.CHECK),
                    check_header(input_headers),
                    text=text_columns | {width},
                    freeze=min(1, width),
                    choices=(width, DECISIONS_SHOWN),
                )
        except BaseException:
            self.discard()
            raise

    @staticmethod
    def rounded(text: str) -> object:
        """A number cell Excel rounded, as a number cell again (a rounded ID typed over with
        the full text is then the only way the row passes), or its scientific text where the
        number would not read back as the same text."""
        value = float(text)
        return value if cell_text(value)[0] == text else scientific(text)

    def write(self, source_row: int, cells: Sequence[object], values: tuple, sheet: str) -> None:
        self._results.append((source_row, *cells, *values))
        if sheet == "failed":
            self._failed.append((*cells, values[_ERROR], source_row, *values[:_ERROR]))
        elif sheet == "check" and self._check is not None:
            self._check.append((*cells, "", values[_ERROR], source_row, *values[:_ERROR]))

    def finish(self, summary: Dashboard | Iterable[tuple[str, object]]) -> None:
        self._results.finish(table=True)
        self._failed.finish(table=True)
        if self._check is not None:
            self._check.finish(table=True)
        if isinstance(summary, Dashboard):
            _write_dashboard(self._workbook, self._looks, summary)
        else:
            sheet = _Sheet(
                self._workbook,
                label(Sheet.SUMMARY),
                SUMMARY_HEADER,
                EXCEL_MAX_DATA_ROWS,
                self._looks,
            )
            for item, value in summary:
                sheet.append((str(item), value))
            sheet.finish(table=False)
        try:
            self._workbook.close()
        except BaseException as exc:
            _drop_quietly(exc)
            raise
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def discard(self) -> None:
        """Close and remove everything; a close that fails (its buffer cannot be flushed on a
        full disk) is ignored: the file is removed anyway."""
        workbook = getattr(self, "_workbook", None)
        if workbook is not None:
            for worksheet in workbook.worksheets():
                fh = getattr(worksheet, "row_data_fh", None)  # constant_memory row store
                if fh is not None and not fh.closed:
                    with contextlib.suppress(OSError):
                        fh.close()
            workbook.fileclosed = True  # nothing to store
        fh = getattr(self, "_fh", None)
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)
        shutil.rmtree(self._tmpdir, ignore_errors=True)


class _Looks:
    """The workbook's formats, made once: a bold header, status colours, the summary's."""

    def __init__(self, workbook: Any) -> None:
        self.headline = workbook.add_format({"bold": True, "font_size": 14})
        self.percent = workbook.add_format({"num_format": "0.0%"})
        self.header = workbook.add_format({"bold": True, "bottom": 1})
        self.text = workbook.add_format({"num_format": _TEXT_FORMAT})
        self.status = {
            status: workbook.add_format({"font_color": font, "bg_color": fill})
            for status, (font, fill) in _STATUS_COLOURS.items()
        }


class _Sheet:
    """One logical sheet, continued as ``name_2``, ``name_3``, ... past ``limit`` data rows.

    ``text`` are the columns formatted as Text (each cell written there, and the column for
    cells typed later); a column where a 16+ digit value turns up in the first
    ``WIDTH_SAMPLE`` rows joins them. ``freeze`` columns
    stay in view with the header; ``choices`` is (column, words): a drop-down list there.
    Every part prints landscape, one page wide, with the header on every page.
    """

    def __init__(
        self,
        workbook: Any,
        name: str,
        header: Sequence[str],
        limit: int,
        looks: _Looks,
        *,
        text: frozenset[int] = frozenset(),
        freeze: int = 0,
        choices: tuple[int, Sequence[str]] | None = None,
    ) -> None:
        self._workbook = workbook
        self._looks = looks
        self.name = name
        self.header = tuple(header)
        self.limit = limit
        self.parts = 0
        # each column's format: Text for the ID columns (more join in the sample rows)
        self._by_column = [looks.text if c in text else None for c in range(len(header))]
        self._freeze = freeze
        self._choices = choices
        self._rows = 0
        self._done: list[tuple[Any, int, list[int]]] = []  # (worksheet, rows, widths) per part
        self._new_part()

    def _new_part(self) -> None:
        if self.parts:
            self._done.append((self.worksheet, self._rows, self._widths))
        self.parts += 1
        title = part_title(self.name, self.parts)
        self.worksheet = self._workbook.add_worksheet(title)
        self.worksheet.freeze_panes(1, self._freeze)
        print_setup(self.worksheet, header=True)
        self._rows = 0
        self._widths = [display_width(h) for h in self.header]
        write_string = self.worksheet._write_string  # see _write_row
        for col, title in enumerate(self.header):
            write_string(0, col, title, self._looks.header)

    def append(self, values: Sequence[object]) -> None:
        if self._rows == self.limit:
            self._new_part()
        self._rows += 1
        if self._rows <= WIDTH_SAMPLE:
            # the sample rows also find the columns of 16+ digit values (IDs): Text from here on
            widths, looks = self._widths, self._by_column
            for col, value in enumerate(values):
                if type(value) is str:
                    width = display_width(value)
                    if looks[col] is None and width > 15 and value.isascii() and value.isdigit():
                        looks[col] = self._looks.text
                else:
                    width = len(str(value))
                if width > widths[col]:
                    widths[col] = width
        _write_row(self.worksheet, self._rows, values, self._by_column)

    def finish(self, table: bool) -> None:
        """Column widths on every part (the Text columns formatted so); with ``table``, the
        autofilter and the status colours."""
        self._done.append((self.worksheet, self._rows, self._widths))
        # the outcome's status column (after the input's, which may hold a column so named)
        shown = label("status")
        status = max((i for i, h in enumerate(self.header) if h == shown), default=None)
        for worksheet, rows, widths in self._done:
            for col, width in enumerate(widths):
                look = self._by_column[col]
                worksheet.set_column(col, col, min(max(width, 6), MAX_WIDTH) + 2, look)
            if self._choices is not None:
                col, words = self._choices
                worksheet.data_validation(
                    1,
                    col,
                    max(rows, 1) + 1000,  # room for rows pasted below
                    col,
                    {"validate": "list", "source": list(words), "error_type": "warning"},
                )
            if not table:
                continue
            worksheet.autofilter(0, 0, max(rows, 1), len(self.header) - 1)
            if status is not None and rows:
                for word, look in self._looks.status.items():
                    worksheet.conditional_format(
                        1,
                        status,
                        rows,
                        status,
                        {"type": "cell", "criteria": "==", "value": f'"{word}"', "format": look},
                    )


def _beyond(text: object) -> bool:
    """A Number field's number cell beyond 2^53 (not exact: refused; one up to it was sent)."""
    try:
        return abs(int(str(text))) > EXACT_FLOAT_LIMIT
    except ValueError:
        return True


def no_more_open_than(path: Path, like: Path) -> None:
    """Take from ``path`` every permission ``like`` does not have (its owner keeps read and
    write): a file that holds a copy of someone's rows is no more readable than they are."""
    try:
        allowed = stat.S_IMODE(like.stat().st_mode) | stat.S_IRUSR | stat.S_IWUSR
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~allowed:
            os.chmod(path, mode & allowed)
    except OSError:  # the input gone (a temporary one): the file keeps the umask's mode
        pass


def print_setup(worksheet: Any, header: bool) -> None:
    """Landscape, one page wide (as many pages down as it takes), the header on every page."""
    worksheet.set_landscape()
    worksheet.set_paper(9)  # A4
    worksheet.fit_to_pages(1, 0)
    if header:
        worksheet.repeat_rows(0)


def _write_dashboard(workbook: Any, looks: _Looks, board: Dashboard) -> None:
    """The ``summary`` sheet as a dashboard, top to bottom: the headline and what the exit code
    means; rows per status; the invalid rows by reason; the top sub_codes; the run's details
    and limits; calls per minute.
    Each table of numbers has its native Excel chart to its right (column G)."""
    sheet = workbook.add_worksheet(label(Sheet.SUMMARY))
    print_setup(sheet, header=False)
    write = sheet._write_string  # see _write_row
    widths = [28, 12, 40, 12, 50]
    for col, width in enumerate(widths):
        sheet.set_column(col, col, width)
    write(0, 0, board.headline, looks.headline)
    write(1, 0, board.verdict)
    row = 3
    charts: list[tuple[int, Any]] = []

    def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> int:
        """A titled table from ``row``; returns its first data row."""
        nonlocal row
        write(row, 0, title, looks.headline)
        for col, name in enumerate(header):
            write(row + 1, col, name, looks.header)
        first = row + 2
        for offset, values in enumerate(rows):
            _write_row(sheet, first + offset, values)
        row = first + max(len(rows), 1) + 1
        return first

    total = sum(n for _status, n in board.statuses) or 1
    per_status = _("Rows per status")
    first = table(per_status, (pgettext("column", "status"), _("rows"), _("share")), [])
    for offset, (status, n) in enumerate(board.statuses):  # rows in order (constant_memory)
        write(first + offset, 0, shown_status(status), looks.status.get(status))
        sheet._write_number(first + offset, 1, n)
        sheet._write_number(first + offset, 2, n / total, looks.percent)
    row = first + max(len(board.statuses), 1) + 1
    if board.statuses:
        colours = [
            {"fill": {"color": _STATUS_COLOURS.get(s, ("", "#BFBFBF"))[1]}}
            for s, _n in board.statuses
        ]
        series = {"points": colours, "data_labels": {"value": True}}
        chart = _chart(workbook, "column", per_status, first, len(board.statuses), series)
        charts.append((first - 2, chart))
    if board.reasons:  # the reason last: long text, it runs on over the empty cells right
        table(
            _("Invalid rows by reason"),
            (_("rows"), _("example row"), _("reason (field and rule)")),
            [
                (n, _("row {row}").format(row=row) if row is not None else "", why)
                for why, n, row in board.reasons
            ],
        )
    if board.codes:
        top = _("Top sub_codes")
        first = table(
            top,
            (
                pgettext("column", "sub_code"),
                _("rows"),
                _("the platform's message"),
                _("example row"),
                _("what to do"),
            ),
            board.codes,
        )
        series = {"fill": {"color": "#FFC7CE"}, "border": {"color": "#9C0006"}}
        chart = _chart(workbook, "bar", top, first, len(board.codes), series)
        chart.set_y_axis({"reverse": True})
        charts.append((first - 2, chart))
    header = tuple(pgettext("column", name) for name in SUMMARY_HEADER)
    table(_("Run"), header, [(str(item), value) for item, value in board.run])
    if board.per_minute:
        first = table(_("Calls per minute"), (_("minute"), _("calls")), board.per_minute)
        marker = {"type": "circle" if len(board.per_minute) < 30 else "none"}
        title = _("Calls per minute (local time)")
        chart = _chart(workbook, "line", title, first, len(board.per_minute), {"marker": marker})
        charts.append((first - 2, chart))
    at = 3  # the charts stack down column G, never over each other
    for table_row, chart in charts:
        at = max(at, table_row)
        sheet.insert_chart(at, 6, chart)
        at += 16


def _chart(workbook: Any, kind: str, title: str, first: int, rows: int, series: dict) -> Any:
    """A native chart of the summary table whose ``rows`` start at row ``first``: labels in
    column A, values in column B."""
    chart = workbook.add_chart({"type": kind})
    last = first + rows - 1
    chart.add_series(
        {
            "name": title,
            "categories": [label(Sheet.SUMMARY), first, 0, last, 0],
            "values": [label(Sheet.SUMMARY), first, 1, last, 1],
            **series,
        }
    )
    chart.set_title({"name": title})
    chart.set_legend({"none": True})
    return chart


def display_width(text: str) -> int:
    """Columns a text takes in a spreadsheet: a wide (CJK) character counts two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _write_row(
    worksheet: Any, row: int, values: Iterable[object], looks: Sequence[Any] | None = None
) -> None:
    """Each value as a literal: text as a string cell, a number as a number, "" as blank;
    ``looks`` is each column's format (None: General), e.g. Text for an ID column."""
    # The public write_* wrap these in an A1-notation argument converter that costs ~9% of
    # the write time; every check (dimensions, string length) lives in the underscored ones.
    # Pinned to xlsxwriter 3.x in pyproject.toml; tests/test_reporter.py fails loudly when a
    # version renames these internals (and the two in ``discard``) instead of silently slowing.
    write_string = worksheet._write_string
    write_number = worksheet._write_number
    for col, value in enumerate(values):
        look = looks[col] if looks is not None else None
        kind = type(value)
        if kind is str:
            if not value:
                continue
            if value.startswith("<r>") and value.endswith("</r>"):
                _write_rich_literal(worksheet, row, col, value, look)
            else:
                write_string(row, col, value, look)
        elif kind is int or (kind is float and math.isfinite(value)):
            write_number(row, col, value, look)
        elif isinstance(value, bool):
            worksheet.write_boolean(row, col, value)
        elif value is not None:
            text_value = value.value if isinstance(value, Status) else str(value)
            if text_value:
                write_string(row, col, text_value, look)


def _write_rich_literal(worksheet: Any, row: int, col: int, text: str, look: Any = None) -> None:
    """Write text that looks like ``<r>...</r>``, which xlsxwriter's constant_memory mode would
    take for rich-string XML and write unescaped, as three plain runs: same text, escaped."""
    if look is None:
        worksheet.write_rich_string(row, col, text[:1], text[1:2], text[2:])
    else:
        worksheet.write_rich_string(row, col, text[:1], text[1:2], text[2:], look)


class _CsvSink:
    def __init__(self, tmp: Path, input_headers: Sequence[str]) -> None:
        self._tmp = tmp
        self._fh = open(tmp, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        self._writer.writerow([_csv_text(h) for h in results_header(input_headers)])

    @staticmethod
    def rounded(text: str) -> object:
        """A number cell Excel rounded, in Excel's scientific form (a CSV has no cell types:
        the form is what makes the row refused again when the CSV is fed back)."""
        return scientific(text)

    def write(self, source_row: int, cells: Sequence[object], values: tuple, sheet: str) -> None:
        self._writer.writerow(
            [source_row, *map(_csv_value, cells), *(_csv_value(v) for v in values)]
        )

    def finish(self, summary: Iterable[tuple[str, object]]) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # a full disk: the buffer cannot be flushed
            self._fh.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)


def _csv_text(text: str) -> str:
    return "'" + text if text.startswith(_CSV_QUOTED_START) else text


def _csv_value(value: object) -> object:
    return _csv_text(value) if isinstance(value, str) else value
