"""The Python API: a file, a DataFrame or rows, against the real simulator, as the CLI would."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import signal

import numpy as np
import pandas as pd
import pytest
from helpers import cli, ticket, write_csv

import importer
from importer.errors import AbortedError, InputError, UsageError

FAST = {"qps": 1000, "canary": 0}
VARYING = ("request_id", "system_time", "elapsed_ms")  # differ between two runs by nature


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("TOP_APP_KEY", "TOP_APP_SECRET", "TOP_SESSION", "TOP_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def credentials(sim) -> dict[str, str]:
    return {"gateway": sim.url, "app_key": sim.settings.app_key, "app_secret": sim.settings.secret}


def test_a_file_is_sent_and_its_result_read_back(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", [ticket(i) for i in range(5)])
    result = importer.run("t.csv", **credentials(sim), **FAST)
    assert (result.exit_code, result.counts) == (0, {"success": 5})
    assert result.workbook.resolve() == (here / "reports" / "t.result.xlsx").resolve()
    rows = list(result.rows())
    assert [r["source_row"] for r in rows] == [2, 3, 4, 5, 6]
    assert rows[0]["case_id"] == "396743391396743391" and rows[0]["status"] == "success"
    frame = result.to_pandas()
    assert list(frame["status"]) == ["success"] * 5
    assert sim.stats()["accepted"] == 5
    again = importer.run("t.csv", **credentials(sim), **FAST)  # the journal resumes, as on the CLI
    assert again.counts == {"skipped": 5} and sim.stats()["accepted"] == 5


def test_a_dataframe_is_an_input_like_any_other_with_pandas_own_damage(here, simulator):
    sim = simulator()
    rows = [ticket(i) for i in range(3)]
    frame = pd.DataFrame(rows)
    frame["tenant_id"] = frame["tenant_id"].astype("int64")  # int64 is exact
    frame.loc[1, "user_identify"] = None  # an empty cell
    damaged = pd.DataFrame(rows)
    damaged["case_id"] = damaged["case_id"].astype("float64")  # 18 digits in a float: lost
    result = importer.run(frame, **credentials(sim), **FAST, input_name="tickets")
    assert result.counts == {"success": 2, "invalid": 1}
    assert result.workbook.name == "tickets.result.xlsx"
    [empty] = [r for r in result.rows() if r["status"] == "invalid"]
    assert "user_identify" in empty["error"]
    checked = importer.validate(damaged)
    assert checked.counts == {"invalid": 3} and checked.exit_code == 1
    for row in checked.rows():
        assert "case_id" in row["error"] and "15" in row["error"]  # each row says so


def test_rows_as_dicts_and_no_workbook(here, simulator):
    sim = simulator()
    result = importer.run([ticket(0), ticket(1)], **credentials(sim), **FAST, out=False)
    assert result.workbook is None and result.counts == {"success": 2}
    assert [r["status"] for r in result.rows()] == ["success", "success"]
    assert not list(here.glob("reports/*.xlsx"))  # (reports/ holds the journal)


def test_rows_of_a_result_without_workbook_read_after_the_result_is_dropped(here):
    import gc

    rows = importer.validate([ticket(0), ticket(1)], out=False).rows()  # the Result is gone
    gc.collect()
    assert [r["status"] for r in rows] == ["valid", "valid"]


def test_the_cli_and_the_api_write_the_same_workbook(here, simulator):
    from helpers import read_sheet

    sim = simulator(bad_tenants=frozenset({999}))
    write_csv(here / "t.csv", [ticket(0), ticket(1, tenant=999), ticket(2), ticket(0)])
    done = cli(["run", "t.csv", "--qps", "1000", "--canary", "0"], here, sim.env())
    result = importer.run("t.csv", **credentials(sim), **FAST, journal="api.sqlite", out="a.xlsx")
    assert done.returncode == result.exit_code == 1

    def comparable(path):
        rows = read_sheet(path)
        return [{k: v for k, v in row.items() if k not in VARYING} for row in rows]

    by_cli = comparable(here / "reports" / "t.result.xlsx")
    assert by_cli == comparable(result.workbook)
    assert [r["status"] for r in by_cli] == ["success", "failed", "success", "duplicate"]


def test_an_aborted_run_raises_aborted_error_with_the_digest_and_its_result(here, simulator):
    sim = simulator(bad_tenants=frozenset({999}))
    write_csv(here / "t.csv", [ticket(i, tenant=999) for i in range(30)])
    with pytest.raises(AbortedError) as raised:
        importer.run("t.csv", **credentials(sim), qps=1000)  # the canary judges the first 20
    assert "Canary: 20 of 20 rows failed" in str(raised.value)
    assert "isv.invalid-parameter ×20 (e.g. row 2)" in str(raised.value)
    result = raised.value.result
    assert result.exit_code == 3 and result.counts == {"failed": 20, "not_sent": 10}
    assert result.workbook.exists()


def test_errors_are_the_importer_error_tree_never_system_exit(here):
    with pytest.raises(InputError, match=r"nope\.csv"):
        importer.validate("nope.csv")
    with pytest.raises(UsageError, match="Unknown option qsp"):
        importer.validate("nope.csv", qsp=5)
    with pytest.raises(UsageError, match="Missing app key"):
        write_csv(here / "t.csv", [ticket(0)])
        importer.run("t.csv")
    with pytest.raises(UsageError, match="iterable of dicts"):
        importer.run(42, simulate=True)


def test_a_secret_given_as_an_argument_is_never_written(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", [ticket(0)])
    result = importer.run(
        "t.csv", **credentials(sim), **FAST, session="sess-never-written", summary_json="s.json"
    )
    everything = json.dumps(list(result.rows()), default=str)
    everything += (here / "s.json").read_text() if (here / "s.json").exists() else ""
    everything += repr(result) + repr(result.summary)
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(result.workbook))
    for name in book.sheet_names:
        everything += json.dumps(book.get_sheet_by_name(name).to_python(), default=str)
    for secret in (sim.settings.secret, "sess-never-written"):
        assert secret not in everything


def test_two_calls_leave_no_handler_or_global_state_behind(here, simulator):
    sim = simulator()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for i in range(2):
        result = importer.run([ticket(i)], **credentials(sim), **FAST, out=False)
        assert result.counts == {"success": 1}
    after = {s: signal.getsignal(s) for s in before}
    assert after == before


async def test_run_async_runs_inside_the_callers_event_loop(here, simulator):
    sim = simulator()
    loop = asyncio.get_running_loop()
    result = await importer.run_async([ticket(0), ticket(1)], **credentials(sim), **FAST)
    assert result.counts == {"success": 2}
    assert asyncio.get_running_loop() is loop
    with pytest.raises(UsageError, match=r"await importer\.run_async"):  # run(): no loop
        importer.run([ticket(2)], **credentials(sim), **FAST)


def test_rows_of_a_csv_result_are_the_cells_as_sent(here, simulator):
    sim = simulator()
    row = {**ticket(0), "corp_id": "=1+1"}  # written to the CSV with a protective '
    result = importer.run([row], **credentials(sim), **FAST, out="r.csv")
    [read] = result.rows()
    assert read["corp_id"] == "=1+1" and read["case_id"] == "396743391396743391"  # text
    assert (read["source_row"], read["attempts"], read["status"]) == (2, 1, "success")


def test_more_rows_than_a_workbook_sheet_holds_are_refused_not_dropped(
    here, simulator, monkeypatch
):
    import importer.inputs as inputs

    sim = simulator()
    monkeypatch.setattr(inputs, "EXCEL_MAX_DATA_ROWS", 3)  # the real limit is 1,048,575 rows
    with pytest.raises(UsageError, match="more than 3 rows, the most a workbook sheet holds"):
        importer.run([ticket(i) for i in range(4)], **credentials(sim), **FAST)
    assert sim.stats()["calls"] == 0


def test_a_cell_longer_than_a_workbook_cell_is_refused_not_cut(here, simulator):
    sim = simulator()
    rows = [ticket(0), {**ticket(1), "user_identify": "U" * 40_000}]
    with pytest.raises(UsageError, match=r"row 3, column 'user_identify', holds more than 32,767"):
        importer.run(pd.DataFrame(rows), **credentials(sim), **FAST)
    assert sim.stats()["calls"] == 0


def test_text_that_reads_nan_stays_text(here):
    rows = [{**ticket(0), "user_identify": "nan"}, {**ticket(1), "user_identify": float("nan")}]
    checked = importer.validate(rows)
    assert [r["status"] for r in checked.rows()] == ["valid", "invalid"]


def test_the_api_writes_the_summary_json_and_notifies_as_the_cli_does(here, simulator):
    from helpers import serving
    from test_notify import _Robot

    sim = simulator()
    _Robot.received = []
    with serving(_Robot, "/hook") as url:
        importer.run(
            [ticket(0)],
            **credentials(sim),
            **FAST,
            summary_json="s.json",
            notify=[url],
            notify_format="json",
        )
    assert json.loads((here / "s.json").read_text())["files"][0]["counts"] == {"success": 1}
    [(_, body)] = _Robot.received
    assert body["exit_code"] == 0


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"app_secret": 12345}, "app_secret must be text"),
        ({"columns": 5}, "columns = 5 is not a valid"),
        ({"archive": "done"}, "archive is the CLI's inbox"),
    ],
)
def test_bad_options_are_importer_errors(here, options, said):
    with pytest.raises(importer.ImporterError, match=said):
        importer.run([ticket(0)], simulate=True, **options)


async def test_validate_inside_a_running_loop_says_what_to_do(here):
    with pytest.raises(UsageError, match=r"await importer\.validate_async"):
        importer.validate([ticket(0)])
    checked = await importer.validate_async([ticket(0), {**ticket(1), "tenant_id": "x"}])
    assert checked.counts == {"valid": 1, "invalid": 1} and checked.exit_code == 1


def test_inf_in_any_float_column_is_a_value_not_a_crash(here):
    frame = pd.DataFrame([ticket(0), ticket(1)])
    frame["score"] = [float("inf"), 1.5]  # not sent: an echoed column
    frame["tenant_id"] = [200110004.0, float("-inf")]
    checked = importer.validate(frame)
    rows = list(checked.rows())
    assert [r["status"] for r in rows] == ["valid", "invalid"]
    assert rows[0]["score"] == "inf" and "tenant_id '-inf'" in rows[1]["error"]


def test_a_timezone_aware_datetime_is_written_as_gmt8_wall_time(here):
    """The platform's times are GMT+8: 00:30 UTC is 08:30 there, never 00:30 with the zone
    dropped (a Date field would be sent 8 h off); a naive one is taken as it is."""
    from importer.inputs import as_input_file
    from importer.loader import open_input
    from importer.spec import load_spec

    frame = pd.DataFrame([ticket(0), ticket(1)])
    frame["visited_at"] = [
        pd.Timestamp("2026-11-30 00:30:00", tz="UTC"),
        pd.Timestamp("2026-11-30 00:30:00", tz="Europe/Berlin"),
    ]
    frame["naive"] = [pd.Timestamp("2026-11-30 00:30:00")] * 2
    path = as_input_file(frame, "frame", here)
    table = open_input(path, load_spec(None))
    rows = list(table.rows())
    at, naive = table.headers.index("visited_at"), table.headers.index("naive")
    assert [r.cells[at] for r in rows] == ["2026-11-30 08:30:00", "2026-11-30 07:30:00"]
    assert rows[0].cells[naive] == "2026-11-30 00:30:00"


def test_handle_signals_outside_the_main_thread_is_an_error_not_ignored(here):
    import concurrent.futures

    frame = pd.DataFrame([ticket(0)])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(importer.run, frame, simulate=True, handle_signals=True)
        with pytest.raises(UsageError, match="only in the main thread"):
            future.result(60)


def test_to_pandas_keeps_the_dataframes_index_and_gives_proper_dtypes(here, simulator):
    sim = simulator()
    rows = [ticket(i) for i in range(3)]
    rows[1]["user_identify"] = ""  # invalid: its call columns are missing values
    frame = pd.DataFrame(rows, index=pd.Index(["a", "b", "c"], name="key"))
    result = importer.run(frame, **credentials(sim), **FAST)
    back = result.to_pandas()
    assert list(back.index) == ["a", "b", "c"] and back.index.name == "key"
    assert list(back["source_row"]) == [2, 3, 4]  # the position + 2, as if a header were row 1
    assert str(back["source_row"].dtype) == "Int64" and str(back["attempts"].dtype) == "Int64"
    assert str(back["tenant_id"].dtype) == "Int64"  # a Number field
    assert back["case_id"].dtype == "string" and back.loc["a", "case_id"] == "396743391396743391"
    assert back["code"].dtype == "string"
    assert back.loc["b", "request_id"] is pd.NA and back.loc["b", "attempts"] == 0


def test_a_dataframe_goes_by_its_input_name_in_messages_the_summary_and_the_journal(
    here, simulator
):
    import sqlite3

    sim = simulator()
    frame = pd.DataFrame([ticket(0)])
    result = importer.run(frame, input_name="tickets", **credentials(sim), **FAST)
    assert str(result.summary.input) == "tickets"
    journal = sqlite3.connect(here / "reports" / "journal.sqlite")
    assert [p for (p,) in journal.execute("SELECT input_path FROM runs")] == ["tickets"]
    import openpyxl

    sheet = openpyxl.load_workbook(result.workbook, read_only=True)["summary"]
    items = {row[0]: row[1] for row in sheet.iter_rows(values_only=True) if row and row[0]}
    assert items["input"] == "tickets"
    no_case = pd.DataFrame([{k: v for k, v in ticket(0).items() if k != "case_id"}])
    with pytest.raises(InputError) as caught:
        importer.validate(no_case, input_name="tickets")
    assert str(caught.value).startswith("tickets (sheet 'rows') has no column")
    assert "top-import" not in str(caught.value).split(":")[0]  # no temporary path


class _Cell:
    """A worksheet that records the one cell written, as (kind, value)."""

    written: tuple[str, object] | None = None

    def write_boolean(self, row, col, value):
        self.written = ("boolean", value)
        return 0

    def write_number(self, row, col, value):
        self.written = ("number", value)
        return 0

    def write_string(self, row, col, value):
        self.written = ("string", value)
        return 0


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, None),
        (pd.NA, None),
        (pd.NaT, None),
        (float("nan"), None),
        (np.nan, None),
        (np.float32("nan"), None),
        (1.5, ("number", 1.5)),
        (np.float32(1.5), ("number", 1.5)),
        (np.float64(2.5), ("number", 2.5)),
        (np.float16(0.5), ("number", 0.5)),
        (np.longdouble(1.5), ("number", 1.5)),  # (text "1.5" while matched by "float*" names)
        (float("inf"), ("string", "inf")),
        (np.float64("-inf"), ("string", "-inf")),
        (12, ("string", "12")),
        (np.int64(2**62 + 1), ("string", "4611686018427387905")),  # exact, never a float
        (np.uint8(7), ("string", "7")),
        (np.int32(-3), ("string", "-3")),
        (True, ("boolean", True)),
        (np.True_, ("string", "True")),
        (pd.Timestamp("2026-11-30 00:30:00", tz="UTC"), ("string", "2026-11-30 08:30:00")),
        (pd.Timestamp("2026-11-30 00:30:00"), ("string", "2026-11-30 00:30:00")),
        (datetime.date(2026, 1, 2), ("string", "2026-01-02")),
        (np.timedelta64(5, "D"), ("string", "5 days")),  # a numpy integer, but not a number
        (pd.Timedelta("1D"), ("string", "1 days 00:00:00")),
        (np.datetime64("NaT"), ("string", "NaT")),
        (decimal.Decimal("1.10"), ("string", "1.10")),
        ("nan", ("string", "nan")),
    ],
    ids=repr,
)
def test_each_python_pandas_and_numpy_value_is_the_cell_a_spreadsheet_would_hold(value, cell):
    from importer.inputs import _write_value

    sheet = _Cell()
    _write_value(sheet, 1, 0, value)
    assert sheet.written == cell


def test_rows_of_dicts_are_written_without_importing_pandas_or_numpy(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, pathlib\n"
        "from importer.inputs import as_input_file\n"
        "rows = [{'a': 1, 'b': None, 'c': 1.5, 'd': 'x'}]\n"
        f"as_input_file(rows, None, pathlib.Path({str(tmp_path)!r}))\n"
        "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
