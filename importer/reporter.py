"""The result report: one row per input row, streamed to a temporary file and renamed at the end.

``.xlsx`` gives a workbook with three sheets, in this order:

- ``results``: ``source_row``, the input columns, then ``Outcome.COLUMNS``, for every row;
- ``failed``: the failed, invalid and not_sent rows, input columns *first* (then ``source_row`` and
  the outcome columns), so the sheet can be fixed in Excel and fed back as input;
- ``summary``: ``item`` / ``value`` pairs, written by ``close``.

A sheet holds at most 1,048,575 data rows (Excel's limit minus the header); past that it continues
in ``results_2``, ``results_3``, ... (``failed_2``, ...), each with the header. A continuation
sheet is added when it is needed, so it sits after the sheets that already exist
(``results, failed, results_2, summary``). Every value is a literal: text is always a string cell
(``=1+1`` stays the text ``=1+1``, an 18-digit ID stays text), and only the integer columns
(``source_row``, ``attempts``, ``elapsed_ms``) are numbers. Excel stores at most 32,767
characters in a cell: longer text is cut there.

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

import csv
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import xlsxwriter
from xlsxwriter.exceptions import XlsxWriterException

from importer.errors import UsageError
from importer.processes import pid_alive
from importer.rows import Outcome, Row, Status

EXCEL_MAX_DATA_ROWS = 1_048_575  # 1,048,576 rows per sheet, minus the header
FAILED_STATUSES = frozenset({Status.FAILED, Status.INVALID, Status.NOT_SENT})
SUMMARY_HEADER = ("item", "value")
_ATTEMPTS = Outcome.COLUMNS.index("attempts")  # followed by elapsed_ms
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ...and "'" itself, so that the loader can undo it exactly (loader.unquoted)
_CSV_QUOTED_START = (*_CSV_FORMULA_START, "'")
_WORKBOOK_OPTIONS = {
    "constant_memory": True,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    "use_zip64": True,  # only parts above 4 GiB get ZIP64 records; without it close() would fail
}


def results_header(input_headers: Sequence[str]) -> tuple[str, ...]:
    return ("source_row", *input_headers, *Outcome.COLUMNS)


def failed_header(input_headers: Sequence[str]) -> tuple[str, ...]:
    return (*input_headers, "source_row", *Outcome.COLUMNS)


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
    ) -> None:
        """``call_columns=False`` (validate, dry run: no call is ever made) leaves ``attempts``
        and ``elapsed_ms`` empty instead of writing zeros; it also saves ~20% of the write time.
        """
        if not 1 <= max_rows_per_sheet <= EXCEL_MAX_DATA_ROWS:
            raise ValueError(f"max_rows_per_sheet must be 1..{EXCEL_MAX_DATA_ROWS}")
        self.path = Path(path)
        self.input_headers = tuple(input_headers)
        self._width = len(self.input_headers)
        self._call_columns = call_columns
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._closed = False
        suffix = self.path.suffix.lower()
        if suffix not in (".xlsx", ".csv"):
            raise UsageError(
                f"Cannot write the result file {self.path}: its name must end with .xlsx or .csv."
            )
        self._prepare_directory()
        self._remove_stale()
        sink: _XlsxSink | _CsvSink
        try:
            if suffix == ".xlsx":
                sink = _XlsxSink(self._tmp, self.input_headers, max_rows_per_sheet)
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
        cells = row.cells
        if len(cells) != self._width:  # keep the outcome columns under their headers
            cells = (*cells, *([""] * self._width))[: self._width]
        values = outcome.values()
        if not self._call_columns:
            values = (*values[:_ATTEMPTS], "", "", *values[_ATTEMPTS + 2 :])
        self._sink.write(row.shown_row, cells, values, outcome.status in FAILED_STATUSES)

    def close(self, summary: Sequence[tuple[str, object]]) -> Path:
        """Write the summary, finish the file and rename it over ``path``; returns ``path``."""
        if self._closed:
            raise RuntimeError("ReportWriter is closed")
        self._closed = True
        try:
            self._sink.finish(summary)
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
                f"Cannot write the result file {self.path}: it is a directory; "
                "give a file name ending with .xlsx or .csv."
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: BaseException) -> UsageError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return UsageError(
            f"Cannot write the result file {self.path} ({reason}); "
            "choose a path in a writable directory with free space."
        )


class _XlsxSink:
    def __init__(self, tmp: Path, input_headers: Sequence[str], limit: int) -> None:
        self._tmp = tmp
        self._tmpdir = tmp.with_name(tmp.name + ".d")
        self._tmpdir.mkdir(exist_ok=True)
        try:
            self._fh: IO[bytes] = open(tmp, "wb")  # noqa: SIM115 - closed in finish/discard
            options = {**_WORKBOOK_OPTIONS, "tmpdir": str(self._tmpdir)}
            self._workbook = xlsxwriter.Workbook(self._fh, options)
            self._results = _Sheet(self._workbook, "results", results_header(input_headers), limit)
            self._failed = _Sheet(self._workbook, "failed", failed_header(input_headers), limit)
        except BaseException:
            self.discard()
            raise

    def write(self, source_row: int, cells: Sequence[str], values: tuple, failed: bool) -> None:
        self._results.append((source_row, *cells, *values))
        if failed:
            self._failed.append((*cells, source_row, *values))

    def finish(self, summary: Iterable[tuple[str, object]]) -> None:
        sheet = _Sheet(self._workbook, "summary", SUMMARY_HEADER, EXCEL_MAX_DATA_ROWS)
        sheet.worksheet.set_column(0, 0, 28)
        sheet.worksheet.set_column(1, 1, 40)
        for item, value in summary:
            sheet.append((str(item), value))
        self._workbook.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def discard(self) -> None:
        workbook = getattr(self, "_workbook", None)
        if workbook is not None:
            for worksheet in workbook.worksheets():
                fh = getattr(worksheet, "row_data_fh", None)  # constant_memory row store
                if fh is not None and not fh.closed:
                    fh.close()
            workbook.fileclosed = True  # nothing to store
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
        self._tmp.unlink(missing_ok=True)
        shutil.rmtree(self._tmpdir, ignore_errors=True)


class _Sheet:
    """One logical sheet, continued as ``name_2``, ``name_3``, ... past ``limit`` data rows."""

    def __init__(self, workbook: Any, name: str, header: Sequence[str], limit: int) -> None:
        self._workbook = workbook
        self.name = name
        self.header = tuple(header)
        self.limit = limit
        self.parts = 0
        self._rows = 0
        self._new_part()

    def _new_part(self) -> None:
        self.parts += 1
        title = self.name if self.parts == 1 else f"{self.name}_{self.parts}"
        self.worksheet = self._workbook.add_worksheet(title)
        self.worksheet.freeze_panes(1, 0)
        self.worksheet.set_column(0, len(self.header) - 1, 14)
        self._rows = 0
        _write_row(self.worksheet, 0, self.header)

    def append(self, values: Sequence[object]) -> None:
        if self._rows == self.limit:
            self._new_part()
        self._rows += 1
        _write_row(self.worksheet, self._rows, values)


def _write_row(worksheet: Any, row: int, values: Iterable[object]) -> None:
    """Each value as a literal: text as a string cell, a number as a number, "" as blank."""
    # The public write_* wrap these in an A1-notation argument converter that costs ~9% of
    # the write time; every check (dimensions, string length) lives in the underscored ones.
    # Pinned to xlsxwriter 3.x in pyproject.toml; tests/test_reporter.py fails loudly when a
    # version renames these internals (and the two in ``discard``) instead of silently slowing.
    write_string = worksheet._write_string
    write_number = worksheet._write_number
    for col, value in enumerate(values):
        if type(value) is str:
            if not value:
                continue
            if value.startswith("<r>") and value.endswith("</r>"):
                _write_rich_literal(worksheet, row, col, value)
            else:
                write_string(row, col, value)
        elif type(value) is int or (type(value) is float and math.isfinite(value)):
            write_number(row, col, value)
        elif isinstance(value, bool):
            worksheet.write_boolean(row, col, value)
        elif value is not None:
            text = value.value if isinstance(value, Status) else str(value)
            if text:
                write_string(row, col, text)


def _write_rich_literal(worksheet: Any, row: int, col: int, text: str) -> None:
    """Write text that looks like ``<r>...</r>``, which xlsxwriter's constant_memory mode would
    take for rich-string XML and write unescaped, as three plain runs: same text, escaped."""
    worksheet.write_rich_string(row, col, text[:1], text[1:2], text[2:])


class _CsvSink:
    def __init__(self, tmp: Path, input_headers: Sequence[str]) -> None:
        self._tmp = tmp
        self._fh = open(tmp, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        self._writer.writerow([_csv_text(h) for h in results_header(input_headers)])

    def write(self, source_row: int, cells: Sequence[str], values: tuple, failed: bool) -> None:
        self._writer.writerow(
            [source_row, *map(_csv_text, cells), *(_csv_value(v) for v in values)]
        )

    def finish(self, summary: Iterable[tuple[str, object]]) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def discard(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


def _csv_text(text: str) -> str:
    return "'" + text if text.startswith(_CSV_QUOTED_START) else text


def _csv_value(value: object) -> object:
    return _csv_text(value) if isinstance(value, str) else value
