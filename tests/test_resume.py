"""Never lose a row, never repeat a success: kill -9, rerun, lock, signals, cron windows."""

from __future__ import annotations

import random
import signal
import subprocess
import sys

import pytest
from helpers import cli, read_sheet, statuses, ticket, wait_for, write_csv

from importer.simulator import SimulatorSettings


def start_run(tmp_path, env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "importer", "run", *args, "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        proc.kill()


@pytest.mark.parametrize(("seed", "lost_rate"), [(1, 0.0), (2, 0.1)])
def test_kill_9_then_rerun_finishes_without_repeating_successes(
    tmp_path, simulator, seed, lost_rate
):
    rng = random.Random(seed)
    concurrency = 4
    sim = simulator(latency_ms=10, jitter_ms=10, lost_response_rate=lost_rate, seed=seed)
    n = 150
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(n)])
    args = ["t.csv", "--qps", "400", "--concurrency", str(concurrency), "--retries", "10"]
    kills = 0
    for _ in range(2):
        threshold = sim.stats()["accepted"] + rng.randint(5, 40)
        proc = start_run(tmp_path, sim.env(), *args)
        try:
            wait_for(
                lambda t=threshold, p=proc: sim.stats()["accepted"] >= t or p.poll() is not None
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
        finally:
            proc.kill()
    # The plain rerun sends every row not yet tried, and none twice: rows in flight at a kill
    # and rows whose answer was lost are unknown, listed, and kept back.
    done = cli(["run", *args], tmp_path, sim.env())
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert len(rows) == n
    unknown = [r for r in rows if r["status"] == "unknown"]
    assert {r["status"] for r in rows} <= {"success", "skipped", "unknown"}
    assert done.returncode == (1 if unknown else 0), done.stderr
    stats = sim.stats()
    assert stats["duplicate_accepts"] == 0
    assert len(unknown) <= kills * concurrency + stats["lost_responses"]
    if unknown:
        assert f"{len(unknown)} row" in done.stderr and "--resend-unknown" in done.stderr
    # At-least-once, asked for: the unknown rows go again; only they may be accepted twice.
    done = cli(["run", *args, "--resend-unknown"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert {r["status"] for r in rows} <= {"success", "skipped"}
    stats = sim.stats()
    assert stats["accepted_payloads"] == n
    assert stats["duplicate_accepts"] <= len(unknown)


def test_rows_in_flight_at_a_crash_are_sent_again_and_say_so(tmp_path, simulator):
    from importer.journal import SQLiteJournal
    from importer.records import RowValidator
    from importer.spec import load_spec

    sim = simulator()
    path = write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    # A run that died with row 3 in flight: its journal mark, written as the real run would.
    spec = load_spec(None)
    from importer.loader import open_input

    table = open_input(path, spec)
    record = RowValidator(spec, table.columns).validate(list(table.rows())[1])
    (tmp_path / "reports").mkdir()
    run = SQLiteJournal(tmp_path / "reports" / "journal.sqlite").start_run(
        input_path="old", input_key="dead-run", app_key=sim.settings.app_key, method=spec.method
    )
    assert run.claim(record.row_key) is None
    run.finish()  # the run ended with the call still in flight (as after a kill)

    done = cli(["run", "t.csv", "--resend-unknown"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert rows[1]["status"] == "success"
    assert "an earlier call of this payload got no answer; sent again" in rows[1]["error"]
    assert not rows[0]["error"]


@pytest.mark.parametrize("flag", [[], ["--no-resend-unknown"]], ids=["default", "flag"])
def test_rows_in_flight_at_a_crash_stay_unknown_by_default(tmp_path, simulator, flag):
    from importer.journal import SQLiteJournal
    from importer.loader import open_input
    from importer.records import RowValidator
    from importer.spec import load_spec

    sim = simulator()
    path = write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    spec = load_spec(None)
    table = open_input(path, spec)
    record = RowValidator(spec, table.columns).validate(next(iter(table.rows())))
    (tmp_path / "reports").mkdir()
    dead = SQLiteJournal(tmp_path / "reports" / "journal.sqlite").start_run(
        input_path="old", input_key="dead", app_key=sim.settings.app_key, method=spec.method
    )
    dead.claim(record.row_key)
    dead.finish()
    done = cli(["run", "t.csv", *flag], tmp_path, sim.env())
    assert done.returncode == 1
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"unknown": 1, "success": 2}
    assert sim.stats()["calls"] == 2
    assert "1 row unknown" in done.stderr
    assert "decision column of the check sheet" in done.stderr
    assert "--sheet check (or rerun with --resend-unknown)" in done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert "rerun with --resend-unknown" in rows[0]["error"]


def test_a_second_run_of_the_same_input_is_refused_at_once(tmp_path, simulator):
    sim = simulator(latency_ms=50)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(300)])
    write_csv(tmp_path / "copy.csv", [ticket(i) for i in range(300)])
    first = start_run(tmp_path, sim.env(), "t.csv", "--qps", "20")
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 2)
        second = cli(["run", "copy.csv"], tmp_path, sim.env(), timeout=30)
        assert second.returncode == 2
        assert "journal.sqlite" in second.stderr
        assert "t.csv" in second.stderr
        assert str(first.pid) in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        finish(first)


@pytest.mark.journals
def test_two_inputs_share_one_journal_at_the_same_time(tmp_path, simulator):
    sim = simulator(latency_ms=5)
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(120)])
    write_csv(tmp_path / "b.csv", [ticket(i) for i in range(1000, 1120)])
    procs = [start_run(tmp_path, sim.env(), name, "--qps", "300") for name in ("a.csv", "b.csv")]
    for proc in procs:
        _, err = finish(proc)
        assert proc.returncode == 0, err
    assert statuses(tmp_path / "reports" / "a.result.xlsx") == {"success": 120}
    assert statuses(tmp_path / "reports" / "b.result.xlsx") == {"success": 120}
    again = cli(["run", "a.csv", "b.csv"], tmp_path, sim.env())
    assert again.returncode == 0
    assert statuses(tmp_path / "reports" / "b.result.xlsx") == {"skipped": 120}
    assert sim.stats()["accepted"] == 240


def test_sigterm_writes_the_workbook_and_exits_143(tmp_path, simulator):
    sim = simulator(latency_ms=20)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(300)])
    proc = start_run(tmp_path, sim.env(), "t.csv", "--qps", "20")
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 3)
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    counts = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert counts["success"] == sim.stats()["accepted"]
    assert counts["success"] + counts["not_sent"] == 300


def test_a_corrupt_journal_is_exit_2_and_untouched(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(1)])
    bad = tmp_path / "j.sqlite"
    bad.write_bytes(b"garbage" * 100)
    done = cli(["run", "t.csv", "--journal", "j.sqlite"], tmp_path, sim.env())
    assert done.returncode == 2
    assert "j.sqlite" in done.stderr and "Traceback" not in done.stderr
    assert bad.read_bytes() == b"garbage" * 100
    assert sim.stats()["calls"] == 0


def test_another_app_keys_journal_does_not_skip_rows(tmp_path, simulator):
    first = simulator(app_key="11111111")
    second = simulator(app_key="22222222")
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    assert cli(["run", "t.csv"], tmp_path, first.env()).returncode == 0
    done = cli(["run", "t.csv"], tmp_path, second.env())
    assert done.returncode == 0
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 5}
    assert second.stats()["accepted"] == 5


def test_max_runtime_stops_starting_calls_and_a_rerun_resumes(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(40)])
    done = cli(["run", "t.csv", "--qps", "10", "--max-runtime", "1s"], tmp_path, sim.env())
    assert done.returncode == 1
    assert "rerun" in done.stderr
    counts = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert 0 < counts["success"] < 40 and counts["not_sent"] == 40 - counts["success"]
    again = cli(["run", "t.csv", "--qps", "200"], tmp_path, sim.env())
    assert again.returncode == 0
    after = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert after == {"skipped": counts["success"], "success": 40 - counts["success"]}


def test_a_bad_deadline_is_a_usage_error(tmp_path):
    done = cli(["run", "t.csv", "--simulate", "--deadline", "25:99"], tmp_path)
    assert done.returncode == 2
    assert "HH:MM" in done.stderr


def test_the_failed_sheet_fixed_and_fed_back_sends_only_those_rows(tmp_path, simulator):
    from openpyxl import load_workbook

    sim = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i, tenant=999 if i in (2, 5) else 200110004) for i in range(10)]
    write_csv(tmp_path / "t.csv", rows)
    assert cli(["run", "t.csv"], tmp_path, sim.env()).returncode == 1
    workbook = tmp_path / "reports" / "t.result.xlsx"
    wb = load_workbook(workbook)
    sheet = wb["failed"]
    header = [c.value for c in sheet[1]]
    col = header.index("tenant_id") + 1
    for r in range(2, sheet.max_row + 1):
        sheet.cell(r, col).value = "200110004"
    wb.save(tmp_path / "fixed.xlsx")
    done = cli(["run", "fixed.xlsx", "--sheet", "failed"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / "reports" / "fixed.result.xlsx") == {"success": 2}
    assert sim.stats()["accepted"] == 10


def test_simulator_settings_defaults_have_no_quota():
    assert SimulatorSettings().qps is None
