"""Rows in, request records or row errors out. Pure: no I/O, no clock.

A ``Row`` is what the loader read (cells as text, exactly as in the file); the ``RowValidator``
turns it into a ``RequestRecord`` (what will be sent: the object parameter as compact JSON and
the flat parameters as text, and its hash) or a ``RowError`` naming the field, the value and the
rule that failed (the types are in ``importer.rows``).

Cells accepted per type (after trimming; how each is sent is in ``importer.spec``):

- String: any text, except what shows Excel's 15-digit rounding (scientific notation, a number
  cell of 16+ digits); ``max_length`` counts characters.
- Number: a whole number in int64 (``200110004``, ``200110004.0``); not ``2.5``, ``1e3``, ``abc``.
- Boolean: ``true``/``false`` in any case (a workbook's TRUE/FALSE cells), ``1``/``0``,
  ``yes``/``no``, ``y``/``n``, ``是``/``否``.
- Date: ``yyyy-MM-dd HH:mm:ss`` (what a workbook's date cell reads as), ``yyyy-MM-dd HH:mm`` or
  ``yyyy-MM-dd`` (midnight); ``/`` for ``-`` and ``T`` for the space are accepted; always sent
  as ``yyyy-MM-dd HH:mm:ss``.
- List<String> / List<Number>: items separated by ``,`` or the full-width ``，``, each trimmed
  and checked as a String / Number; an empty item is an error.

The payload hash is the journal key and the duplicate key: SHA-256 of the object JSON alone when
there are no flat parameters (as before flat parameters existed), else of the object JSON and the
sorted flat parameters; when the spec names ``identity`` fields, of those fields' values only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from importer.i18n import N_, _, both
from importer.rows import (
    EXACT_FLOAT_LIMIT,
    EXCEL_DIGITS,
    RequestRecord,
    Row,
    RowError,
    identity_hash,
    payload_hash,
    rounded_by_excel,
)
from importer.spec import ApiSpec, FieldSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_INTEGER = re.compile(r"^[+-]?(\d+)(?:\.0*)?$")
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+$")
# What to do about a rounded ID: in the user's own file, and in a result workbook of top-import
# fed back (whose ID columns are formatted as Text, so a full ID typed there stays whole).
FIX_EXCEL = N_("format the column as Text in Excel, re-enter the full values and export again")
FIX_IN_RESULT = N_(
    "type the full value into this cell (the column is formatted as Text, so it stays whole) "
    "and run the sheet again"
)
ROUNDED = N_("rounded by Excel")  # the rule of every way a rounded number shows
_TRUE = frozenset({"true", "1", "yes", "y", "是"})
_FALSE = frozenset({"false", "0", "no", "n", "否"})
_DATE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_LIST_SEPARATOR = re.compile("[,，]")
# C0 controls but tab, line feed and carriage return (text in a cell may hold those), and DEL
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _FieldError(ValueError):
    """A cell breaking a rule: the message (after the field and the value, in the run's
    language), the rule alone in English (by which invalid rows are counted: the keys of the
    summary's ``invalid_reasons``) and as a person reads it (``shown``: the English rule is its
    message id), and whether it is a number Excel rounded (what to do about it depends on the
    file: ``RowValidator``)."""

    def __init__(
        self, message: str, rule: str, shown: str | None = None, rounded: bool = False
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.shown = _(rule) if shown is None else shown
        self.rounded = rounded


def _rounded(how: str, rule: str = ROUNDED) -> _FieldError:
    return _FieldError(
        _(
            "{how}, so Excel has rounded it to {digits} significant digits and its last "
            "digits are lost"
        ).format(how=how, digits=EXCEL_DIGITS),
        rule,
        rounded=True,
    )


def parse_number(text: str, from_number_cell: bool) -> int:
    """An integer in int64 written as digits (``200110004`` or ``200110004.0``)."""
    if _SCIENTIFIC.match(text):
        raise _rounded(
            _("is in scientific notation (or is not a whole number written out)"),
            N_("is in scientific notation"),
        )
    match = _INTEGER.match(text)
    if not match:
        raise _FieldError(
            _("must be a whole number (Number: an integer, e.g. 200110004)"),
            N_("is not a whole number"),
        )
    # int() refuses more than 4300 digits (a ValueError, not our row error): check length first.
    if len(match.group(1).lstrip("0")) > len(str(INT64_MAX)):
        raise _FieldError(_("is outside the int64 range of a Number"), N_("is outside int64"))
    value = int(text.split(".", 1)[0])
    if not INT64_MIN <= value <= INT64_MAX:
        raise _FieldError(_("is outside the int64 range of a Number"), N_("is outside int64"))
    if from_number_cell and abs(value) > EXACT_FLOAT_LIMIT:
        raise _rounded(_("came from a number cell beyond 2^53"))
    return value


def check_string(text: str, from_number_cell: bool) -> str:
    """A String value, refused where it shows Excel's 15-digit rounding."""
    if _SCIENTIFIC.match(text):
        raise _rounded(_("is in scientific notation"))
    if from_number_cell and rounded_by_excel(text):
        digits = sum(ch.isdigit() for ch in text)
        raise _rounded(_("came from a number cell of {digits} digits").format(digits=digits))
    return text


def parse_boolean(text: str) -> bool:
    folded = text.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise _FieldError(
        _("must be true or false (Boolean: true/false, 1/0, yes/no, 是/否)"),
        N_("is not true or false"),
    )


def parse_date(text: str) -> str:
    """A date, with or without a time, as ``yyyy-MM-dd HH:mm:ss``."""
    match = _DATE.match(text)
    rule = _("must be a date written yyyy-MM-dd HH:mm:ss (or yyyy-MM-dd)")
    if not match:
        raise _FieldError(rule, N_("is not a date"))
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        value = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise _FieldError(
            _("is not a real date or time ({why}); {rule}").format(why=exc, rule=rule),
            N_("is not a date"),
        ) from None
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _check_rules(fspec: FieldSpec, value: str) -> None:
    """``max_length`` and ``allowed`` for one value (a list's item, or the field's value)."""
    if fspec.max_length is not None and len(value) > fspec.max_length:
        raise _FieldError(
            _("is {length} characters long; at most {most} are allowed").format(
                length=len(value), most=fspec.max_length
            ),
            *both(N_("is longer than {most} characters"), most=fspec.max_length),
        )
    if fspec.allowed and value not in fspec.allowed:
        raise _FieldError(
            _("is not one of the allowed values: {values}").format(values=", ".join(fspec.allowed)),
            N_("is not an allowed value"),
        )


def _scalar(fspec: FieldSpec, item_type: str, text: str, numeric: bool) -> object:
    """One value as the JSON object holds it (str, int or bool)."""
    if item_type == "Number":
        number = parse_number(text, numeric)
        _check_rules(fspec, str(number))
        return number
    if item_type == "Boolean":
        return parse_boolean(text)
    if item_type == "Date":
        return parse_date(text)
    value = check_string(text, numeric)
    _check_rules(fspec, value)
    return value


def convert(fspec: FieldSpec, text: str, numeric: bool) -> object:
    """A trimmed, non-empty cell -> the field's JSON value (a list for List types)."""
    if not fspec.is_list:
        return _scalar(fspec, fspec.type, text, numeric)
    items = [item.strip() for item in _LIST_SEPARATOR.split(text)]
    if not all(items):
        raise _FieldError(
            _("has an empty item; separate the items of a list with single commas"),
            N_("has an empty item"),
        )
    if fspec.max_items is not None and len(items) > fspec.max_items:
        raise _FieldError(
            _("has {count} items; at most {most} are allowed").format(
                count=len(items), most=fspec.max_items
            ),
            *both(N_("has more than {most} items"), most=fspec.max_items),
        )
    values = []
    for item in items:
        try:
            values.append(_scalar(fspec, fspec.item_type, item, numeric))
        except _FieldError as exc:
            message = _("has an item {item} that {problem}").format(item=repr(item), problem=exc)
            if exc.rounded:
                raise _FieldError(message, exc.rule, exc.shown, rounded=True) from None
            rule = f"has an item that {exc.rule}"
            shown = _("has an item that {rule}").format(rule=exc.shown)
            raise _FieldError(message, rule, shown) from None
    return values


def as_text(value: object) -> str:
    """A JSON value as a flat parameter's text: lists comma-joined, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(as_text(v) for v in value)
    return str(value)


# One encoder, made once: json.dumps() would build it again for every row.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _converter(fspec: FieldSpec) -> Callable[[str, bool], object]:
    """The cell -> value function of one field; plain String and Number skip the generic path."""
    if not fspec.is_list and fspec.max_length is None and not fspec.allowed:
        if fspec.type == "String":
            return check_string
        if fspec.type == "Number":
            return parse_number
    return partial(convert, fspec)


class RowValidator:
    """Validates rows against one spec, given which column holds each field.

    ``fed_back``: the rows come from a result workbook of top-import, whose ID columns are
    formatted as Text: the advice for a rounded ID is then to type it there, not to export again.
    """

    def __init__(self, spec: ApiSpec, columns: Mapping[str, int], fed_back: bool = False) -> None:
        self.spec = spec
        self._plan = tuple((f, columns.get(f.name), _converter(f)) for f in spec.fields)
        self._has_object = spec.object_param is not None
        self._identity = spec.identity
        self._fix_rounded = FIX_IN_RESULT if fed_back else FIX_EXCEL
        self._names = {index: name for name, index in columns.items()}

    def validate(self, row: Row) -> RequestRecord | RowError:
        if row.problem:
            shown = row.shown_problem or row.problem
            return RowError(row.source_row, "", "", shown, row.problem, shown)
        cells = row.cells
        if _CONTROL.search("".join(cells)):
            return self._control(row)
        payload: dict[str, object] = {}
        flat: list[tuple[str, str]] = []
        sent: dict[str, str] = {}
        for fspec, index, converter in self._plan:
            raw = cells[index] if index is not None and index < len(cells) else ""
            text = raw.strip()
            if not text:
                if fspec.required:
                    rule, shown = both(N_("{field} is required but empty"), field=fspec.name)
                    return RowError(row.source_row, fspec.name, raw, shown, rule, shown)
                continue
            numeric = index in row.numeric
            try:
                value = converter(text, numeric)
            except _FieldError as exc:
                message = _("{field} {value} {problem}").format(
                    field=fspec.name, value=repr(text), problem=exc
                )
                if exc.rounded:
                    message = _("{first}; {then}").format(first=message, then=_(self._fix_rounded))
                rule = f"{fspec.name} {exc.rule}"
                shown = _("{field} {rule}").format(field=fspec.name, rule=exc.shown)
                return RowError(row.source_row, fspec.name, raw, message, rule, shown)
            if fspec.is_flat:
                flat.append((fspec.name, as_text(value)))
            else:
                payload[fspec.name] = value
            if self._identity:
                sent[fspec.name] = as_text(value)
        payload_json = _encode_json(payload) if self._has_object else ""
        flat_params = tuple(flat)
        if self._identity:
            key = identity_hash([(name, sent.get(name, "")) for name in self._identity])
        else:
            key = payload_hash(payload_json, flat_params)
        return RequestRecord(row.source_row, payload_json, key, flat_params)

    def _control(self, row: Row) -> RowError:
        """A cell holding a control character (a NUL, an escape: invisible in Excel, never
        meant to be sent) makes the row invalid, whichever column it is in."""
        for index, cell in enumerate(row.cells):
            found = _CONTROL.search(cell)
            if found is None:
                continue
            english = self._names.get(index, f"column {index + 1}")  # the rule's key
            name = self._names.get(index) or _("column {number}").format(number=index + 1)
            char = found.group()
            message = _(
                "{name} holds the control character {char} at character {at}; it is invisible "
                "in Excel and is never sent: delete it (retype the cell) and run again"
            ).format(name=name, char=f"U+{ord(char):04X}", at=found.start() + 1)
            template = N_("{name} holds a control character")
            rule, shown = template.format(name=english), _(template).format(name=name)
            return RowError(row.source_row, name, cell, message, rule, shown)
        raise AssertionError("no control character")  # pragma: no cover - searched before


@dataclass
class DuplicateFilter:
    """Remembers each payload's first row; memory is 16 bytes of digest and a row number each."""

    _first: dict[bytes, int] = field(default_factory=dict)

    def first_row(self, record: RequestRecord) -> int | None:
        """The earlier row with the same payload, or None (and remember this one)."""
        key = bytes.fromhex(record.row_key[:32])
        first = self._first.get(key)
        if first is None:
            self._first[key] = record.source_row
        return first
