"""Input files -> the header mapping and a stream of ``Row``.

``open_input`` reads only the header: it finds the file's encoding and delimiter (CSV) or its
sheet (workbooks), maps headers to the spec's fields and fails early, with one sentence, on
anything unreadable or a missing required column. ``InputTable.rows()`` then yields the data
rows; each call starts a fresh pass (a run makes three: pre-flight, send, report). A CSV is
streamed from the file on every pass, with memory bounded by one record; a workbook sheet is
parsed whole once, on the first pass, and kept for the others (calamine has no streaming
reader), so its memory grows with the sheet: see the README for the figure per 100k rows.

Row numbers are the ones the user sees: the first row of the sheet or file is 1, blank rows are
counted but never yielded. CSV is read with the standard library's ``csv`` module: in
``benchmarks/bench_read.py`` it streams 1M rows as fast as pandas' C engine in chunks (pandas'
pyarrow engine cannot stream at all), with memory bounded by one record and exact control of
blank lines, ragged rows and record numbering.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import html
import re
import struct
import zipfile
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import olefile
from python_calamine import (
    CalamineError,
    CalamineSheet,
    CalamineWorkbook,
    PasswordError,
    SheetTypeEnum,
    SheetVisibleEnum,
)

from importer.errors import InputError
from importer.i18n import N_, _, both
from importer.labels import DECISION, SOURCE_ROW, Item, Sheet, is_label, key_of, sheet_in
from importer.rows import EXACT_FLOAT_LIMIT, RESULT_COLUMNS, Row
from importer.spec import ApiSpec, normalise_header

CSV_SUFFIXES = (".csv", ".tsv", ".txt")  # the suffixes of each kind of RowSource (_SOURCES)
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
SAMPLE_BYTES = 64 * 1024  # enough text to tell UTF-8 from GB18030 and to sniff the delimiter
DELIMITERS = (",", "\t", ";")

_RESULT_KEYS = (*RESULT_COLUMNS, DECISION)  # columns of a top-import report (``labels``)
_REPORT_MARKERS = (SOURCE_ROW, "status", "request_id")  # ... all in a result CSV's header


def unquoted(cells: list[str]) -> list[str]:
    """The cells of a top-import result CSV as they were before it was written: one leading
    ``'`` removed where the reporter put one (``reporter._csv_text``)."""
    return [c[1:] if c[:1] == "'" else c for c in cells]


_NO_NUMERIC: frozenset[int] = frozenset()

# A raw row: (row number in the file, cells, indexes of number cells).
_RawRow = tuple[int, list[str], frozenset[int]]


@dataclass(frozen=True)
class InputTable:
    """One input file (or sheet) whose header has been read and mapped to the spec's fields.

    ``headers`` are the header cells as read, without the result columns of an earlier report;
    ``columns`` maps each field that has a column to its index in ``headers`` and ``Row.cells``.
    """

    path: Path
    sheet: str | None
    headers: tuple[str, ...]
    columns: Mapping[str, int]
    _source: RowSource | None = field(default=None, repr=False, compare=False)
    _header_row: int = field(default=1, repr=False, compare=False)
    _keep: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    _width: int | None = field(default=None, repr=False, compare=False)  # header cells as read
    _unquote: bool = field(default=False, repr=False, compare=False)  # a top-import result CSV
    _origin: int | None = field(default=None, repr=False, compare=False)  # source_row column
    _decision: int | None = field(default=None, repr=False, compare=False)  # a check sheet's

    @property
    def fed_back(self) -> bool:
        """The input is a result workbook (or CSV) of top-import: it has a ``source_row``."""
        return self._origin is not None

    @functools.cached_property
    def reported_run(self) -> int | None:
        """The journal run that wrote this result workbook (its summary sheet's ``journal
        run``), or None: a check sheet's decisions are about the journal as it was then."""
        if self._source is None or not self._source.workbook or not self.fed_back:
            return None
        return _reported_run(self.path)

    @property
    def has_decisions(self) -> bool:
        """The input is a ``check`` sheet: its ``decision`` column says what to do with each
        ``unknown`` row."""
        return self._decision is not None

    def estimate_rows(self) -> int | None:
        """About how many data rows there are (for a progress bar's ETA), when that is cheap.

        CSV: the line count below the header; workbooks: None (``RowSource.estimate_rows``).
        """
        if self._source is None:
            return None
        return self._source.estimate_rows(self._header_row)

    def most_rows(self) -> int | None:
        """At least as many data rows as there are, when that is cheap (CSV: its line breaks
        below the header, of any kind, and one more for a last line without one); None
        otherwise (a workbook). What a run may plan its daily quota on without reading them."""
        if self._source is None:
            return None
        return self._source.most_rows(self._header_row)

    def rows(self) -> Iterator[Row]:
        """A fresh pass over the non-blank data rows, in file order."""
        if self._source is None:
            return iter(())
        return self._rows()

    def _rows(self) -> Iterator[Row]:
        assert self._source is not None
        width = self._width if self._width is not None else len(self.headers)
        header_row = self._header_row
        keep = self._keep
        unquote = self._unquote
        origin = self._origin
        decision = self._decision
        new_index = {old: new for new, old in enumerate(keep)} if keep is not None else {}
        workbook = self._source.workbook
        for number, raw, numeric in self._source.raw_rows():
            if number <= header_row:
                continue
            if unquote:
                raw = unquoted(raw)
            problem = shown_problem = ""
            cells = raw
            if len(raw) != width:
                cells, problem, shown_problem = _fit(raw, width)
            if keep is not None:
                cells = [cells[i] for i in keep]
                if numeric:
                    numeric = frozenset(new_index[i] for i in numeric if i in new_index)
            if blank(cells):
                continue  # blank: counted, not yielded
            if workbook and not problem:
                problem, shown_problem = _cut_cell(cells, self.headers)
            shown = raw[origin].strip() if origin is not None and origin < len(raw) else ""
            first = int(shown) if shown.isascii() and shown.isdigit() else None
            decided = None
            if decision is not None:
                decided = raw[decision].strip() if decision < len(raw) else ""
            yield Row(number, tuple(cells), numeric, problem, first, decided, shown_problem)


EXCEL_CELL_LIMIT = 32_767  # characters a workbook cell holds; Excel and xlsxwriter cut longer text


def _cut_cell(cells: list[str], headers: tuple[str, ...]) -> tuple[str, str]:
    """A cell as long as a workbook cell can be may have been cut (a result workbook cuts longer
    text, and so does Excel): the row must not send it as if it were whole. The problem in
    English and as shown, or two empty texts."""
    for i, cell in enumerate(cells):
        if len(cell) >= EXCEL_CELL_LIMIT:
            name = headers[i] if i < len(headers) else f"column {i + 1}"
            return both(
                N_(
                    "{name} holds {length} characters, the most a workbook cell can: it may "
                    "have been cut; take the whole value from the original file (or use CSV)"
                ),
                name=name,
                length=f"{len(cell):,}",
            )
    return "", ""


def _fit(cells: list[str], width: int) -> tuple[list[str], str, str]:
    """Pad a short row; a row with extra non-empty cells is kept, cut, and marked invalid (the
    problem in English and as shown)."""
    if len(cells) < width:
        return cells + [""] * (width - len(cells)), "", ""
    extra = [c for c in cells[width:] if c.strip()]
    if not extra:
        return cells[:width], "", ""
    shown = ", ".join(repr(c) for c in extra[:3]) + (", ..." if len(extra) > 3 else "")
    return cells[:width], *both(
        N_(
            "the row has {count} cells but the header has {width} (extra: {extra}); "
            "quote values that contain the delimiter, or add a header for the extra column"
        ),
        count=len(cells),
        width=width,
        extra=shown,
    )


def open_input(
    path: Path | str,
    spec: ApiSpec,
    sheet: str | None = None,
    column_map: Mapping[str, str] = MappingProxyType({}),
) -> InputTable:
    """Open ``path``, read its header and map it to ``spec``'s fields.

    ``sheet`` picks a workbook sheet (default: the first) and is ignored for CSV; ``column_map``
    is the ``[columns]`` table of importer.toml (header text -> field name). Raises
    ``InputError`` when the file cannot be read or a required field has no column.
    """
    path = Path(path)
    source = _source_for(path, sheet)
    header_row, raw_headers = source.header()
    # A CSV report of top-import (--out x.csv) fed back: undo the ' it put before cells, exactly.
    unquote = not source.workbook and all(
        any(is_label(h, key) for h in raw_headers) for key in _REPORT_MARKERS
    )
    if unquote:
        raw_headers = unquoted(raw_headers)
    where = (
        _("{path} (sheet {sheet})").format(path=path, sheet=repr(source.sheet))
        if source.sheet is not None
        else str(path)
    )

    fields_of = _map_headers(raw_headers, spec, column_map, where)
    keep = tuple(
        i
        for i, h in enumerate(raw_headers)
        if fields_of[i] is not None or key_of(h, _RESULT_KEYS) is None
    )
    headers = tuple(raw_headers[i] for i in keep)
    columns: dict[str, int] = {}
    for new, old in enumerate(keep):
        name = fields_of[old]
        if name is None:
            continue
        if name in columns:
            raise InputError(
                _(
                    "{where} has two columns for field {name}: {first} and {second}; delete or "
                    "rename one of them."
                ).format(
                    where=where,
                    name=name,
                    first=repr(headers[columns[name]]),
                    second=repr(headers[new]),
                )
            )
        columns[name] = new

    for name in (SOURCE_ROW, DECISION):
        twice = [i for i, h in enumerate(raw_headers) if is_label(h, name) and fields_of[i] is None]
        if len(twice) > 1:
            raise InputError(
                _(
                    "{where} has {count} {name} columns; keep one (which one is meant cannot be "
                    "guessed) and run again."
                ).format(where=where, count=len(twice), name=name)
            )
    missing = [f.name for f in spec.required_fields if f.name not in columns]
    if missing:
        found = ", ".join(headers) if headers else _("(none)")
        raise InputError(
            _(
                "{where} has no column for required field(s) {fields}; headers found: {found}. "
                "Rename a column or map it in [columns] of importer.toml."
            ).format(where=where, fields=", ".join(missing), found=found)
        )
    return InputTable(
        path=path,
        sheet=source.sheet,
        headers=headers,
        columns=MappingProxyType(columns),
        _source=source,
        _header_row=header_row,
        _keep=None if len(keep) == len(raw_headers) else keep,
        _width=len(raw_headers),
        _unquote=unquote,
        _origin=_result_column(raw_headers, fields_of, SOURCE_ROW),
        _decision=_result_column(raw_headers, fields_of, DECISION),
    )


def _reported_run(path: Path) -> int | None:
    """The ``journal run`` of a result workbook's summary sheet (the run's details)."""
    value = summary_item(path, Item.JOURNAL_RUN)
    return int(value) if isinstance(value, (int, float)) else None


def summary_item(path: Path, item: str) -> object:
    """The value of ``item`` in a result workbook's ``summary`` sheet (its run's details), or
    None (no such workbook, sheet or item). Only that small sheet is parsed."""
    try:
        book = _open_book(path)
    except InputError:
        return None
    try:
        sheet = sheet_in(book.sheet_names, Sheet.SUMMARY)
        if sheet is None:
            return None
        for cells in book.get_sheet_by_name(sheet).iter_rows():
            if len(cells) > 1 and is_label(cells[0], item):
                return cells[1]
    except (CalamineError, ValueError):
        return None
    finally:
        book.close()
    return None


def _result_column(headers: list[str], fields_of: list[str | None], name: str) -> int | None:
    """The index of a result column of an earlier report (one that names no field), or None."""
    return next(
        (i for i, h in enumerate(headers) if is_label(h, name) and fields_of[i] is None),
        None,
    )


def _map_headers(
    headers: list[str], spec: ApiSpec, column_map: Mapping[str, str], where: str
) -> list[str | None]:
    """The field each header names, or None. ``[columns]`` wins over names and aliases."""
    index = spec.header_index()
    field_names = {f.name for f in spec.fields}
    mapped = {normalise_header(k): v for k, v in column_map.items()}
    out: list[str | None] = []
    for header in headers:
        key = normalise_header(header)
        name = column_map.get(header) or mapped.get(key)
        if name is not None and name not in field_names:
            raise InputError(
                _(
                    "[columns] of importer.toml maps {header} of {where} to {name}, which is not "
                    "a field of {method}; use one of: {fields}."
                ).format(
                    header=repr(header),
                    where=where,
                    name=repr(name),
                    method=spec.method,
                    fields=", ".join(sorted(field_names)),
                )
            )
        out.append(name or index.get(key))
    return out


def check_path(path: Path) -> None:
    """An ``InputError`` unless ``path`` is an existing regular file (or a link to one) of a
    kind the loader reads; checked before anything opens it."""
    if not path.exists():
        raise InputError(
            _("{path} does not exist; check the path and the current directory.").format(path=path)
        )
    if path.is_dir():
        raise InputError(
            _(
                "{path} is a directory; give the path of an input file (use .csv, .tsv, .txt, "
                ".xlsx, .xlsm, .xls or .ods)."
            ).format(path=path)
        )
    if not path.is_file():  # a FIFO would block the open for ever, /dev/zero never end
        raise InputError(
            _(
                "{path} is not a regular file (a pipe, a device or a socket); save the rows to a "
                "file and give its path."
            ).format(path=path)
        )
    if path.suffix.lower() not in _SOURCES:
        raise InputError(
            _(
                "{path} has an unsupported extension {suffix}; use .csv, .tsv, .txt, .xlsx, "
                ".xlsm, .xls or .ods."
            ).format(path=path, suffix=repr(path.suffix or "(none)"))
        )


class RowSource(Protocol):
    """Where an input's rows come from: a CSV file, or one sheet of a workbook."""

    path: Path
    sheet: str | None  # the sheet read (None: a CSV file)
    workbook: bool  # typed cells (numbers Excel may have rounded), no delimiter or encoding

    def header(self) -> tuple[int, list[str]]:
        """(the header's row number, its cells): the first non-blank row."""
        ...

    def raw_rows(self) -> Iterator[_RawRow]:
        """(row number, cells as text, indexes of number cells) of every row, from row 1."""
        ...

    def estimate_rows(self, header_row: int) -> int | None:
        """About how many data rows there are, when that is cheap (None otherwise)."""
        ...

    def most_rows(self, header_row: int) -> int | None:
        """No fewer data rows than there are, when that is cheap (None otherwise)."""
        ...


def _source_for(path: Path, sheet: str | None) -> RowSource:
    check_path(path)
    return _SOURCES[path.suffix.lower()](path, sheet)


def _read_sample(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(SAMPLE_BYTES)
    except OSError as exc:
        raise InputError(
            _("{path} cannot be read ({why}); check its permissions.").format(
                path=path, why=exc.strerror
            )
        ) from None


def blank(cells: list[str]) -> bool:
    """No cell holds more than white space (a blank row: counted, never a data row)."""
    return not (cells and cells[0].strip()) and not "".join(cells).strip()


def _first_non_blank(path: Path, raw_rows: Generator[_RawRow, None, None]) -> tuple[int, list[str]]:
    """The header: the first row with a non-blank cell (rows above it are only counted)."""
    try:
        for number, cells, _numeric in raw_rows:
            if not blank(cells):
                return number, cells
    finally:
        raw_rows.close()
    raise InputError(
        _("{path} has no header row (it is empty); put the column headers in row 1.").format(
            path=path
        )
    )


# -- CSV -------------------------------------------------------------------------------------------


def detect_encoding(sample: bytes, complete: bool) -> str | None:
    """utf-8-sig, utf-16, utf-8 or gb18030 (what Excel writes on Chinese Windows), or None.

    ``complete`` says the sample is the whole file; otherwise a multibyte character cut at the
    end of the sample is not an error.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode Text" export
    if b"\x00" in sample:
        return None
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=complete)
        except UnicodeDecodeError:
            continue
        return encoding
    return None


def _confirm_encoding(path: Path, encoding: str) -> str | None:
    """The sample's guess checked against the whole file, before any row is sent.

    A file that is UTF-8 for 64 KiB and GB18030 later (two exports joined) must not be read
    whole as GB18030, which decodes almost any bytes: its UTF-8 rows would go out as mojibake.
    So GB18030 is tried only when no non-ASCII text came before the first byte that is not
    UTF-8; otherwise the file is refused, naming that line. Decoding runs at hundreds of MB/s,
    a small price once per input.
    """
    if encoding != "utf-8":
        return encoding if _decodes(path, encoding) else None
    decoder = codecs.getincrementaldecoder("utf-8")()
    unicode_before, lines = False, 1
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    start = max(exc.start, 0)
                    if unicode_before or not block[:start].isascii():
                        line = lines + block[:start].count(b"\n")
                        raise InputError(
                            _(
                                "{path} is not one encoding throughout: it starts as UTF-8 but "
                                "line {line} is not UTF-8 (GBK? two exports joined?); save the "
                                "whole file again as CSV UTF-8. Nothing was sent."
                            ).format(path=path, line=line)
                        ) from None
                    break  # the first text beyond ASCII is not UTF-8: GB18030, checked below
                unicode_before = unicode_before or not block.isascii()
                lines += block.count(b"\n")
            else:
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:  # cut in the middle of a character at the very end
                    if unicode_before:
                        raise InputError(
                            _(
                                "{path} ends in the middle of a UTF-8 character (cut short?); "
                                "save the whole file again as CSV UTF-8. Nothing was sent."
                            ).format(path=path)
                        ) from None
                else:
                    return "utf-8"
    except OSError as exc:
        raise InputError(
            _("{path} cannot be read ({why}).").format(path=path, why=exc.strerror)
        ) from None
    return "gb18030" if _decodes(path, "gb18030") else None


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except OSError as exc:
        raise InputError(
            _("{path} cannot be read ({why}).").format(path=path, why=exc.strerror)
        ) from None
    return True


def sniff_delimiter(header_line: str) -> str:
    """The most frequent of comma, tab and semicolon in the header line (comma on a tie)."""
    return max(DELIMITERS, key=header_line.count)


@dataclass(frozen=True)
class _CsvSource:
    path: Path
    encoding: str
    delimiter: str
    sheet: None = None
    workbook = False

    @classmethod
    def open(cls, path: Path, sheet: str | None) -> _CsvSource:
        return cls.sniff(path, tab=path.suffix.lower() == ".tsv")

    def estimate_rows(self, header_row: int) -> int | None:
        """The line count below the header (blank lines and line breaks inside quoted values
        make it a slight overestimate)."""
        return max(0, self._lines[0] - header_row)

    def most_rows(self, header_row: int) -> int | None:
        _newlines, breaks, ended = self._lines
        return max(0, breaks + (0 if ended else 1) - header_row)

    @functools.cached_property
    def _lines(self) -> tuple[int, int, bool]:
        """One read of the file for both counts (a run asks for them at each pass): its "\n",
        its line breaks of every kind, and whether its last line has one. "\r\n", "\n" and a
        lone "\r" each end a line (the csv module reads all three); a "\r\n" split across two
        blocks is counted twice: an overcount, never an undercount."""
        newlines, breaks, last = 0, 0, b"\n"
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                count = block.count(b"\n")
                returns = block.count(b"\r")
                newlines += count
                breaks += count + (returns - block.count(b"\r\n") if returns else 0)
                last = block[-1:]
        return newlines, breaks, last in (b"\n", b"\r")

    @classmethod
    def sniff(cls, path: Path, tab: bool) -> _CsvSource:
        sample = _read_sample(path)
        if not sample:
            raise InputError(
                _("{path} is empty; put the column headers in row 1 and rows below.").format(
                    path=path
                )
            )
        complete = len(sample) < SAMPLE_BYTES
        encoding = detect_encoding(sample, complete=complete)
        if encoding is not None and not complete:
            encoding = _confirm_encoding(path, encoding)
        if encoding is None:
            raise InputError(
                _(
                    "{path} is not UTF-8 or GB18030 text (is it a workbook with the wrong "
                    "extension?); save it as CSV UTF-8 or give the workbook its .xlsx name."
                ).format(path=path)
            )
        text = sample.decode(encoding, errors="ignore").lstrip("\r\n")
        header_line = text.split("\n", 1)[0]
        return cls(path, encoding, "\t" if tab else sniff_delimiter(header_line))

    def header(self) -> tuple[int, list[str]]:
        return _first_non_blank(self.path, self.raw_rows())

    def raw_rows(self) -> Generator[_RawRow, None, None]:
        # Numbers count RECORDS, not physical lines: a quoted value with line breaks inside
        # stays one row, as it is one row when Excel opens the file. Blank lines are records
        # (csv yields []), so they keep the count right.
        # strict: an unclosed quote would otherwise swallow every later line into one cell, and
        # text after a closing quote ("b"c) would silently lose its quotes.
        number = 0
        line = 1  # the physical line where the record being read starts
        try:
            with self.path.open(encoding=self.encoding, newline="", buffering=1 << 20) as fh:
                reader = csv.reader(fh, delimiter=self.delimiter, strict=True)
                for number, cells in enumerate(reader, 1):
                    yield number, cells, _NO_NUMERIC
                    line = reader.line_num + 1
        except UnicodeDecodeError:
            raise InputError(
                _(
                    "{path} is not valid {encoding} text after row {row}; save it as CSV UTF-8 "
                    "and try again."
                ).format(path=self.path, encoding=self.encoding, row=number)
            ) from None
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError(
                    _(
                        "{path} line {line}: a quote opened there is never closed, so every "
                        "later line would become one cell; close it (a quote inside a value is "
                        '""), or save the file again from Excel.'
                    ).format(path=self.path, line=line)
                ) from None
            raise InputError(
                _(
                    "{path} line {line} (row {row}) cannot be read as CSV ({why}); fix that row "
                    "or save the file again from Excel."
                ).format(path=self.path, line=line, row=number + 1, why=exc)
            ) from None
        except OSError as exc:
            raise InputError(
                _("{path} cannot be read ({why}).").format(path=self.path, why=exc.strerror)
            ) from None


# -- workbooks -------------------------------------------------------------------------------------


def cell_text(value: object) -> tuple[str, bool]:
    """A workbook cell as text, and whether it was a number cell.

    Integral numbers lose their ``.0``; beyond 2^53 a float is not exact, so it is written with
    Excel's 15 significant digits (``396743391396743391`` typed in Excel is
    ``396743391396743000`` in the cell): the validator then refuses it as a rounded ID. The text
    of a number beyond 2^53 always stays beyond 2^53, so a Number field refuses it too.
    """
    if isinstance(value, str):
        return value, False
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE"), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        if value.is_integer():
            if abs(value) <= EXACT_FLOAT_LIMIT:
                return str(int(value)), True
            shown = int(Decimal(f"{value:.15g}"))
            if abs(shown) <= EXACT_FLOAT_LIMIT:
                # 2^53 < value < 9007199254740995 shows as 9007199254740990: its 15 digits fall
                # back under 2^53 and would pass as exact. The value itself says it is not.
                return str(int(value)), True
            return str(shown), True
        return f"{value:.15g}", True
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S"), False
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d"), False
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S"), False
    if value is None:
        return "", False
    return str(value), False


MAX_SHEET_CELLS = 50_000_000  # a used range calamine may lay out (~32 bytes a cell: 1.6 GB)
_DIMENSION = re.compile(rb'<dimension\s+ref="\$?([A-Z]{1,3})\$?(\d+)(?::\$?([A-Z]{1,3})\$?(\d+))?"')
_SHEET_ENTRY = re.compile(rb"<sheet\b[^>]*>")
_ATTRIBUTE = re.compile(rb'([\w:]+)="([^"]*)"')


def _check_used_range(path: Path, sheet: str) -> None:
    """Refuse, before calamine parses it, an .xlsx/.xlsm sheet whose used range (its
    ``<dimension>``) is beyond ``MAX_SHEET_CELLS``: calamine lays the range out whole, so one
    stray cell at XFD100000 of a 2 KB file asks for 52 GB and aborts the process (no exception:
    the rest of a cron glob would never run). Other formats are left to calamine."""
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        return
    try:
        with zipfile.ZipFile(path) as book:
            part = _sheet_part(book, sheet)
            if part is None:
                return
            with book.open(part) as fh:
                head = fh.read(1 << 16)
    except (OSError, zipfile.BadZipFile, KeyError):
        return  # not a zip calamine can read either: it says so
    found = _DIMENSION.search(head)
    if found is None:
        return
    first_col, first_row, last_col, last_row = found.groups()
    rows = int(last_row or first_row) - int(first_row) + 1
    cols = _column_number(last_col or first_col) - _column_number(first_col) + 1
    ref = (first_col + first_row + (b":" + last_col + last_row if last_col else b"")).decode()
    if rows * cols > MAX_SHEET_CELLS:
        raise InputError(
            _(
                "{path} sheet {sheet} has a used range of {range} ({cells} cells, more than the "
                "{most} a run reads): a stray cell far from the data? In Excel, Ctrl+End goes to "
                "it; delete the rows and columns after your data, save, and run again."
            ).format(
                path=path,
                sheet=repr(sheet),
                range=ref,
                cells=f"{rows * cols:,}",
                most=f"{MAX_SHEET_CELLS:,}",
            )
        )


def _sheet_part(book: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip member of the sheet named ``sheet``, through workbook.xml and its rels."""
    rel_id = None
    for entry in _SHEET_ENTRY.findall(book.read("xl/workbook.xml")):
        attributes = dict(_ATTRIBUTE.findall(entry))
        if html.unescape(attributes.get(b"name", b"").decode("utf-8", "replace")) == sheet:
            rel_id = next((v for k, v in attributes.items() if k.endswith(b":id")), None)
            break
    if rel_id is None:
        return None
    for entry in re.findall(rb"<Relationship\b[^>]*>", book.read("xl/_rels/workbook.xml.rels")):
        attributes = dict(_ATTRIBUTE.findall(entry))
        if attributes.get(b"Id") == rel_id:
            target = attributes.get(b"Target", b"").decode()
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return None


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


@dataclass(frozen=True)
class _SheetSource:
    path: Path
    sheet: str
    workbook = True

    def estimate_rows(self, header_row: int) -> int | None:
        return None  # counting would parse the sheet

    def most_rows(self, header_row: int) -> int | None:
        return None

    @classmethod
    def find(cls, path: Path, requested: str | None) -> _SheetSource:
        book = _open_book(path)
        try:
            names = book.sheet_names
            shown = [
                m.name
                for m in book.sheets_metadata
                if m.visible == SheetVisibleEnum.Visible and m.typ == SheetTypeEnum.WorkSheet
            ]
        finally:
            book.close()
        if not names:
            raise InputError(_("{path} has no sheets; put the rows in a sheet.").format(path=path))
        if requested is None:  # the first sheet the user sees in Excel
            return cls(path, shown[0] if shown else names[0])
        if requested not in names:  # a report's sheet asked by its key (or an earlier label)
            key = key_of(requested, Sheet)
            requested = (sheet_in(names, key) if key else None) or requested
        if requested not in names:
            found = ", ".join(names)
            raise InputError(
                _("{path} has no sheet {sheet}; sheets found: {found}.").format(
                    path=path, sheet=repr(requested), found=found
                )
            )
        return cls(path, requested)

    def header(self) -> tuple[int, list[str]]:
        return _first_non_blank(self.path, self.raw_rows())

    @functools.cached_property
    def _loaded(self) -> CalamineSheet:
        """The whole sheet, parsed once and kept for every pass over it: calamine reads a sheet
        whole (there is no streaming reader of xlsx cells behind it), so parsing it again per
        pass would only cost time; the README gives the memory per 100k rows."""
        _check_used_range(self.path, self.sheet)
        book = _open_book(self.path)
        try:
            return book.get_sheet_by_name(self.sheet)
        except (CalamineError, ValueError) as exc:
            raise InputError(
                _(
                    "{path} sheet {sheet} cannot be read ({why}); open it in Excel and save it "
                    "again as .xlsx."
                ).format(path=self.path, sheet=repr(self.sheet), why=exc)
            ) from None
        finally:
            book.close()

    def raw_rows(self) -> Generator[_RawRow, None, None]:
        # iter_rows yields the sheet from row 1 (leading empty rows included, which keeps the
        # numbers right) and from the first used column (leading empty columns are dropped).
        for number, cells in enumerate(self._loaded.iter_rows(), 1):
            numeric = _NO_NUMERIC
            found: list[int] | None = None
            for i, value in enumerate(cells):
                if value.__class__ is not str:
                    text, is_number = cell_text(value)
                    cells[i] = text
                    if is_number:
                        if found is None:
                            found = []
                        found.append(i)
            if found is not None:
                numeric = frozenset(found)
            yield number, cells, numeric


def _check_xls_ranges(path: Path) -> None:
    """Refuse an .xls whose sheets' DIMENSIONS records (the used range each one states) are
    beyond ``MAX_SHEET_CELLS``: calamine lays every sheet of an .xls out as it opens the file,
    from that record, so one that lies aborts the process as a stray .xlsx cell does.

    BIFF is read as records (type, length, body) in the OLE2 ``Workbook`` stream (``Book``:
    BIFF5); BOUNDSHEET records name the sheets by the offset of their BOF record."""
    try:
        if not olefile.isOleFile(str(path)):
            return  # not OLE2: calamine says what it is
        with olefile.OleFileIO(str(path)) as ole:
            stream = next((name for name in ("Workbook", "Book") if ole.exists(name)), None)
            if stream is None:
                return
            data = ole.openstream(stream).read()
    except (OSError, ValueError, EOFError, struct.error):
        return  # a damaged container: calamine says what it cannot read
    names: dict[int, str] = {}  # sheet BOF offset -> name
    for kind, body in _biff_records(data, 0):  # the workbook globals
        if kind == 0x002F:  # FILEPASS: the records' bodies are encrypted (calamine refuses it)
            return
        if kind == 0x0085 and len(body) >= 8:  # BOUNDSHEET: BOF offset, flags, name
            names[struct.unpack_from("<I", body)[0]] = _biff_name(body[6:])
    for offset, sheet in names.items():
        for kind, body in _biff_records(data, offset):
            if kind != 0x0200 or len(body) not in (10, 14):
                continue
            form = "<IIHH" if len(body) == 14 else "<HHHH"  # DIMENSIONS: BIFF8, BIFF5
            first_row, last_row, first_col, last_col = struct.unpack_from(form, body)
            rows, cols = max(0, last_row - first_row), max(0, last_col - first_col)
            if rows * cols > MAX_SHEET_CELLS:
                raise InputError(
                    _(
                        "{path} sheet {sheet} says its used range is {rows} rows by {columns} "
                        "columns ({cells} cells, more than the {most} a run reads): open it in "
                        "Excel or LibreOffice and save it as .xlsx (first delete any rows and "
                        "columns after your data: Ctrl+End goes to the last used cell)."
                    ).format(
                        path=path,
                        sheet=repr(sheet),
                        rows=f"{rows:,}",
                        columns=f"{cols:,}",
                        cells=f"{rows * cols:,}",
                        most=f"{MAX_SHEET_CELLS:,}",
                    )
                )
            break  # one per sheet, before its cells: the rest need not be walked


def _biff_records(data: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
    """The BIFF records (type, body) of one substream, from its BOF to its EOF record."""
    while pos + 4 <= len(data):
        kind, size = struct.unpack_from("<HH", data, pos)
        yield kind, data[pos + 4 : pos + 4 + size]
        if kind == 0x000A:  # EOF
            return
        pos += 4 + size


def _biff_name(body: bytes) -> str:
    """A BIFF8 short unicode string: a length in characters, a flag (1: UTF-16), the text."""
    if len(body) < 2:
        return ""
    length, wide = body[0], body[1] & 1
    text = body[2 : 2 + length * (2 if wide else 1)]
    return text.decode("utf-16-le" if wide else "latin-1", "replace")


def sheet_names(path: Path) -> list[str]:
    """The sheets of a workbook, in order (none for a CSV); ``InputError`` when it is not one."""
    if path.suffix.lower() not in WORKBOOK_SUFFIXES:
        return []
    book = _open_book(path)
    try:
        return list(book.sheet_names)
    finally:
        book.close()


def check_sheet(path: Path, sheet: str) -> None:
    """``InputError`` unless the workbook at ``path`` has ``sheet`` (by name, or a result
    workbook's sheet by its key in either language: ``failed`` finds 失败); a CSV has none."""
    if path.suffix.lower() in WORKBOOK_SUFFIXES:
        _SheetSource.find(path, sheet)


def _open_book(path: Path) -> CalamineWorkbook:
    if path.suffix.lower() == ".xls":
        _check_xls_ranges(path)
    try:
        return CalamineWorkbook.from_path(str(path))
    except PasswordError:
        raise InputError(
            _("{path} is password-protected; save a copy without a password and use that.").format(
                path=path
            )
        ) from None
    except (CalamineError, OSError, ValueError) as exc:
        raise InputError(
            _(
                "{path} cannot be read as a {suffix} workbook ({why}); open it in Excel and save "
                "it again as .xlsx, or export it as CSV UTF-8."
            ).format(path=path, suffix=path.suffix.lower(), why=exc)
        ) from None


# One RowSource per suffix: how an input is opened (``check_path`` refuses any other).
_SOURCES: dict[str, Callable[[Path, str | None], RowSource]] = {
    **dict.fromkeys(CSV_SUFFIXES, _CsvSource.open),
    **dict.fromkeys(WORKBOOK_SUFFIXES, _SheetSource.find),
}
