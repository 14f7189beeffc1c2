"""The fix-and-refeed loop as a person works it in Excel, asserted on what the gateway saw.

A case_id that Excel rounded (a number cell: 396743391396743391 -> 396743391396743000) must be
refused on every way back into the tool until a person types the whole ID as text; unknown rows
come back through the check sheet with a person's decision.
"""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest
from helpers import HEADERS, cli, read_sheet, ticket, write_csv

FULL_ID = "596743391396743391"  # unlike any ticket()'s case_id
ROUNDED_ID = "596743391396743000"  # what Excel keeps of it: 15 significant digits
FAST = ["--qps", "200", "--no-progress"]


def write_book(path: Path, rows: list[dict[str, object]]) -> Path:
    """A workbook as Excel saves one: strings as text cells, numbers as number cells."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADERS)
    for row in rows:
        sheet.append([row[h] for h in HEADERS])
    book.save(path)
    return path


def with_rounded_id() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [ticket(i) for i in range(3)]
    rows[1]["case_id"] = float(ROUNDED_ID)  # typed into a General cell: Excel keeps 15 digits
    return rows


def gateway_saw(sim, case_id: str) -> int:
    """How often the simulator accepted a payload with this case_id."""
    return sum(n for payload, n in sim.accepted().items() if case_id in payload)


def statuses_by_row(path: Path, sheet: str = "results") -> dict[int, str]:
    return {int(r["source_row"]): str(r["status"]) for r in read_sheet(path, sheet)}


def copy_values_to_new_book(source: Path, sheet: str, target: Path) -> Path:
    """What a person does with copy and paste-values into a new workbook: the cells' values
    and types, no formats."""
    old = openpyxl.load_workbook(source)[sheet]
    book = openpyxl.Workbook()
    new = book.active
    for row in old.iter_rows(values_only=True):
        new.append(list(row))
    book.save(target)
    return target


def test_a_rounded_id_is_refused_on_every_way_back_and_never_sent(tmp_path, simulator):
    sim = simulator()
    write_book(tmp_path / "t.xlsx", with_rounded_id())
    first = cli(["run", "t.xlsx", *FAST], tmp_path, sim.env())
    assert first.returncode == 1, first.stderr
    result = tmp_path / "reports" / "t.result.xlsx"
    assert statuses_by_row(result)[3] == "invalid"
    # the same run to a CSV, and the checks' workbooks, are ways back too
    out_csv = cli(["run", "t.xlsx", "--out", "r.csv", *FAST], tmp_path, sim.env())
    assert out_csv.returncode == 1, out_csv.stderr
    assert cli(["validate", "t.xlsx"], tmp_path, sim.env()).returncode == 1
    dry = cli(["run", "t.xlsx", "--dry-run"], tmp_path, sim.env())
    assert dry.returncode == 1, dry.stderr
    copy_values_to_new_book(result, "failed", tmp_path / "pasted.xlsx")

    ways_back = [
        ["reports/t.result.xlsx"],  # the whole workbook, --sheet failed forgotten
        ["reports/t.result.xlsx", "--sheet", "failed"],  # the failed sheet left unchanged
        ["r.csv"],
        ["reports/t.validate.xlsx", "--sheet", "failed"],
        ["reports/t.validate.xlsx"],
        ["reports/t.dry-run.xlsx", "--sheet", "failed"],
        ["pasted.xlsx"],
    ]
    for args in ways_back:
        done = cli(["run", *args, *FAST], tmp_path, sim.env())
        assert done.returncode == 1, (args, done.stderr)
        assert "1 row invalid: case_id rounded by Excel (e.g. row 3)" in done.stdout, args
        assert gateway_saw(sim, ROUNDED_ID) == 0, args
    assert gateway_saw(sim, FULL_ID) == 0
    # the CSV keeps Excel's scientific form, the workbooks a number cell
    lines = (tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()
    assert lines[2].split(",")[3] == "5.96743391396743E+17"
    failed = openpyxl.load_workbook(result)["failed"]
    assert failed.cell(2, HEADERS.index("case_id") + 1).data_type == "n"


def test_the_full_id_retyped_as_text_in_the_failed_sheet_is_sent_once(tmp_path, simulator):
    sim = simulator()
    write_book(tmp_path / "t.xlsx", with_rounded_id())
    assert cli(["run", "t.xlsx", *FAST], tmp_path, sim.env()).returncode == 1
    result = tmp_path / "reports" / "t.result.xlsx"
    failed = read_sheet(result, "failed")
    assert [r["source_row"] for r in failed] == [3]
    # a fed-back workbook's message says where to type the ID, not to export again
    round_two = cli(["run", str(result), "--sheet", "failed", *FAST], tmp_path, sim.env())
    assert round_two.returncode == 1
    second = tmp_path / "reports" / "t-2.result.xlsx"
    error = read_sheet(second, "failed")[0]["error"]
    assert "type the full value into this cell" in error and "export again" not in error

    book = openpyxl.load_workbook(second)
    sheet = book["failed"]
    cell = sheet.cell(2, HEADERS.index("case_id") + 1)
    assert cell.number_format == "@"  # Text: what is typed there stays whole
    cell.value = FULL_ID  # the person types the whole ID
    book.save(second)
    round_three = cli(["run", str(second), "--sheet", "failed", *FAST], tmp_path, sim.env())
    assert round_three.returncode == 0, round_three.stderr
    third = tmp_path / "reports" / "t-3.result.xlsx"
    assert statuses_by_row(third) == {3: "success"}  # the original file's row number
    assert gateway_saw(sim, FULL_ID) == 1 and gateway_saw(sim, ROUNDED_ID) == 0


def test_the_failed_sheet_is_made_to_be_worked_in(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({200110009}))
    rows = [ticket(i) for i in range(4)]
    rows[1]["user_identify"] = ""  # invalid
    rows[2]["tenant_id"] = "200110009"  # declined by the platform: sub_code isv.invalid-parameter
    write_csv(tmp_path / "t.csv", rows)
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert done.returncode == 1
    book = openpyxl.load_workbook(tmp_path / "reports" / "t.result.xlsx")
    failed = book["failed"]
    header = [c.value for c in failed[1]]
    assert header[: len(HEADERS) + 3] == [*HEADERS, "error", "source_row", "status"]
    by_row = {
        r["source_row"]: r for r in read_sheet(tmp_path / "reports" / "t.result.xlsx", "failed")
    }
    assert by_row[3]["error"] == "user_identify is required but empty"
    declined = by_row[4]["error"]
    assert declined.startswith("the platform answered 非法参数 (isv.invalid-parameter); ")
    assert len(declined) > len("the platform answered 非法参数 (isv.invalid-parameter); ")
    # every ID column (the spec's String fields) formatted as Text, in failed and results
    # (each cell written, and the column, for the cells typed later)
    for name in ("corp_id", "user_identify", "case_id", "open_conversation_id"):
        col = HEADERS.index(name) + 1
        assert failed.cell(3, col).number_format == "@", name
        assert book["results"].cell(2, col + 1).number_format == "@", name
        assert failed.column_dimensions[chr(64 + col)].number_format == "@", name
    assert failed.cell(3, HEADERS.index("tenant_id") + 1).number_format == "General"
    assert failed.freeze_panes == "B2" and book["results"].freeze_panes == "C2"
    for sheet in book.worksheets:
        setup = sheet.page_setup
        assert setup.orientation == "landscape", sheet.title
        assert sheet.sheet_properties.pageSetUpPr.fitToPage, sheet.title
        assert setup.fitToWidth in (1, None) and setup.fitToHeight == 0, sheet.title
        if sheet.title != "summary":
            assert sheet.print_title_rows == "$1:$1", sheet.title


def test_not_sent_rows_say_why(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    done = cli(["run", "t.csv", "--max-runtime", "0", *FAST], tmp_path, sim.env())
    assert sim.stats()["calls"] == 0
    failed = read_sheet(tmp_path / "reports" / "t.result.xlsx", "failed")
    assert len(failed) == 3, done.stderr
    assert all(str(r["error"]).startswith("not sent: the run stopped at its") for r in failed)
    assert all("run the sheet again" in str(r["error"]) for r in failed)


DECISIONS = {2: "已完成", 3: "resend", 4: "", 5: "maybe", 6: " DONE ", 7: "重发"}


@pytest.mark.journals
def test_check_decisions_done_resend_blank_and_a_bad_word(tmp_path, simulator):
    lossy = simulator(lost_response_rate=1.0)  # accepted, and every answer lost: unknown
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(6)])
    first = cli(["run", "t.csv", *FAST, "--retries", "0"], tmp_path, lossy.env())
    assert first.returncode == 1, first.stderr
    result = tmp_path / "reports" / "t.result.xlsx"
    assert set(statuses_by_row(result).values()) == {"unknown"}
    assert read_sheet(result, "failed") == []
    book = openpyxl.load_workbook(result)
    check = book["check"]
    header = [c.value for c in check[1]]
    assert header[: len(HEADERS) + 3] == [*HEADERS, "decision", "error", "source_row"]
    assert check.column_dimensions[chr(65 + len(HEADERS))].number_format == "@"
    assert [dv.sqref for dv in check.data_validations.dataValidation]  # the drop-down list
    col = {name: i + 1 for i, name in enumerate(header)}
    for r in range(2, check.max_row + 1):
        check.cell(r, col["decision"]).value = DECISIONS[check.cell(r, col["source_row"]).value]
    book.save(result)

    good = simulator()
    applied = cli(["run", str(result), "--sheet", "check", *FAST], tmp_path, good.env())
    assert applied.returncode == 1, applied.stderr  # a blank one stays unknown, a bad word
    second = tmp_path / "reports" / "t-2.result.xlsx"
    assert statuses_by_row(second) == {
        2: "success",
        3: "success",
        4: "unknown",
        5: "invalid",
        6: "success",
        7: "success",
    }
    rows = {r["source_row"]: r for r in read_sheet(second)}
    assert "recorded as done" in rows[2]["error"] and "recorded as done" in rows[6]["error"]
    assert "not done or resend" not in rows[5]["error"] and "maybe" in rows[5]["error"]
    assert [r["source_row"] for r in read_sheet(second, "check")] == [4]
    stats = good.stats()
    assert stats["accepted"] == 2 and stats["accepted_payloads"] == 2  # rows 3 and 7, once
    assert gateway_saw(good, str(396743391396743391 + 1)) == 1  # row 3 is ticket(1)

    # The next run of the file skips what the person marked done, and sends nothing again.
    again = cli(["run", "t.csv", *FAST], tmp_path, good.env())
    assert again.returncode == 1
    assert statuses_by_row(result) == {
        2: "skipped",
        3: "skipped",
        4: "unknown",
        5: "unknown",
        6: "skipped",
        7: "skipped",
    }
    # the same decisions applied twice resend nothing
    twice = cli(["run", str(tmp_path / "reports" / "t-2.result.xlsx"), "--sheet", "check", *FAST],
                tmp_path, good.env())  # fmt: skip
    assert twice.returncode == 1
    assert good.stats()["accepted"] == 2


def test_validate_counts_invalid_rows_by_reason_with_an_example(tmp_path):
    rows: list[dict[str, object]] = [ticket(i) for i in range(6)]
    for i in (1, 3, 4):
        rows[i]["case_id"] = float(396743391396743391 + i)
    rows[5]["tenant_id"] = "abc"
    write_book(tmp_path / "t.xlsx", rows)
    done = cli(["validate", "t.xlsx", "--summary-json", "s.json"], tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[1] == "  3 rows invalid: case_id rounded by Excel (e.g. row 3)"
    assert lines[2] == "  1 row invalid: tenant_id is not a whole number (e.g. row 7)"
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["files"][0]["invalid_reasons"] == {
        "case_id rounded by Excel": 3,
        "tenant_id is not a whole number": 1,
    }
    summary = openpyxl.load_workbook(tmp_path / "reports" / "t.validate.xlsx")["summary"]
    cells = [[c for c in row if c is not None] for row in summary.iter_rows(values_only=True)]
    assert ["Invalid rows by reason"] in cells
    assert [3, "row 3", "case_id rounded by Excel"] in cells


@pytest.mark.parametrize("fed", ["t.result.xlsx", "t-2.result.xlsx"])
def test_each_round_takes_the_next_name_and_never_overwrites(tmp_path, simulator, fed):
    sim = simulator()
    write_book(tmp_path / "t.xlsx", with_rounded_id())
    reports = tmp_path / "reports"
    assert cli(["run", "t.xlsx", *FAST], tmp_path, sim.env()).returncode == 1
    if fed == "t-2.result.xlsx":
        args = ["run", "reports/t.result.xlsx", "--sheet", "failed", *FAST]
        assert cli(args, tmp_path, sim.env()).returncode == 1
    (reports / "t-3.result.xlsx").write_bytes(b"being edited")  # another round's, open in Excel
    done = cli(["run", f"reports/{fed}", "--sheet", "failed", *FAST], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert (reports / "t-3.result.xlsx").read_bytes() == b"being edited"
    # round 2 is free; after round 2 comes round 3, taken, so round 4
    expected = "t-4.result.xlsx" if fed == "t-2.result.xlsx" else "t-2.result.xlsx"
    assert f"workbook reports/{expected}" in done.stdout


def test_a_whole_workbook_fed_back_with_an_edited_failed_sheet_says_which_it_read(
    tmp_path, simulator
):
    sim = simulator()
    write_book(tmp_path / "t.xlsx", with_rounded_id())
    assert cli(["run", "t.xlsx", *FAST], tmp_path, sim.env()).returncode == 1
    result = tmp_path / "reports" / "t.result.xlsx"
    book = openpyxl.load_workbook(result)
    book["failed"].cell(2, HEADERS.index("case_id") + 1).value = FULL_ID
    book.save(result)
    done = cli(["run", "reports/t.result.xlsx", *FAST], tmp_path, sim.env())
    assert done.returncode == 1
    assert "which has edits in 1 row" in done.stderr
    assert "read its results sheet (the first), not its failed sheet" in done.stderr
    assert "--sheet failed" in done.stderr
    assert gateway_saw(sim, FULL_ID) == 0


def test_a_whole_workbook_fed_back_with_decisions_in_its_check_sheet_says_so(tmp_path, simulator):
    lossy = simulator(lost_response_rate=1.0)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(2)])
    assert cli(["run", "t.csv", *FAST, "--retries", "0"], tmp_path, lossy.env()).returncode == 1
    result = tmp_path / "reports" / "t.result.xlsx"
    book = openpyxl.load_workbook(result)
    book["check"].cell(2, len(HEADERS) + 1).value = "resend"
    book.save(result)
    good = simulator()
    done = cli(["run", "reports/t.result.xlsx", *FAST], tmp_path, good.env())
    assert done.returncode == 1
    assert "not its check sheet, which has 1 decision; to apply them, run" in done.stderr
    assert "--sheet check" in done.stderr
    assert good.stats()["calls"] == 0  # the results sheet's rows stay unknown: nothing resent


def lost_then_check_sheet(tmp_path, simulator, n: int = 3):
    """``n`` rows whose answers were all lost: unknown, listed in the check sheet."""
    lossy = simulator(lost_response_rate=1.0)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(n)])
    assert cli(["run", "t.csv", *FAST, "--retries", "0"], tmp_path, lossy.env()).returncode == 1
    return lossy, tmp_path / "reports" / "t.result.xlsx"


def decide(workbook: Path, decisions: dict[int, str]) -> None:
    book = openpyxl.load_workbook(workbook)
    check = book["check"]
    col = {c.value: i + 1 for i, c in enumerate(check[1])}
    for r in range(2, check.max_row + 1):
        row = check.cell(r, col["source_row"]).value
        if row in decisions:
            check.cell(r, col["decision"]).value = decisions[row]
    book.save(workbook)


@pytest.mark.journals
def test_the_same_check_sheet_applied_again_after_a_lost_resend_sends_nothing_again(
    tmp_path, simulator
):
    lossy, result = lost_then_check_sheet(tmp_path, simulator)
    decide(result, {2: "resend", 3: "resend", 4: "resend"})
    args = ["run", str(result), "--sheet", "check", *FAST, "--retries", "0"]
    assert cli(args, tmp_path, lossy.env()).returncode == 1  # the resends' answers lost too
    assert lossy.stats()["max_accepts_per_payload"] == 2
    again = cli(args, tmp_path, lossy.env())  # the old decisions, applied again
    assert again.returncode == 1
    assert lossy.stats()["max_accepts_per_payload"] == 2  # nothing sent a third time
    third = tmp_path / "reports" / "t-3.result.xlsx"
    rows = read_sheet(third)
    assert {r["status"] for r in rows} == {"unknown"}
    assert all("the decision here is out of date" in r["error"] for r in rows)
    # decided again in the newest workbook (t-2, written by the resend): sent once more
    decide(tmp_path / "reports" / "t-2.result.xlsx", {2: "done"})
    newest = ["run", "reports/t-2.result.xlsx", "--sheet", "check", *FAST]
    good = simulator()
    assert cli(newest, tmp_path, good.env()).returncode == 1  # rows 3, 4 still undecided
    assert good.stats()["calls"] == 0


def test_a_decision_on_edited_cells_or_a_row_never_unknown_is_invalid(tmp_path, simulator):
    _, result = lost_then_check_sheet(tmp_path, simulator)
    book = openpyxl.load_workbook(result)
    check = book["check"]
    col = {c.value: i + 1 for i, c in enumerate(check[1])}
    check.cell(2, col["case_id"]).value = "500000000000000999"  # edited
    check.cell(2, col["decision"]).value = "done"
    check.cell(3, col["decision"]).value = "resend"
    check.append([*ticket(50).values(), "done"])  # a row typed in by hand
    book.save(result)
    good = simulator()
    done = cli(["run", str(result), "--sheet", "check", *FAST], tmp_path, good.env())
    assert done.returncode == 1
    statuses = [r["status"] for r in read_sheet(tmp_path / "reports" / "t-2.result.xlsx")]
    assert statuses == ["invalid", "success", "unknown", "invalid"]
    assert good.stats()["accepted"] == 1  # only the unchanged row decided resend
    assert "2 rows invalid: decision on a row that is not unknown" in done.stdout
    # the edited payload was never recorded as done: a run holding it sends it
    write_csv(tmp_path / "fixed.csv", [{**ticket(0), "case_id": "500000000000000999"}])
    assert cli(["run", "fixed.csv", *FAST], tmp_path, good.env()).returncode == 0
    assert good.stats()["accepted"] == 2


def test_two_decision_columns_are_refused(tmp_path, simulator):
    lossy, result = lost_then_check_sheet(tmp_path, simulator, n=1)
    book = openpyxl.load_workbook(result)
    check = book["check"]
    check.cell(1, check.max_column + 1).value = "decision"
    book.save(result)
    done = cli(["run", str(result), "--sheet", "check", *FAST], tmp_path, lossy.env())
    assert done.returncode == 2
    assert "has 2 decision columns; keep one" in done.stderr


def test_exact_16_digit_numbers_round_trip_through_a_result_csv(tmp_path, simulator):
    sim = simulator()
    rows: list[dict[str, object]] = [ticket(i) for i in range(2)]
    rows[0]["tenant_id"] = 1500000000000000  # a Number cell of 16 digits: exact, sent as is
    rows[1]["tenant_id"] = 9007199254740992  # 2^53
    write_book(tmp_path / "t.xlsx", rows)
    first = cli(["run", "t.xlsx", "--out", "r.csv", *FAST], tmp_path, sim.env())
    assert first.returncode == 0, first.stderr
    again = cli(["run", "r.csv", *FAST], tmp_path, sim.env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 skipped" in again.stdout and sim.stats()["accepted"] == 2


def test_no_input_writes_over_a_workbook_of_another_input(tmp_path, simulator):
    sim = simulator()
    write_book(tmp_path / "t.xlsx", with_rounded_id())
    reports = tmp_path / "reports"
    assert cli(["run", "t.xlsx", *FAST], tmp_path, sim.env()).returncode == 1
    assert cli(["run", str(reports / "t.result.xlsx"), "--sheet", "failed", *FAST], tmp_path,
               sim.env()).returncode == 1  # fmt: skip
    kept = {name: (reports / name).read_bytes() for name in ("t.result.xlsx", "t-2.result.xlsx")}
    # a result CSV of t.xlsx named reports/t.csv, and an input that happens to be t-2.xlsx
    assert cli(["run", "t.xlsx", "--out", "reports/t.csv", *FAST], tmp_path, sim.env())
    write_book(tmp_path / "t-2.xlsx", [ticket(7)])
    for name in ("reports/t.csv", "t-2.xlsx"):
        done = cli(["run", name, *FAST], tmp_path, sim.env())
        assert done.returncode in (0, 1), done.stderr
    assert {name: (reports / name).read_bytes() for name in kept} == kept
    again = cli(["run", "t-2.xlsx", *FAST], tmp_path, sim.env())  # its own workbook: rewritten
    assert "workbook reports/t-2-2.result.xlsx" in again.stdout


def test_a_check_sheet_whose_decision_column_was_renamed_says_so(tmp_path, simulator):
    lossy, result = lost_then_check_sheet(tmp_path, simulator, n=1)
    book = openpyxl.load_workbook(result)
    check = book["check"]
    check.cell(1, len(HEADERS) + 1).value = "决定"
    check.cell(2, len(HEADERS) + 1).value = "resend"
    book.save(result)
    done = cli(["run", str(result), "--sheet", "check", *FAST], tmp_path, lossy.env())
    assert done.returncode == 1
    assert "its check sheet has no decision column (renamed or deleted?)" in done.stderr
    assert lossy.stats()["accepted"] == 1  # only the first run's call: nothing resent
