"""`top-import run` end to end: the real CLI in a subprocess against the real simulator."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import (
    SECRET,
    SESSION,
    clean_env,
    cli,
    read_sheet,
    statuses,
    ticket,
    wait_for,
    write_csv,
)


def test_simulate_runs_the_main_job_with_no_credentials(tmp_path):
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(30)])
    done = cli(["run", "t.csv", "--simulate", "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    workbook = tmp_path / "reports" / "t.result.xlsx"
    assert statuses(workbook) == {"success": 30}
    assert "30 success" in done.stdout
    assert str(workbook.relative_to(tmp_path)) in done.stdout


def test_simulate_keeps_its_successes_out_of_the_real_journal(tmp_path):
    """A newcomer runs the Quick start twice and sees the demo twice; simulated successes
    never make a real run skip a row. With --journal the simulated run keeps one."""
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    for _ in range(2):
        done = cli(["run", "t.csv", "--simulate", "--no-progress"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0].endswith(
            "a journal of its own, removed at the end (--journal PATH keeps one)"
        )
        assert "5 rows: 5 success" in done.stdout
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["t.result.xlsx"]
    args = ["run", "t.csv", "--simulate", "--no-progress", "--journal", "simulated.sqlite"]
    assert "journal simulated.sqlite" in cli(args, tmp_path).stderr.splitlines()[0]  # kept
    assert "5 rows: 5 skipped" in cli(args, tmp_path).stdout


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
def test_every_sign_method_is_accepted_by_the_gateway(tmp_path, simulator, sign_method):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    done = cli(["run", "t.csv", "--sign-method", sign_method], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert sim.stats()["accepted"] == 5


def test_results_keep_input_order_and_request_ids(tmp_path, simulator):
    sim = simulator(jitter_ms=20, seed=3)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(40)])
    done = cli(["run", "t.csv", "--concurrency", "16", "--qps", "1000"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert [r["source_row"] for r in rows] == list(range(2, 42))
    assert [r["case_id"] for r in rows] == [ticket(i)["case_id"] for i in range(40)]
    assert all(r["request_id"] and r["attempts"] == 1 for r in rows)


def test_transient_faults_are_retried_to_success_without_double_accepts(tmp_path, simulator):
    sim = simulator(isp_rate=0.1, http502_rate=0.1, seed=7)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(80)])
    done = cli(
        ["run", "t.csv", "--qps", "500", "--retries", "8", "--concurrency", "8"],
        tmp_path,
        sim.env(),
    )
    assert done.returncode == 0, done.stderr
    stats = sim.stats()
    assert stats["accepted"] == 80
    assert stats["duplicate_accepts"] == 0
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert sum(int(r["attempts"]) for r in rows) == stats["calls"]
    assert any(int(r["attempts"]) > 1 for r in rows)


def test_business_failures_are_reported_once_and_not_retried(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i, tenant=999 if i % 4 == 0 else 200110004) for i in range(20)]
    write_csv(tmp_path / "t.csv", rows)
    done = cli(["run", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 1
    result = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    failed = [r for r in result if r["status"] == "failed"]
    assert len(failed) == 5
    assert {r["sub_code"] for r in failed} == {"isv.invalid-parameter"}
    assert all(r["attempts"] == 1 for r in failed)
    assert sim.stats()["calls"] == 20
    assert [
        r["source_row"] for r in read_sheet(tmp_path / "reports" / "t.result.xlsx", "failed")
    ] == [r["source_row"] for r in failed]


def test_wrong_secret_stops_the_run_with_exit_3_and_the_rest_not_sent(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(200)])
    done = cli(["run", "t.csv", "--concurrency", "4"], tmp_path, sim.env(TOP_APP_SECRET="wrong"))
    assert done.returncode == 3
    assert "25" in done.stderr and "secret" in done.stderr.lower()
    assert sim.stats()["calls"] <= 5
    counts = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert counts["not_sent"] >= 195
    assert set(counts) <= {"failed", "not_sent"}


def test_a_thirty_day_ban_stops_the_run(tmp_path, simulator):
    sim = simulator(throttle_all=True, ban_seconds=30 * 24 * 3600)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(50)])
    done = cli(["run", "t.csv", "--concurrency", "2"], tmp_path, sim.env())
    assert done.returncode == 3
    assert "2592000" in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx")["not_sent"] >= 47


def test_missing_credentials_are_a_usage_error_before_any_file_is_read(tmp_path):
    done = cli(["run", "does-not-exist.csv"], tmp_path, clean_env(TOP_APP_KEY="k"))
    assert done.returncode == 2
    assert "TOP_APP_SECRET" in done.stderr
    assert "Traceback" not in done.stderr
    assert "does-not-exist" not in done.stderr


def test_an_unreadable_input_is_one_sentence_and_exit_2(tmp_path):
    done = cli(["run", "nope.xlsx", "--simulate"], tmp_path)
    assert done.returncode == 2
    assert "nope.xlsx" in done.stderr
    assert "Traceback" not in done.stderr


def test_dry_run_signs_every_row_and_sends_nothing(tmp_path):
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(10)] + [ticket(3)])
    env = clean_env(
        TOP_APP_KEY="k", TOP_APP_SECRET=SECRET, TOP_GATEWAY="http://127.0.0.1:9/router/rest"
    )
    done = cli(["run", "t.csv", "--dry-run"], tmp_path, env)
    assert done.returncode == 1  # the duplicate row
    assert statuses(tmp_path / "reports" / "t.dry-run.xlsx") == {"valid": 10, "duplicate": 1}


@pytest.mark.journals
def test_a_rerun_skips_what_succeeded(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(12)])
    assert cli(["run", "t.csv"], tmp_path, sim.env()).returncode == 0
    again = cli(["run", "t.csv"], tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert {r["status"] for r in rows} == {"skipped"}
    assert all(r["request_id"] for r in rows)
    assert sim.stats()["calls"] == 12


@pytest.mark.journals
def test_no_secret_in_any_output(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({7}))
    rows = [ticket(i, tenant=7 if i == 3 else 200110004) for i in range(8)]
    write_csv(tmp_path / "t.csv", rows)
    env = sim.env(TOP_SESSION=SESSION)
    done = cli(["run", "t.csv", "--summary-json", "s.json", "--progress"], tmp_path, env)
    assert done.returncode == 1, done.stderr
    wrong = cli(["run", "t.csv", "--no-resume"], tmp_path, sim.env(TOP_APP_SECRET=SECRET + "x"))
    assert wrong.returncode == 3
    texts = [done.stdout, done.stderr, wrong.stdout, wrong.stderr]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as z:
                texts += [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
        elif path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for text in texts:
        assert SECRET not in text
        assert SESSION not in text
    assert json.loads((tmp_path / "s.json").read_text())["exit_code"] == 1


def test_sigint_writes_the_workbook_and_exits_130(tmp_path, simulator):
    sim = simulator(latency_ms=50)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(400)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer", "run", "t.csv", "--qps", "20", "--no-progress"],
        cwd=tmp_path,
        env=sim.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    counts = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert counts["success"] == sim.stats()["accepted"]
    assert counts["not_sent"] >= 300
    assert "Traceback" not in err


def test_run_help_shows_the_production_policies(tmp_path):
    done = cli(["run", "--help"], tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for words in [
        "--qps N|auto",
        "auto: start low and find the app's limit from the answers (up to --qps-max)",
        "--qps-max FLOAT",
        "--canary N Send the first N rows at 2 in flight",
        "--max-failure-rate R",
        "Throttles and transient errors do not count",
        "--daily-quota N",
        "since 00:00 GMT+8",
        "--yes",
        "--archive DIR Move each input whose run ended with exit 0 into DIR",
    ]:
        assert words in text, words


def test_a_workbook_with_excel_rounded_ids_sends_the_good_rows_and_reports_the_rest(
    tmp_path, simulator
):
    from openpyxl import Workbook

    sim = simulator()
    book = Workbook()
    sheet = book.active
    sheet.append(list(ticket(0)))
    for i in range(6):
        row = list(ticket(i).values())
        if i in (2, 4):
            row[2] = 396743391396743391 + i  # a number cell: Excel keeps 15 digits
        sheet.append(row)
    book.save(tmp_path / "t.xlsx")
    done = cli(["run", "t.xlsx"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    expected = ["success", "success", "invalid", "success", "invalid", "success"]
    assert [r["status"] for r in rows] == expected
    assert "format the column as Text" in rows[2]["error"]
    assert sim.stats()["accepted"] == 4


@pytest.mark.journals
def test_the_summary_sheet_of_a_run_shows_what_failed_and_when(tmp_path, simulator):
    from openpyxl import load_workbook

    sim = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i) for i in range(6)] + [ticket(6, tenant=999), ticket(7, tenant=999)]
    write_csv(tmp_path / "t.csv", rows)
    args = ["run", "t.csv", "--qps", "1000", "--canary", "0", "--no-progress"]
    done = cli(args, tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    sheet = load_workbook(tmp_path / "reports" / "t.result.xlsx")["summary"]
    cells = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
    assert cells[0][0].startswith("t.csv: 8 rows, 6 success (75.0%)")
    assert cells[1] == ["exit 1: some rows failed, are invalid, duplicate, unknown or not sent"]
    [code_row] = [row for row in cells if row and row[0] == "isv.invalid-parameter"]
    assert code_row[1:4] == [2, "非法参数", 8]  # rows, the platform's message, the first row
    assert "fix the value" in code_row[4]
    minutes = [row for row in cells if len(row) == 2 and isinstance(row[1], int)]
    assert sum(n for minute, n in minutes if ":" in str(minute)) == 8  # every call, by minute
    assert len(sheet._charts) == 3


def test_a_killed_simulate_runs_temporary_journal_is_removed_by_the_next(tmp_path):
    import os
    import subprocess
    import tempfile

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    scratch = Path(tempfile.gettempdir())
    stale = scratch / f"top-import-simulated-{gone.pid}-x1"
    live = scratch / f"top-import-simulated-{os.getpid()}-x2"  # this test's: alive
    for folder in (stale, live):
        folder.mkdir(exist_ok=True)
        (folder / "simulated.sqlite").write_bytes(b"left by a killed run")
    try:
        write_csv(tmp_path / "t.csv", [ticket(0)])
        done = cli(["run", "t.csv", "--simulate", "--no-progress"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert not stale.exists() and live.exists()
    finally:
        for folder in (stale, live):
            shutil.rmtree(folder, ignore_errors=True)


def test_a_cell_cut_at_the_workbook_limit_is_never_sent(tmp_path, simulator):
    """A result workbook cuts text at 32,767 characters: fed back, such a row is invalid and
    the gateway sees nothing of it (the promise: never a silently changed value)."""
    from openpyxl import Workbook

    sim = simulator()
    book = Workbook()
    cut = {**ticket(1), "user_identify": "U" * 32_767}
    book.active.append(list(ticket(0)))
    book.active.append(list(ticket(0).values()))
    book.active.append(list(cut.values()))
    book.save(tmp_path / "t.xlsx")
    done = cli(
        ["run", "t.xlsx", "--qps", "1000", "--canary", "0", "--no-progress"], tmp_path, sim.env()
    )
    assert done.returncode == 1, done.stderr
    assert [r["status"] for r in read_sheet(tmp_path / "reports" / "t.result.xlsx")] == [
        "success",
        "invalid",
    ]
    assert sim.stats()["calls"] == 1  # only the whole row reached the gateway
