"""A row's life as data: the ``Row`` read, the ``RequestRecord`` sent, the ``RowError`` of an
invalid row, and the ``Outcome`` (with its ``Status``) the report shows. Pure values, and the
hashes that key the journal.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from enum import Enum

from importer.i18n import N_

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
        line the row up with the header (the row is then invalid, the others still go; in English,
    and as a person reads it in ``shown_problem``);
        ``decision`` is the ``decision`` cell of a ``check`` sheet fed back (None for any other
        input), what a person found on the platform about an ``unknown`` row.
    """

    source_row: int
    cells: tuple[str, ...]
    numeric: frozenset[int] = frozenset()
    problem: str = ""
    origin_row: int | None = None  # in a report fed back: the row of the original file
    decision: str | None = None
    shown_problem: str = ""  # ``problem`` (English, the key rows are counted by) as shown

    @property
    def shown_row(self) -> int:
        """The row number the report shows: the original file's, through a round trip."""
        return self.source_row if self.origin_row is None else self.origin_row

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
    row_key: str  # what the journal and the duplicate check know it by: its payload_hash, or
    # its identity_hash when the spec names identity fields
    flat: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a row is invalid: ``message`` names the field, the value, the rule and what to do;
    ``rule`` is the rule alone (no value), so that rows can be counted by reason."""

    source_row: int
    field: str
    value: str
    message: str
    rule: str = field(default="", compare=False)
    shown_rule: str = field(default="", compare=False)  # ``rule`` in the run's language


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
    # an invalid row's reason without its value ("case_id came from a number cell ..."), to
    # count rows by reason (in English: the summary JSON's keys); not a report column, not
    # kept in the journal
    reason: str = ""
    shown_reason: str = ""  # ``reason`` in the run's language, as the dashboard shows it
    field: str = ""  # the field an invalid row's reason is about (serve's table); not a column

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

    @property
    def calls(self) -> int:
        """The requests that left the machine: what the platform (and its quota) counted."""
        return self.attempts if self.sent is None else self.sent

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


class Decision(str, Enum):
    """What a person wrote in the check sheet about an ``unknown`` row, having looked on the
    platform: it is there (``done``: recorded as a success, never sent) or it is not
    (``resend``: sent once more)."""

    DONE = "done"
    RESEND = "resend"

    @classmethod
    def read(cls, text: str) -> Decision | None:
        """The decision a cell holds (English or Chinese, any case); None when blank. A
        ``ValueError`` for any other word."""
        word = text.strip().casefold()
        if not word:
            return None
        try:
            return _DECISION_WORDS[word]
        except KeyError:
            raise ValueError(
                N_(
                    "decision {word} is not a decision: write done (已完成) when the platform "
                    "has the row, resend (重发) when it does not, or leave it blank"
                ).format(word=repr(text.strip()))
            ) from None


_DECISION_WORDS = {
    "done": Decision.DONE,
    "已完成": Decision.DONE,
    "resend": Decision.RESEND,
    "重发": Decision.RESEND,
}
DECISIONS_SHOWN = ("done", "resend", "已完成", "重发")  # the check sheet's drop-down
EXCEL_DIGITS = 15  # Excel keeps 15 significant digits of a number


def rounded_by_excel(text: str) -> bool:
    """Whether a number cell's text shows Excel's rounding: more than 15 digits (beyond 2^53
    always has), so its last digits are lost. Such a cell stays a number cell in every workbook
    the tool writes (and in Excel's scientific form in a CSV), so it is refused again when fed
    back."""
    return sum(ch.isdigit() for ch in text) > EXCEL_DIGITS


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
