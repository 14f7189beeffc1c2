"""The result report read back: the reader knows the format by the reporter's own names."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from importer.labels import SOURCE_ROW, Sheet
from importer.report_reader import result_rows
from importer.reporter import INTEGER_COLUMNS, ReportWriter, is_part_of, part_title
from importer.rows import RESULT_COLUMNS, Outcome, Row, Status

HEADERS = ("case_id", "score")


def written(path: Path, rows: int = 3, **options: object) -> Path:
    with ReportWriter(path, HEADERS, **options) as writer:  # type: ignore[arg-type]
        for i in range(rows):
            outcome = Outcome(Status.SUCCESS, request_id=f"r{i}", attempts=1, elapsed_ms=7 + i)
            writer.write(Row(i + 2, ("396743391396743391", "1.5")), outcome)
    return path


def test_the_integer_columns_are_the_result_columns_the_reporter_writes_as_numbers(tmp_path):
    book = openpyxl.load_workbook(written(tmp_path / "r.xlsx"), read_only=True)
    try:
        sheet = book[Sheet.RESULTS.value]
        header, first = list(sheet.iter_rows(max_row=2))
        cells = zip(header, first, strict=True)
        numbers = {h.value for h, c in cells if c.value is not None and c.data_type == "n"}
    finally:
        book.close()
    assert numbers == INTEGER_COLUMNS
    assert INTEGER_COLUMNS == {SOURCE_ROW, "attempts", "elapsed_ms"} <= set(RESULT_COLUMNS)


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_rows_read_back_with_the_integer_columns_as_int_and_ids_as_text(tmp_path, suffix):
    [row, *_] = result_rows(written(tmp_path / f"r{suffix}"))
    assert (row[SOURCE_ROW], row["attempts"], row["elapsed_ms"]) == (2, 1, 7)
    assert (row["case_id"], row["score"], row["request_id"]) == ("396743391396743391", "1.5", "r0")
    assert row["code"] is None and row["status"] == "success"


def test_every_part_of_the_results_sheet_is_read_in_order(tmp_path):
    path = written(tmp_path / "r.xlsx", rows=5, max_rows_per_sheet=2)
    assert [r[SOURCE_ROW] for r in result_rows(path)] == [2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("title", "part"),
    [("results", True), ("results_2", True), ("results_12", True), ("failed_2", False)],
)
def test_a_sheet_part_is_recognised_by_the_title_the_reporter_gives_it(title, part):
    assert is_part_of(title, Sheet.RESULTS) is part
    assert is_part_of(part_title("results", 3), Sheet.RESULTS)
    assert not is_part_of("results_x", Sheet.RESULTS)
