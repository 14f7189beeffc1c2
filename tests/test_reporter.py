"""ReportWriter: the result workbook / CSV, read back cell by cell with its types."""

from __future__ import annotations

import itertools
import os
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from importer import reporter
from importer.errors import UsageError
from importer.reporter import EXCEL_MAX_DATA_ROWS, ReportWriter
from importer.rows import Outcome, Row, Status

HEADERS = ("customer_id", "name")
OUTCOME_COLUMNS = (
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
RESULTS_HEADER = ["source_row", *HEADERS, *OUTCOME_COLUMNS]
FAILED_HEADER = [*HEADERS, "error", "source_row", *OUTCOME_COLUMNS[:-1]]
CHECK_HEADER = [*HEADERS, "decision", *FAILED_HEADER[len(HEADERS) :]]


def read_sheets(path: Path) -> dict[str, list[list[tuple[object, str]]]]:
    """Every sheet as rows of (value, openpyxl data_type), in workbook order."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return {
            ws.title: [[(c.value, c.data_type) for c in row] for row in ws.iter_rows()]
            for ws in wb.worksheets
        }
    finally:
        wb.close()


def values(rows: list[list[tuple[object, str]]]) -> list[list[object]]:
    return [[v for v, _ in row] for row in rows]


def success(**kw: object) -> Outcome:
    return Outcome(Status.SUCCESS, request_id="req1", attempts=1, elapsed_ms=42, **kw)


def test_results_sheet_has_source_row_inputs_then_outcome_with_types(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, ("1001", "Ann")), success(system_time="2024-05-01 12:00:00"))
        outcome = Outcome(
            Status.FAILED, "15", "Remote error", "isv.bad", "bad group", "req2", "", 3, 900, "x"
        )
        writer.write(Row(4, ("1002", "Bob")), outcome)
        assert writer.close([("rows read", 2)]) == out

    sheets = read_sheets(out)
    assert list(sheets) == ["results", "failed", "check", "summary"]
    results = sheets["results"]
    assert values(results) == [
        RESULTS_HEADER,
        [2, "1001", "Ann", "success", None, None, None, None, "req1", "2024-05-01 12:00:00", 1, 42,
         None],
        [4, "1002", "Bob", "failed", "15", "Remote error", "isv.bad", "bad group", "req2", None, 3,
         900, "x"],
    ]  # fmt: skip
    assert all(t == "s" for _, t in results[0])
    types = [t for _, t in results[2]]
    assert types == ["n", "s", "s", "s", "s", "s", "s", "s", "s", "n", "n", "n", "s"]


@pytest.mark.parametrize(
    ("status", "on_failed_sheet"),
    [
        (Status.SUCCESS, False),
        (Status.FAILED, True),
        (Status.INVALID, True),
        (Status.DUPLICATE, False),
        (Status.SKIPPED, False),
        (Status.NOT_SENT, True),
        (Status.UNKNOWN, False),
        (Status.VALID, False),
    ],
)
def test_failed_sheet_holds_failed_invalid_and_not_sent_rows(
    tmp_path: Path, status: Status, on_failed_sheet: bool
) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, ("1", "a")), Outcome(status, error="why", attempts=2, elapsed_ms=7))
        writer.close([])
    sheets = read_sheets(out)
    expected = [FAILED_HEADER]
    if on_failed_sheet:
        expected.append(["1", "a", "why", 2, status.value, *[None] * 6, 2, 7])
    assert values(sheets["failed"]) == expected
    checks = [CHECK_HEADER]
    if status is Status.UNKNOWN:  # brought to a decision in the check sheet instead
        checks.append(["1", "a", None, "why", 2, status.value, *[None] * 6, 2, 7])
    assert values(sheets["check"]) == checks
    assert len(sheets["results"]) == 2


def test_failed_sheet_puts_input_columns_first_and_interleaves_with_results(
    tmp_path: Path,
) -> None:
    out = tmp_path / "result.xlsx"
    statuses = [Status.SUCCESS, Status.INVALID, Status.SUCCESS, Status.NOT_SENT, Status.FAILED]
    with ReportWriter(out, HEADERS) as writer:
        for i, status in enumerate(statuses):
            writer.write(Row(i + 2, (f"id{i}", f"n{i}")), Outcome(status, error=f"e{i}"))
        writer.close([])
    sheets = read_sheets(out)
    assert [row[:4] for row in values(sheets["failed"])] == [
        ["customer_id", "name", "error", "source_row"],
        ["id1", "n1", "e1", 3],
        ["id3", "n3", "e3", 5],
        ["id4", "n4", "e4", 6],
    ]
    assert [row[0] for row in values(sheets["results"])[1:]] == [2, 3, 4, 5, 6]


def test_summary_sheet_lists_pairs_in_order(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    summary = [
        ("api", "alibaba.lyservice.group.ticket.customer.save"),
        ("rows read", 1_000_000),
        ("calls/s", 9.5),
        ("status success", 3),
        ("started", "2024-05-01T12:00:00+08:00"),
    ]
    with ReportWriter(out, HEADERS) as writer:
        writer.close(summary)
    sheet = read_sheets(out)["summary"]
    assert values(sheet) == [["item", "value"], *[list(pair) for pair in summary]]
    assert [t for _, t in sheet[2]] == ["s", "n"]
    assert [t for _, t in sheet[5]] == ["s", "s"]


@pytest.mark.parametrize(
    "text",
    [
        "=1+1",
        "+1",
        "-1",
        "@SUM(A1:A2)",
        '=HYPERLINK("http://evil","x")',
        "{=A1}",
        "123456789012345678",  # an 18-digit id: a number would keep 15 digits
        "007",
        "1e5",
        "http://example.com/a?b=1",
        "mailto:a@b.c",
        "TRUE",
        "<r>not rich text</r>",  # xlsxwriter's constant_memory mode would write this as raw XML
        "  padded  ",
        "a & b <c>",
        "客户 名称",
    ],
)
def test_text_is_written_as_a_literal_string(tmp_path: Path, text: str) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, (text, "x")), Outcome(Status.INVALID, error=text))
        writer.close([("note", text)])
    sheets = read_sheets(out)
    assert sheets["results"][1][1] == (text, "s")
    assert sheets["results"][1][-1] == (text, "s")
    assert sheets["failed"][1][0] == (text, "s")
    assert sheets["summary"][1][1] == (text, "s")
    with zipfile.ZipFile(out) as zf:
        assert not any(n.startswith("xl/worksheets/_rels") for n in zf.namelist())  # no links
        assert all(b"<f>" not in zf.read(n) for n in zf.namelist() if n.endswith(".xml"))


def test_short_rows_are_padded_so_outcome_columns_stay_under_their_headers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, ("only",)), success())
        writer.close([])
    assert values(read_sheets(out)["results"])[1][:4] == [2, "only", None, "success"]


def test_csv_has_bom_results_columns_and_neutralised_formulas(tmp_path: Path) -> None:
    out = tmp_path / "result.csv"
    with ReportWriter(out, ("id", "=note")) as writer:
        writer.write(Row(2, ("123456789012345678", "=1+1")), success())
        writer.write(Row(3, ("-5", "+1")), Outcome(Status.INVALID, error="@x"))
        writer.write(Row(4, ("\tx", "\ry")), Outcome(Status.FAILED, msg='a "q", b'))
        writer.close([("rows read", 3)])
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.decode("utf-8-sig").split("\r\n") == [
        "source_row,id,'=note,status,code,msg,sub_code,sub_msg,request_id,system_time,"
        "attempts,elapsed_ms,error",
        "2,123456789012345678,'=1+1,success,,,,,req1,,1,42,",
        "3,'-5,'+1,invalid,,,,,,,0,0,'@x",
        '4,\'\tx,"\'\ry",failed,,"a ""q"", b",,,,,0,0,',
        "",
    ]
    assert os.listdir(tmp_path) == ["result.csv"]


def test_sheets_continue_past_the_row_limit_each_with_a_header(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS, max_rows_per_sheet=2) as writer:
        for i in range(5):
            status = Status.FAILED if i != 1 else Status.SUCCESS
            writer.write(Row(i + 2, (str(i), "x")), Outcome(status))
        writer.close([("rows read", 5)])
    sheets = read_sheets(out)
    assert list(sheets) == [
        "results",
        "failed",
        "check",
        "results_2",
        "failed_2",
        "results_3",
        "summary",
    ]
    source_rows = {name: [row[0] for row in values(rows)] for name, rows in sheets.items()}
    assert source_rows["results"] == ["source_row", 2, 3]
    assert source_rows["results_2"] == ["source_row", 4, 5]
    assert source_rows["results_3"] == ["source_row", 6]
    assert values(sheets["failed"])[0] == FAILED_HEADER
    assert [row[3] for row in values(sheets["failed"])[1:]] == [2, 4]
    assert values(sheets["failed_2"])[0] == FAILED_HEADER
    assert [row[3] for row in values(sheets["failed_2"])[1:]] == [5, 6]


@pytest.mark.parametrize("limit", [0, EXCEL_MAX_DATA_ROWS + 1])
def test_row_limit_must_fit_excel(tmp_path: Path, limit: int) -> None:
    with pytest.raises(ValueError):
        ReportWriter(tmp_path / "r.xlsx", HEADERS, max_rows_per_sheet=limit)


@pytest.mark.slow
def test_real_excel_limit_splits_after_1048575_data_rows(tmp_path: Path) -> None:
    """Writes 1,048,577 rows for real (about 20-55 s): the default limit is Excel's. Splitting
    itself is proven with a small split size above; ``pytest -m slow`` runs this one."""
    out = tmp_path / "big.xlsx"
    total = EXCEL_MAX_DATA_ROWS + 2
    outcome = Outcome(Status.SUCCESS, attempts=1)
    with ReportWriter(out, ("id",)) as writer:
        for n in range(total):
            writer.write(Row(n + 2, (str(n),)), outcome)
        writer.close([("rows read", total)])

    wb = openpyxl.load_workbook(out, read_only=True)
    try:
        assert wb.sheetnames == ["results", "failed", "check", "results_2", "summary"]
        assert wb["results"].max_row == 1_048_576  # the <dimension> xlsxwriter wrote
        assert [[c.value for c in r] for r in wb["results_2"].iter_rows()] == [
            ["source_row", "id", *OUTCOME_COLUMNS],
            [total, str(total - 2), "success", *[None] * 6, 1, 0, None],
            [total + 1, str(total - 1), "success", *[None] * 6, 1, 0, None],
        ]
    finally:
        wb.close()
    first, count, last = _scan_rows(out, "xl/worksheets/sheet1.xml")
    assert (first, count, last) == (1, 1_048_576, 1_048_576)


def _scan_rows(path: Path, member: str) -> tuple[int, int, int]:
    """First row number, row count and last row number of a sheet, streamed from the zip."""
    row_tag = re.compile(rb'<row r="(\d+)"')
    first = last = count = 0
    tail = b""
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        while chunk := fh.read(1 << 20):
            data = tail + chunk
            cut = data.rfind(b"<row ")
            cut = len(data) if cut == -1 else cut
            for match in row_tag.finditer(data, 0, cut):
                last = int(match.group(1))
                first = first or last
                count += 1
            tail = data[cut:]
    for match in row_tag.finditer(tail):
        last = int(match.group(1))
        count += 1
    return first, count, last


def test_target_appears_only_at_close_via_a_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "result.xlsx"
    writer = ReportWriter(out, HEADERS)
    temp = out.with_name(f".result.xlsx.tmp-{os.getpid()}")
    writer.write(Row(2, ("1", "a")), success())
    assert not out.exists()
    assert temp.exists()
    writer.close([])
    assert out.exists()
    assert os.listdir(out.parent) == ["result.xlsx"]


def test_an_existing_target_is_replaced_only_at_close(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    out.write_bytes(b"previous run")
    writer = ReportWriter(out, HEADERS)
    writer.write(Row(2, ("1", "a")), success())
    assert out.read_bytes() == b"previous run"
    writer.close([])
    assert values(read_sheets(out)["results"])[1][:2] == [2, "1"]


@pytest.mark.parametrize("name", ["result.xlsx", "result.csv"])
def test_abort_removes_the_temp_file_and_keeps_the_target(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    writer = ReportWriter(out, HEADERS)
    writer.write(Row(2, ("1", "a")), success())
    writer.abort()
    writer.abort()
    assert os.listdir(tmp_path) == []

    out.write_bytes(b"previous run")
    with pytest.raises(KeyboardInterrupt), ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, ("1", "a")), success())
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == [name]
    assert out.read_bytes() == b"previous run"


def test_leaving_the_block_without_close_closes_with_an_empty_summary(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.write(Row(2, ("1", "a")), success())
    assert values(read_sheets(out)["summary"]) == [["item", "value"]]
    with pytest.raises(RuntimeError):
        writer.write(Row(3, ("2", "b")), success())


def _parent_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "result.xlsx"


def _is_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "result.xlsx").mkdir()
    return tmp_path / "result.xlsx"


@pytest.mark.parametrize(
    ("make_path", "words"),
    [
        (_parent_is_a_file, "choose a path"),
        (_is_a_directory, "is a directory"),
        (lambda tmp_path: tmp_path / "result.txt", "must end with .xlsx or .csv"),
    ],
)
def test_unwritable_path_is_a_usage_error_naming_it(tmp_path: Path, make_path, words: str) -> None:
    path = make_path(tmp_path)
    with pytest.raises(UsageError) as info:
        ReportWriter(path, HEADERS)
    assert str(path) in str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["result.xlsx", "result.csv"])
def test_permission_denied_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(reporter, "open", denied, raising=False)  # root ignores chmod
    with pytest.raises(UsageError, match="Permission denied"):
        ReportWriter(tmp_path / name, HEADERS)
    assert os.listdir(tmp_path) == []


def test_failure_at_close_is_a_usage_error_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "result.xlsx"
    out.write_bytes(b"previous run")
    writer = ReportWriter(out, HEADERS)
    writer.write(Row(2, ("1", "a")), success())

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporter.os, "replace", no_space)
    with pytest.raises(UsageError, match=r"No space left on device") as info:
        writer.close([])
    assert str(out) in str(info.value)
    assert os.listdir(tmp_path) == ["result.xlsx"]
    assert out.read_bytes() == b"previous run"


def test_interrupt_during_close_still_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "result.xlsx"
    writer = ReportWriter(out, HEADERS)
    writer.write(Row(2, ("1", "a")), success())

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(reporter.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.close([])
    assert os.listdir(tmp_path) == []


def test_without_call_columns_attempts_and_elapsed_are_left_empty(tmp_path: Path) -> None:
    out = tmp_path / "result.xlsx"
    with ReportWriter(out, HEADERS, call_columns=False) as writer:
        writer.write(Row(2, ("1001", "Ann")), Outcome(Status.VALID))
        writer.write(Row(3, ("1002", "Bob")), Outcome(Status.INVALID, error="tenant_id bad"))
        writer.close([])
    sheets = read_sheets(out)
    assert values(sheets["results"])[1:] == [
        [2, "1001", "Ann", "valid", None, None, None, None, None, None, None, None, None],
        [3, "1002", "Bob", "invalid", None, None, None, None, None, None, None, None,
         "tenant_id bad"],
    ]  # fmt: skip


def test_the_xlsxwriter_internals_the_writer_relies_on_are_still_there(tmp_path: Path) -> None:
    """reporter.py writes cells with ``Worksheet._write_string`` / ``_write_number`` (the public
    ``write_*`` wrap them in an A1-notation converter that costs ~9 % of the write time) and,
    to abandon a workbook, closes each ``Worksheet.row_data_fh`` and sets
    ``Workbook.fileclosed``. pyproject.toml pins xlsxwriter 3.x; a release that changes any of
    these must fail here, not slow down or leak a temporary file."""
    import inspect

    import xlsxwriter
    from xlsxwriter.worksheet import Worksheet

    assert xlsxwriter.__version__.split(".")[0] == "3"
    for name, value in (("_write_string", "string"), ("_write_number", "number")):
        assert list(inspect.signature(getattr(Worksheet, name)).parameters)[:4] == [
            "self",
            "row",
            "col",
            value,
        ]
    book = xlsxwriter.Workbook(str(tmp_path / "x.xlsx"), {"constant_memory": True})
    sheet = book.add_worksheet()
    assert sheet._write_string(1, 0, "a") == 0 and sheet._write_number(1, 1, 2.5) == 0
    assert not sheet.row_data_fh.closed  # the constant_memory row store
    assert book.fileclosed in (0, False)
    writer = ReportWriter(tmp_path / "r.xlsx", HEADERS)
    writer.write(Row(2, ("a",) * len(HEADERS)), Outcome(Status.SUCCESS))
    writer.abort()  # closes the row stores and tells xlsxwriter there is nothing to store
    assert list(tmp_path.iterdir()) == []  # no workbook, no temporary file or folder left


def test_the_workbook_is_made_to_be_read(tmp_path: Path) -> None:
    """Widths that fit the content, a bold frozen header, an autofilter on results and failed,
    and the status cell coloured by conditional formatting."""
    out = tmp_path / "r.xlsx"
    headers = ("case_id", "corp_id", "名称")
    long_message = "参数错误：" + "x" * 150
    with ReportWriter(out, headers) as writer:
        writer.write(
            Row(2, ("396743391396743391", "ding5df29af51dd68a8d35c2f4657eb6378f", "钉钉")),
            Outcome(Status.SUCCESS, code="200", attempts=1),
        )
        writer.write(
            Row(3, ("396743391396743392", "d", "x")),
            Outcome(Status.FAILED, sub_code="isv.invalid-parameter", sub_msg=long_message),
        )
        writer.close([("rows read", 2)])
    book = openpyxl.load_workbook(out)
    results, failed = book["results"], book["failed"]
    header = [c.value for c in results[1]]
    width = {name: results.column_dimensions[chr(65 + i)].width for i, name in enumerate(header)}
    assert width["case_id"] >= 18 + 2  # the 18-digit ID shows whole
    assert width["corp_id"] >= 36 + 2
    assert width["名称"] >= 4  # two wide characters
    assert 60 <= width["sub_msg"] <= 63  # capped (xlsxwriter adds 0.71 of padding)
    assert all(c.font.b for c in results[1])
    # the header, and source_row with the user's first column (failed: the first column)
    assert results.freeze_panes == "C2" and failed.freeze_panes == "B2"
    assert results.auto_filter.ref == f"A1:{chr(64 + len(header))}3"
    assert failed.auto_filter.ref is not None and failed.auto_filter.ref.endswith("2")
    status = chr(65 + header.index("status"))
    rules = {
        rule.formula[0]: rule.dxf.fill.bgColor.rgb
        for cf in results.conditional_formatting
        if str(cf.sqref) == f"{status}2:{status}3"
        for rule in cf.rules
    }
    assert rules['"success"'].endswith("C6EFCE")  # green
    assert rules['"failed"'].endswith("FFC7CE") and rules['"invalid"'].endswith("FFC7CE")  # red
    assert rules['"unknown"'].endswith("FFEB9C")  # amber
    assert results.cell(2, 2).value == "396743391396743391"  # ids stay text


def test_the_summary_sheet_reads_as_a_dashboard_with_native_charts(tmp_path: Path) -> None:
    from importer.summary import Dashboard

    board = Dashboard(
        headline="t.xlsx: 10 rows, 7 success (70.0%) · 1m02s · 12 calls, 0.2 calls/s",
        verdict="exit 1: some rows failed",
        statuses=[("success", 7), ("failed", 2), ("unknown", 1)],
        codes=[("isv.invalid-parameter", 2, "非法参数", 5, "fix the value ...")],
        per_minute=[("08:00", 5), ("08:01", 7)],
        run=[("command", "run"), ("start (platform clock)", "2026-11-30 16:00:00 GMT+8")],
    )
    out = tmp_path / "r.xlsx"
    with ReportWriter(out, HEADERS) as writer:
        writer.close(board)
    sheet = openpyxl.load_workbook(out)["summary"]
    cells = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
    cells = [row for row in cells if row]
    assert cells[0] == [board.headline] and cells[1] == [board.verdict]
    assert sheet["A1"].font.b and sheet["A1"].font.sz == 14
    assert ["status", "rows", "share"] in cells
    assert ["success", 7, 0.7] in cells and ["unknown", 1, 0.1] in cells
    assert ["isv.invalid-parameter", 2, "非法参数", 5, "fix the value ..."] in cells
    assert ["08:01", 7] in cells
    assert ["start (platform clock)", "2026-11-30 16:00:00 GMT+8"] in cells
    kinds = sorted(type(chart).__name__ for chart in sheet._charts)
    assert kinds == ["BarChart", "BarChart", "LineChart"]  # status columns, code bars, minutes
    anchors = sorted(chart.anchor._from.row for chart in sheet._charts)
    assert all(b - a >= 16 for a, b in itertools.pairwise(anchors))  # never over each other
