"""A row's life as data: the ``Row`` read, the ``RequestRecord`` sent, the ``RowError`` of an
invalid row, and the ``Outcome`` (with its ``Status``) the report shows. Pure values, and the
hashes that key the journal.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from enum import Enum

EXACT_FLOAT_LIMIT = 2**53  # a number cell's value is exact up to here; beyond, digits are lost


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

    ``source_row`` is the row number the user sees (header = 1), ``origin_row`` the one of the
    original file when the input is a report of top-import (its ``source_row`` column);
    ``cells`` are the cells as read,
    in column order; ``numeric`` holds the indexes of cells that were number cells in a workbook
    (their text may already be rounded by Excel); ``problem`` is set when the loader could not
    line the row up with the header (the row is then invalid, the others still go).
    """

    source_row: int
    cells: tuple[str, ...]
    numeric: frozenset[int] = frozenset()
    problem: str = ""
    origin_row: int | None = None  # in a report fed back: the row of the original file

    @property
    def shown_row(self) -> int:
        """The row number the report shows: the original file's, through a round trip."""
        return self.source_row if self.origin_row is None else self.origin_row

    def is_blank(self) -> bool:
        return all(not c.strip() for c in self.cells)

    def digest(self) -> int:
        """A cheap fingerprint of the cells, so that an outcome is paired with the row it
        belongs to, never by row number alone."""
        return zlib.crc32("\x1f".join(self.cells).encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A valid row, ready to sign: ``payload_json`` is the object parameter's compact JSON (""
    when the spec has none), ``flat`` the flat parameters as (name, text) in spec order."""

    source_row: int
    payload_json: str
    payload_hash: str
    flat: tuple[tuple[str, str], ...] = ()


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
    # attempts whose request left the machine (None: all of them); the daily quota counts these
    sent: int | None = None

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


def payload_hash(payload_json: str, flat: tuple[tuple[str, str], ...] = ()) -> str:
    """SHA-256 of what is sent: the object JSON alone, or with the sorted flat parameters."""
    if flat:
        payload_json = json.dumps([payload_json, sorted(flat)], ensure_ascii=False)
    return hashlib.sha256(payload_json.encode("utf-8")).hexdigest()


def identity_hash(values: list[tuple[str, str]]) -> str:
    """SHA-256 of the identity fields' (name, sent text) pairs; prefixed so it never equals a
    payload hash."""
    text = json.dumps(["identity", values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
