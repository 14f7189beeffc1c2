"""The result report read back: what ``Result.rows()`` and ``Result.to_pandas()`` give.

The reporter writes the format and names it; this reads it in the reporter's own terms: the
``results`` sheet and its continuation parts (``reporter.is_part_of``), each column by its key
whatever label it was written with (``labels``), the columns written as numbers
(``reporter.INTEGER_COLUMNS``) as ``int``, and a CSV report's protective ``'`` undone
(``loader.unquoted``). Any other number cell is one of an input column that Excel had rounded
(the reporter keeps it a number cell): it stays a float, visibly not an ID.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook

from importer.labels import Sheet, key_of
from importer.loader import unquoted
from importer.reporter import INTEGER_COLUMNS, is_part_of
from importer.rows import RESULT_COLUMNS


def result_rows(path: Path) -> Iterator[dict[str, object]]:
    """One dict per input row of the report at ``path`` (a workbook or a CSV), in input order:
    ``source_row``, the input's cells, then the outcome columns; an empty cell is None."""
    if path.suffix.lower() == ".csv":  # the cells as they were before writing
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [key_of(h, RESULT_COLUMNS) or h for h in unquoted(next(reader, []))]
            for values in reader:
                row = dict(zip(header, unquoted(values), strict=False))
                yield {name: _csv_cell(name, text) for name, text in row.items()}
        return
    book = CalamineWorkbook.from_path(str(path))
    try:
        names = [n for n in book.sheet_names if is_part_of(n, Sheet.RESULTS)]
        for name in names:
            rows = book.get_sheet_by_name(name).iter_rows()
            # each column by its key, whatever label the workbook gives it
            header = [key_of(h, RESULT_COLUMNS) or str(h) for h in next(rows)]
            for values in rows:
                yield {
                    name: _cell(name, value) for name, value in zip(header, values, strict=False)
                }
    finally:
        book.close()


def pandas_column(pd: Any, column: Any, number_field: bool) -> Any:
    """A column of ``to_pandas()`` with its proper dtype: the integer result columns (and a
    Number field, where every value is an integer) as nullable ``Int64``, the rest as
    ``string`` (an ID stays text; a rounded number cell shows as the float it was); missing
    values are ``pd.NA`` throughout."""
    if column.name in INTEGER_COLUMNS or number_field:
        try:
            return pd.array([None if v is None else int(v) for v in column], dtype="Int64")
        except (TypeError, ValueError):  # an invalid row's "abc": the column stays text
            pass
    return column.astype("string")


def _csv_cell(name: str, text: str) -> object:
    """A result CSV's cell as ``result_rows`` gives a workbook's: the integer columns as int (an
    ID stays text), empty as None."""
    if not text:
        return None
    return int(text) if name in INTEGER_COLUMNS and text.isdigit() else text


def _cell(name: str, value: object) -> object:
    """A workbook's cell: the integer columns as int. An input column's number cell is one that
    Excel had rounded (the report keeps it a number cell) and stays a float, visibly not an ID."""
    if name in INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
        return int(value)
    return None if value == "" else value
