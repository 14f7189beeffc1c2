"""Rows in, request records or row errors out. Pure: no I/O, no clock.

A ``Row`` is what the loader read (cells as text, exactly as in the file); the ``RowValidator``
turns it into a ``RequestRecord`` (the compact JSON payload that will be sent, and its hash) or a
``RowError`` naming the field, the value and the rule that failed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from importer.specs import ApiSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_LIMIT = 2**53  # above this a spreadsheet number cell has lost digits
EXCEL_DIGITS = 15  # Excel keeps 15 significant digits of a number

_INTEGER = re.compile(r"^[+-]?(\d+)(?:\.0*)?$")
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+$")
_FIX_EXCEL = "format the column as Text in Excel, re-enter the full values and export again"


class Status(str, Enum):
    """What happened to a row; the values are the words in the report."""

    SUCCESS = "success"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    VALID = "valid"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Row:
    """One non-header line of an input file.

    ``source_row`` is the row number the user sees (header = 1); ``cells`` are the cells as read,
    in column order; ``numeric`` holds the indexes of cells that were number cells in a workbook
    (their text may already be rounded by Excel); ``problem`` is set when the loader could not
    line the row up with the header (the row is then invalid, the others still go).
    """

    source_row: int
    cells: tuple[str, ...]
    numeric: frozenset[int] = frozenset()
    problem: str = ""

    def is_blank(self) -> bool:
        return all(not c.strip() for c in self.cells)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    source_row: int
    payload_json: str
    payload_hash: str


@dataclass(frozen=True, slots=True)
class RowError:
    source_row: int
    field: str
    value: str
    message: str


@dataclass(slots=True)
class Outcome:
    """The result columns of one row in the report."""

    status: Status
    code: str = ""
    msg: str = ""
    sub_code: str = ""
    sub_msg: str = ""
    request_id: str = ""
    system_time: str = ""
    attempts: int = 0
    elapsed_ms: int = 0
    error: str = ""

    COLUMNS = (
        "status",
        "code",
        "msg",
        "sub_code",
        "sub_msg",
        "request_id",
        "system_time",
        "attempts",
        "elapsed_ms",
        "error",
    )

    def values(self) -> tuple:
        return (
            self.status.value,
            self.code,
            self.msg,
            self.sub_code,
            self.sub_msg,
            self.request_id,
            self.system_time,
            self.attempts,
            self.elapsed_ms,
            self.error,
        )


RESULT_COLUMNS: tuple[str, ...] = ("source_row", *Outcome.COLUMNS)


def payload_hash(payload_json: str) -> str:
    return hashlib.sha256(payload_json.encode("utf-8")).hexdigest()


class _FieldError(ValueError):
    pass


def parse_number(text: str, from_number_cell: bool) -> int:
    """An integer in int64 written as digits (``200110004`` or ``200110004.0``)."""
    if _SCIENTIFIC.match(text):
        raise _FieldError(
            "is in scientific notation, so Excel has rounded it to 15 digits or it is not a "
            f"whole number written out; {_FIX_EXCEL}"
        )
    match = _INTEGER.match(text)
    if not match:
        raise _FieldError("must be a whole number (Number: an integer, e.g. 200110004)")
    # int() refuses more than 4300 digits (a ValueError, not our row error): check length first.
    if len(match.group(1).lstrip("0")) > len(str(INT64_MAX)):
        raise _FieldError("is outside the int64 range of a Number")
    value = int(text.split(".", 1)[0])
    if not INT64_MIN <= value <= INT64_MAX:
        raise _FieldError("is outside the int64 range of a Number")
    if from_number_cell and abs(value) > EXACT_FLOAT_LIMIT:
        raise _FieldError(
            f"came from a number cell beyond 2^53, so its last digits are lost; {_FIX_EXCEL}"
        )
    return value


def check_string(text: str, from_number_cell: bool) -> str:
    """A String value, refused where it shows Excel's 15-digit rounding."""
    if _SCIENTIFIC.match(text):
        raise _FieldError(
            f"is in scientific notation: Excel has rounded this ID to 15 digits; {_FIX_EXCEL}"
        )
    if from_number_cell:
        digits = sum(ch.isdigit() for ch in text)
        if digits > EXCEL_DIGITS:
            raise _FieldError(
                f"came from a number cell of {digits} digits, and Excel keeps only "
                f"{EXCEL_DIGITS}, so its last digits are lost; {_FIX_EXCEL}"
            )
    return text


class RowValidator:
    """Validates rows against one spec, given which column holds each field."""

    def __init__(self, spec: ApiSpec, columns: Mapping[str, int]) -> None:
        self.spec = spec
        self._plan = tuple((f, columns.get(f.name)) for f in spec.fields)

    def validate(self, row: Row) -> RequestRecord | RowError:
        if row.problem:
            return RowError(row.source_row, "", "", row.problem)
        payload: dict[str, object] = {}
        cells = row.cells
        for fspec, index in self._plan:
            raw = cells[index] if index is not None and index < len(cells) else ""
            text = raw.strip()
            if not text:
                if fspec.required:
                    return RowError(
                        row.source_row, fspec.name, raw, f"{fspec.name} is required but empty"
                    )
                continue
            numeric = index in row.numeric
            try:
                if fspec.type == "Number":
                    payload[fspec.name] = parse_number(text, numeric)
                else:
                    payload[fspec.name] = check_string(text, numeric)
            except _FieldError as exc:
                return RowError(row.source_row, fspec.name, raw, f"{fspec.name} {text!r} {exc}")
        payload_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return RequestRecord(row.source_row, payload_json, payload_hash(payload_json))


@dataclass
class DuplicateFilter:
    """Remembers each payload's first row; memory is 16 bytes of digest and a row number each."""

    _first: dict[bytes, int] = field(default_factory=dict)

    def first_row(self, record: RequestRecord) -> int | None:
        """The earlier row with the same payload, or None (and remember this one)."""
        key = bytes.fromhex(record.payload_hash[:32])
        first = self._first.get(key)
        if first is None:
            self._first[key] = record.source_row
        return first
