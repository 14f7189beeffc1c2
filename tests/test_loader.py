"""The loader: every input format and encoding, header mapping, row numbering, unreadable files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest

from importer.errors import InputError
from importer.loader import cell_text, detect_encoding, open_input, sniff_delimiter
from importer.rows import RESULT_COLUMNS, Row
from importer.spec import load_spec

SPEC = load_spec(None)
HEADERS = ["corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id"]
ROW = ["ding5df29af51dd68a8d35c2f4657eb6378f", "wegdtJRNVp51PWHMWqdwGBNnwg3", "396743391396743391"]
ROW += ["200110004", "ciddtJRNVp51PWHMWqdwGBNnw=="]
CHINESE = ["钉钉组织ID", "用户唯一加密键", "工单ID", "租户ID", "群开放ID"]
FIELDS = {name: i for i, name in enumerate(HEADERS)}


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_xlsx(path: Path, rows: list[list[object]], title: str = "Sheet1") -> Path:
    """Rows of cells from A1; a str is always a text cell (never a formula)."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for r, values in enumerate(rows, start=1):
        for c, value in enumerate(values, start=1):
            if value is None:
                continue
            cell = sheet.cell(r, c, value)
            if isinstance(value, str):
                cell.data_type = "s"
    book.save(path)
    return path


def read_all(path: Path, **kwargs) -> tuple[tuple[str, ...], list[Row]]:
    table = open_input(path, SPEC, **kwargs)
    return table.headers, list(table.rows())


# -- CSV encodings and delimiters ------------------------------------------------------------------


def test_gbk_csv_with_chinese_headers(tmp_path):
    text = ",".join(CHINESE) + "\r\n" + ",".join([*ROW[:-1], "群聊一号"]) + "\r\n"
    table = open_input(write_text(tmp_path / "gbk.csv", text, "gbk"), SPEC)
    assert table.headers == tuple(CHINESE)
    assert dict(table.columns) == FIELDS
    assert list(table.rows()) == [Row(2, (*ROW[:-1], "群聊一号"))]


@pytest.mark.parametrize(
    ("name", "encoding", "delimiter"),
    [
        ("bom.csv", "utf-8-sig", ","),
        ("plain.csv", "utf-8", ","),
        ("tabs.tsv", "utf-8", "\t"),
        ("tabs.txt", "utf-8", "\t"),
        ("semicolon.csv", "utf-8", ";"),
        ("excel-unicode.txt", "utf-16", "\t"),
    ],
)
def test_csv_encodings_and_delimiters(tmp_path, name, encoding, delimiter):
    text = delimiter.join(HEADERS) + "\n" + delimiter.join(ROW) + "\n"
    headers, rows = read_all(write_text(tmp_path / name, text, encoding))
    assert headers == tuple(HEADERS)
    assert rows == [Row(2, tuple(ROW))]


def test_chinese_text_past_the_encoding_sample_is_read(tmp_path):
    line = ",".join([*ROW[:-1], "群开放会话"]) + "\n"
    text = ",".join(HEADERS) + "\n" + line * 8000  # ~1 MB: well past the 64 KiB sample
    rows = list(open_input(write_text(tmp_path / "big.csv", text, "gb18030"), SPEC).rows())
    assert len(rows) == 8000
    assert rows[-1].cells[-1] == "群开放会话"


@pytest.mark.parametrize(
    ("sample", "complete", "expected"),
    [
        ("工单".encode()[:-1], False, "utf-8"),  # a character cut at the sample's end
        ("工单".encode()[:-1], True, None),
        ("工单".encode("gbk"), True, "gb18030"),
        (b"a,b\n", True, "utf-8"),
        (b"PK\x03\x04\x00\x00", False, None),
    ],
)
def test_detect_encoding(sample, complete, expected):
    assert detect_encoding(sample, complete) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [("a,b,c", ","), ("a\tb\tc", "\t"), ("a;b;c", ";"), ("a;b,c;d", ";"), ("single", ",")],
)
def test_sniff_delimiter(line, expected):
    assert sniff_delimiter(line) == expected


def test_cells_are_kept_exactly_as_read(tmp_path):
    text = "case_id,user_identify,tenant_id,open_conversation_id,note\n"
    text += ' 0042 ,=1+1,NA,null,"a, ""quoted"" value"\n'
    _, rows = read_all(write_text(tmp_path / "raw.csv", text))
    assert rows[0].cells == (" 0042 ", "=1+1", "NA", "null", 'a, "quoted" value')
    assert rows[0].numeric == frozenset()


def test_quoted_newlines_count_one_record(tmp_path):
    # Row numbers count records (as Excel shows them), not physical lines.
    text = 'case_id,user_identify,tenant_id,open_conversation_id\n1,"two\nlines",3,c\n2,u,3,c\n'
    _, rows = read_all(write_text(tmp_path / "nl.csv", text))
    assert [(r.source_row, r.cells[1]) for r in rows] == [(2, "two\nlines"), (3, "u")]


def test_blank_csv_rows_are_skipped_but_counted(tmp_path):
    text = (
        "\ncase_id,user_identify,tenant_id,open_conversation_id\n1,u,3,c\n\n , ,,\n,,,\n2,u,3,c\n"
    )
    _, rows = read_all(write_text(tmp_path / "blank.csv", text))
    assert [r.source_row for r in rows] == [3, 7]


def test_short_rows_are_padded_and_trailing_empty_cells_dropped(tmp_path):
    text = "case_id,user_identify,tenant_id,open_conversation_id\n1,u\n2,u,3,c,,\n"
    _, rows = read_all(write_text(tmp_path / "ragged.csv", text))
    assert [r.cells for r in rows] == [("1", "u", "", ""), ("2", "u", "3", "c")]


def test_extra_non_empty_cells_make_that_row_invalid_and_the_others_go(tmp_path):
    text = "case_id,user_identify,tenant_id,open_conversation_id\n1,u,3,c\n2,u,3,c,d,e\n3,u,3,c\n"
    _, rows = read_all(write_text(tmp_path / "extra.csv", text))
    assert [r.source_row for r in rows] == [2, 3, 4]
    assert [bool(r.problem) for r in rows] == [False, True, False]
    assert rows[1].cells == ("2", "u", "3", "c")
    assert "has 6 cells but the header has 4 (extra: 'd', 'e')" in rows[1].problem


# -- workbooks -------------------------------------------------------------------------------------


def test_xlsx_number_cells_are_text_and_marked_numeric(tmp_path):
    row: list[object] = [ROW[0], ROW[1], 396743391396743391, 200110004, ROW[4]]
    _, rows = read_all(write_xlsx(tmp_path / "n.xlsx", [HEADERS, row]))
    assert rows[0].cells == (ROW[0], ROW[1], "396743391396743000", "200110004", ROW[4])
    assert rows[0].numeric == frozenset({2, 3})


def test_xlsx_text_ids_are_not_numeric(tmp_path):
    _, rows = read_all(write_xlsx(tmp_path / "t.xlsx", [HEADERS, ROW]))
    assert rows == [Row(2, tuple(ROW))]


@pytest.mark.parametrize(
    ("value", "text", "numeric"),
    [
        ("=1+1", "=1+1", False),
        (396743391396743000.0, "396743391396743000", True),
        (396743391396743391.0, "396743391396743000", True),
        (9007199254740993, "9007199254740993", True),
        # the 2^53 band: exact up to 2^53; beyond, the text stays beyond 2^53
        (9007199254740992.0, "9007199254740992", True),
        (9007199254740994.0, "9007199254740994", True),
        (9007199254740996.0, "9007199254741000", True),
        (200110004.0, "200110004", True),
        (2.5, "2.5", True),
        (0.1 + 0.2, "0.3", True),
        (1e30, "1" + "0" * 30, True),
        (True, "TRUE", False),
        (False, "FALSE", False),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05", False),
        (dt.date(2024, 1, 2), "2024-01-02", False),
        (dt.time(3, 4, 5), "03:04:05", False),
        ("", "", False),
    ],
)
def test_cell_text(value, text, numeric):
    assert cell_text(value) == (text, numeric)


def test_xlsx_cell_types(tmp_path):
    row = ["=1+1", 2.5, True, dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2)]
    headers = ["user_identify", "tenant_id", "case_id", "open_conversation_id", "when"]
    _, rows = read_all(write_xlsx(tmp_path / "types.xlsx", [headers, row]))
    assert rows[0].cells == ("=1+1", "2.5", "TRUE", "2024-01-02 03:04:05", "2024-01-02")
    assert rows[0].numeric == frozenset({1})


FIXTURES = Path(__file__).parent / "fixtures"  # written by fixtures/make_fixtures.py


def test_xls_workbook():
    table = open_input(FIXTURES / "old.xls", SPEC)
    assert table.sheet == "data"
    assert list(table.rows()) == [Row(2, tuple(ROW), frozenset({3}))]


def test_ods_workbook():
    table = open_input(FIXTURES / "calc.ods", SPEC)
    assert table.sheet == "calc"
    assert list(table.rows()) == [Row(2, tuple(ROW), frozenset({3}))]


def test_a_workbook_sheet_is_parsed_once_for_the_header_and_every_pass(tmp_path, monkeypatch):
    import importer.loader as loader

    opened: list[Path] = []
    real_open = loader._open_book

    def counting_open(path: Path):
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(loader, "_open_book", counting_open)
    book = openpyxl.Workbook()
    book.active.append(HEADERS)
    for _ in range(3):
        book.active.append(ROW)
    book.save(tmp_path / "t.xlsx")
    table = open_input(tmp_path / "t.xlsx", SPEC)
    for _ in range(3):  # a run's pre-flight, send and report passes
        assert [r.source_row for r in table.rows()] == [2, 3, 4]
    assert len(opened) == 2  # the sheet names, then the sheet once


def test_sheet_not_starting_at_a1_keeps_real_row_numbers(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    for c, header in enumerate(HEADERS, start=2):
        sheet.cell(3, c, header)
    for c, value in enumerate(ROW, start=2):
        sheet.cell(5, c, value).data_type = "s"
    book.save(tmp_path / "offset.xlsx")
    table = open_input(tmp_path / "offset.xlsx", SPEC)
    assert table.headers == tuple(HEADERS)
    assert list(table.rows()) == [Row(5, tuple(ROW))]


def test_blank_sheet_rows_are_skipped_but_counted(tmp_path):
    rows: list[list[object]] = [HEADERS, ROW, [], ["  ", None, ""], ROW]
    _, read = read_all(write_xlsx(tmp_path / "gaps.xlsx", rows))
    assert [r.source_row for r in read] == [2, 5]


def test_named_sheet_is_read(tmp_path):
    path = write_xlsx(tmp_path / "two.xlsx", [["x"]], title="first")
    book = openpyxl.load_workbook(path)
    failed = book.create_sheet("failed")
    failed.append(HEADERS)
    failed.append(ROW)
    book.save(path)
    table = open_input(path, SPEC, sheet="failed")
    assert table.sheet == "failed"
    assert [r.cells for r in table.rows()] == [tuple(ROW)]


# -- header mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        ["caseId", "userIdentify", "tenantId", "openConversationId"],
        ["case_id", "user_identify", "tenant_id", "open_conversation_id"],
        ["工单ID", "用户唯一加密键", "租户ID", "群开放ID"],
        ["Case ID", "USER_IDENTIFY", " Tenant-Id ", "open conversation id"],
        ["case-id", "User Identify", "TENANTID", "Open_Conversation_ID"],
    ],
)
def test_header_spellings_map_to_fields(tmp_path, headers):
    table = open_input(write_text(tmp_path / "h.csv", ",".join(headers) + "\n"), SPEC)
    assert table.headers == tuple(headers)
    assert dict(table.columns) == {
        "case_id": 0,
        "user_identify": 1,
        "tenant_id": 2,
        "open_conversation_id": 3,
    }


def test_unknown_columns_are_kept_but_not_mapped(tmp_path):
    text = "note,case_id,user_identify,tenant_id,open_conversation_id\nhi,1,u,3,c\n"
    table = open_input(write_text(tmp_path / "u.csv", text), SPEC)
    assert table.headers[0] == "note"
    assert "note" not in table.columns
    assert next(table.rows()).cells == ("hi", "1", "u", "3", "c")


def test_columns_table_maps_other_headers(tmp_path):
    text = "Ticket No,Visitor,Tenant,Group\n1,u,3,c\n"
    mapping = {
        "Ticket No": "case_id",
        "visitor": "user_identify",  # matched after normalising, as names are
        "Tenant": "tenant_id",
        "Group": "open_conversation_id",
    }
    table = open_input(write_text(tmp_path / "m.csv", text), SPEC, column_map=mapping)
    assert dict(table.columns) == {
        "case_id": 0,
        "user_identify": 1,
        "tenant_id": 2,
        "open_conversation_id": 3,
    }


def test_columns_table_naming_an_unknown_field_is_an_error(tmp_path):
    path = write_text(tmp_path / "m.csv", "Ticket No\n1\n")
    with pytest.raises(InputError, match=r"maps 'Ticket No' .* to 'ticket', which is not a field"):
        open_input(path, SPEC, column_map={"Ticket No": "ticket"})


def test_missing_required_columns_are_named_with_the_headers_found(tmp_path):
    path = write_text(tmp_path / "x.csv", "a,b,case_id\n1,2,3\n")
    with pytest.raises(InputError) as caught:
        open_input(path, SPEC)
    assert str(caught.value) == (
        f"{path} has no column for required field(s) user_identify, tenant_id, "
        "open_conversation_id; headers found: a, b, case_id. Rename a column or map it in "
        "[columns] of importer.toml."
    )


def test_two_headers_for_one_field_are_an_error(tmp_path):
    path = write_text(tmp_path / "d.csv", "Case ID,caseId,user_identify\n")
    with pytest.raises(InputError, match=r"two columns for field case_id: 'Case ID' and 'caseId'"):
        open_input(path, SPEC)


def test_mapped_header_clashing_with_a_named_one_is_an_error(tmp_path):
    path = write_text(tmp_path / "d.csv", "ticket,case_id\n")
    with pytest.raises(InputError, match=r"two columns for field case_id: 'ticket' and 'case_id'"):
        open_input(path, SPEC, column_map={"ticket": "case_id"})


def test_result_columns_of_an_earlier_report_are_dropped(tmp_path):
    headers = ["source_row", *HEADERS, *RESULT_COLUMNS[1:]]
    report_row: list[object] = [7, *ROW, "invalid", "", "", "", "", "", "", 0, 0, "bad id"]
    path = write_xlsx(tmp_path / "result.xlsx", [headers, report_row], title="failed")
    table = open_input(path, SPEC, sheet="failed")
    assert table.headers == tuple(HEADERS)
    assert dict(table.columns) == FIELDS
    # the original file's row number travels with the row (source_row 7 in the report)
    assert list(table.rows()) == [Row(2, tuple(ROW), origin_row=7)]


def test_result_columns_are_recognised_in_any_case(tmp_path):
    text = "Source_Row,case_id,user_identify,tenant_id,open_conversation_id,STATUS\n"
    text += "9,1,u,3,c,failed\n"
    headers, rows = read_all(write_text(tmp_path / "r.csv", text))
    assert headers == ("case_id", "user_identify", "tenant_id", "open_conversation_id")
    assert rows == [Row(2, ("1", "u", "3", "c"), origin_row=9)]


def test_numeric_indexes_follow_dropped_columns(tmp_path):
    headers = ["source_row", "case_id", "user_identify", "tenant_id", "open_conversation_id"]
    _, rows = read_all(write_xlsx(tmp_path / "n.xlsx", [headers, [3, "1", "u", 200110004, "c"]]))
    assert rows == [Row(2, ("1", "u", "200110004", "c"), frozenset({2}), origin_row=3)]


def test_rows_gives_a_fresh_pass_each_call(tmp_path):
    text = ",".join(HEADERS) + "\n" + (",".join(ROW) + "\n") * 3
    for path in (
        write_text(tmp_path / "twice.csv", text),
        write_xlsx(tmp_path / "twice.xlsx", [HEADERS, ROW, ROW, ROW]),
    ):
        table = open_input(path, SPEC)
        first = table.rows()
        assert next(first).source_row == 2
        assert list(table.rows()) == list(open_input(path, SPEC).rows())
        assert [r.source_row for r in first] == [3, 4]


# -- unreadable input ------------------------------------------------------------------------------


def _zero_bytes(tmp_path: Path) -> Path:
    return write_text(tmp_path / "empty.csv", "")


def _only_blank_lines(tmp_path: Path) -> Path:
    return write_text(tmp_path / "blank.csv", "\n  \n,,\n")


def _corrupt_xlsx(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(bytes(range(256)) * 20)
    return path


def _corrupt_xls(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.xls"
    path.write_bytes(b"not an ole file" * 100)
    return path


def _empty_sheet(tmp_path: Path) -> Path:
    return write_xlsx(tmp_path / "nothing.xlsx", [])


def _binary_as_csv(tmp_path: Path) -> Path:
    path = tmp_path / "book.csv"
    path.write_bytes(write_xlsx(tmp_path / "real.xlsx", [HEADERS]).read_bytes())
    return path


def _unknown_extension(tmp_path: Path) -> Path:
    return write_text(tmp_path / "rows.pdf", "a,b\n")


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.csv"


def _directory(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, r"nope\.csv does not exist; check the path"),
        (_directory, r"is a directory; give the path of an input file"),
        (_zero_bytes, r"empty\.csv is empty; put the column headers in row 1"),
        (_only_blank_lines, r"blank\.csv has no header row"),
        (_empty_sheet, r"nothing\.xlsx has no header row"),
        (_corrupt_xlsx, r"corrupt\.xlsx cannot be read as a \.xlsx workbook .*save it again"),
        (_corrupt_xls, r"corrupt\.xls cannot be read as a \.xls workbook"),
        (_binary_as_csv, r"book\.csv is not UTF-8 or GB18030 text"),
        (_unknown_extension, r"rows\.pdf has an unsupported extension '\.pdf'; use \.csv"),
    ],
)
def test_unreadable_input_is_one_sentence(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as caught:
        open_input(path, SPEC)
    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_missing_sheet_lists_the_sheets_found(tmp_path):
    path = write_xlsx(tmp_path / "book.xlsx", [HEADERS], title="rows")
    with pytest.raises(InputError, match=r"book\.xlsx has no sheet 'failed'; sheets found: rows\."):
        open_input(path, SPEC, sheet="failed")


def test_gbk_text_after_the_sample_is_found_before_any_row_is_read(tmp_path):
    body = (",".join(ROW) + "\n") * 2000  # ASCII past the 64 KiB sample: looks like UTF-8
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        (",".join(HEADERS) + "\n" + body + ",".join(ROW)).encode() + "工单\n".encode("gbk")
    )
    rows = list(open_input(path, SPEC).rows())
    assert rows[-1].cells[-1].endswith("工单")


def test_text_that_is_neither_utf8_nor_gb18030_after_the_sample_is_refused_up_front(tmp_path):
    body = (",".join(ROW) + "\n") * 2000
    path = tmp_path / "broken.csv"
    path.write_bytes((",".join(HEADERS) + "\n" + body).encode() + b"\x80\x80\xff\xff\n")
    with pytest.raises(InputError, match=r"broken\.csv is not UTF-8 or GB18030 text"):
        open_input(path, SPEC)


def test_first_visible_sheet_is_the_default(tmp_path):
    path = write_xlsx(tmp_path / "hidden.xlsx", [["lookup"]], title="lists")
    book = openpyxl.load_workbook(path)
    book["lists"].sheet_state = "hidden"
    rows = book.create_sheet("rows")
    rows.append(HEADERS)
    book.save(path)
    assert open_input(path, SPEC).sheet == "rows"


def test_extra_cells_are_checked_before_result_columns_are_dropped(tmp_path):
    text = "source_row,case_id,user_identify,tenant_id,open_conversation_id\n2,1,u,3,c,extra\n"
    (row,) = open_input(write_text(tmp_path / "r.csv", text), SPEC).rows()
    assert "has 6 cells but the header has 5" in row.problem


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.mark.parametrize(
    ("name", "count", "last_row"),
    [
        ("group_tickets.csv", 300, 301),
        ("group_tickets.xlsx", 120, 121),
        ("with_errors.xlsx", 14, 16),
    ],
)
def test_samples_read(name, count, last_row):
    table = open_input(SAMPLES / name, SPEC)
    rows = list(table.rows())
    assert table.headers[:5] == tuple(HEADERS)
    assert (len(rows), rows[-1].source_row) == (count, last_row)


def test_csv_row_estimate_counts_lines_below_the_header(tmp_path):
    text = ",".join(HEADERS) + "\n" + (",".join(ROW) + "\n") * 7
    assert open_input(write_text(tmp_path / "n.csv", text), SPEC).estimate_rows() == 7


def test_workbook_row_estimate_is_not_computed(tmp_path):
    path = write_xlsx(tmp_path / "n.xlsx", [HEADERS, ROW])
    assert open_input(path, SPEC).estimate_rows() is None


def test_a_workbook_cell_as_long_as_a_cell_can_be_makes_its_row_invalid(tmp_path):
    """A result workbook cuts text at 32,767 characters (so does Excel): fed back, such a cell
    must not be sent as if it were whole."""
    book = openpyxl.Workbook()
    book.active.append(HEADERS)
    book.active.append(ROW)
    book.active.append([*ROW[:1], "U" * 32_767, *ROW[2:]])
    book.save(tmp_path / "t.xlsx")
    rows = list(open_input(tmp_path / "t.xlsx", SPEC).rows())
    assert rows[0].problem == ""
    assert rows[1].problem.startswith("user_identify holds 32,767 characters")
