"""Production run policies end to end: the real CLI in subprocesses against the real simulator.

Canary and failure-rate breaker (bad tenants), --qps auto (the simulator's quota), the pre-flight
line and the daily quota (a journal with earlier calls), and the cron inbox with --archive.
"""

from __future__ import annotations

import json

import pytest
from helpers import cli, read_sheet, run_at_once, statuses, ticket, write_csv

BAD = 999  # a tenant the simulator answers with isv.invalid-parameter
GOOD = 200110004


def rows_with_bad(n: int, bad: set[int]) -> list[dict[str, str]]:
    return [ticket(i, tenant=BAD if i in bad else GOOD) for i in range(n)]


def stderr_lines(done) -> list[str]:
    return done.stderr.splitlines()


# -- canary ------------------------------------------------------------------------------------


def test_the_canary_stops_before_the_bulk_when_too_many_of_its_rows_fail(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    write_csv(tmp_path / "t.csv", rows_with_bad(60, {0, 3, 6, 9, 12, 15}))  # 6 of the first 20
    done = cli(["run", "t.csv", "--qps", "200", "--summary-json", "s.json"], tmp_path, sim.env())
    assert done.returncode == 3, done.stderr
    assert (
        "top-import: Canary: 6 of 20 rows failed with business errors (more than "
        "--max-failure-rate 0.2): isv.invalid-parameter ×6 (e.g. row 2); check the data, then "
        "rerun (the journal resumes)"
    ) in stderr_lines(done)
    assert sim.stats()["calls"] == 20
    workbook = tmp_path / "reports" / "t.result.xlsx"
    assert statuses(workbook) == {"failed": 6, "success": 14, "not_sent": 40}
    rows = read_sheet(workbook)
    assert [r["source_row"] for r in rows if r["status"] == "failed"] == [2, 5, 8, 11, 14, 17]
    assert {r["status"] for r in rows[20:]} == {"not_sent"}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["exit_code"] == 3
    assert summary["files"][0]["stop_reason"] == "canary"


def test_a_canary_failing_exactly_at_the_limit_lets_the_run_go_on(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    write_csv(tmp_path / "t.csv", rows_with_bad(60, {1, 5, 9, 13}))  # 4 of 20 = 0.2, not more
    done = cli(["run", "t.csv", "--qps", "200"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert "Canary" not in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"failed": 4, "success": 56}
    assert sim.stats()["calls"] == 60


def test_canary_0_and_a_higher_max_failure_rate_send_every_row(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    write_csv(tmp_path / "t.csv", rows_with_bad(60, {0, 3, 6, 9, 12, 15}))
    off = cli(["run", "t.csv", "--canary", "0", "--qps", "200"], tmp_path, sim.env())
    assert off.returncode == 1, off.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"failed": 6, "success": 54}
    lenient = cli(
        ["run", "t.csv", "--max-failure-rate", "0.5", "--qps", "200"], tmp_path, sim.env()
    )
    assert lenient.returncode == 1, lenient.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"failed": 6, "skipped": 54}
    assert sim.stats()["calls"] == 66  # the failed rows were tried again, the rest skipped


def test_a_file_smaller_than_the_canary_is_simply_sent(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    write_csv(tmp_path / "t.csv", rows_with_bad(10, {0, 1, 2, 3, 4}))  # half bad, nothing left
    done = cli(["run", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert "Canary" not in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"failed": 5, "success": 5}


# -- failure-rate breaker ----------------------------------------------------------------------


def test_the_breaker_stops_a_run_whose_rows_turn_bad(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    write_csv(tmp_path / "t.csv", rows_with_bad(400, set(range(100, 400))))
    done = cli(["run", "t.csv", "--concurrency", "1", "--qps", "1000"], tmp_path, sim.env())
    assert done.returncode == 3, done.stderr
    assert (
        "top-import: Failure rate: 100 of the last 200 answers were business errors (more than "
        "--max-failure-rate 0.2); so far isv.invalid-parameter ×100 (e.g. row 102); check the "
        "data, then rerun (the journal resumes)"
    ) in stderr_lines(done)
    assert sim.stats()["calls"] == 200
    counts = statuses(tmp_path / "reports" / "t.result.xlsx")
    assert counts == {"success": 100, "failed": 100, "not_sent": 200}


def test_transient_failures_do_not_trip_the_breaker(tmp_path, simulator):
    sim = simulator(isp_rate=0.6, seed=5)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(260)])
    done = cli(["run", "t.csv", "--retries", "0", "--qps", "2000"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert "Failure rate" not in done.stderr and "Canary" not in done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) > 100  # far above 0.2, but none of them a business error
    assert {r["sub_code"] for r in failed} == {"isp.service-unavailable"}
    assert "not_sent" not in statuses(tmp_path / "reports" / "t.result.xlsx")
    assert sim.stats()["calls"] == 260


# -- --qps auto --------------------------------------------------------------------------------


def test_qps_auto_finds_the_limit_without_losing_or_repeating_a_row(tmp_path, simulator):
    sim = simulator(qps=10)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(30)])
    done = cli(["run", "t.csv", "--qps", "auto", "--canary", "0"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert (
        "top-import: t.csv: 30 rows to send; --qps auto: from 5 calls/s up to the rate the "
        "platform allows (at most 1,000)"
    ) in stderr_lines(done)
    assert "top-import: t.csv: --qps auto ended at " in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 30}
    stats = sim.stats()
    assert stats["accepted"] == stats["accepted_payloads"] == 30
    assert stats["rejected"].get("7", 0) <= 3  # it met the limit at most a few times


def test_qps_auto_never_goes_above_qps_max(tmp_path, simulator):
    sim = simulator()  # no quota: only --qps-max holds it back
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(20)])
    args = ["run", "t.csv", "--qps", "auto", "--qps-max", "8", "--canary", "0"]
    done = cli(args, tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert "(at most 8)" in done.stderr
    assert sim.stats()["max_calls_in_a_second"] <= 8


# -- pre-flight and the daily quota ------------------------------------------------------------


def test_the_pre_flight_line_counts_what_will_be_sent(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "first.csv", [ticket(0), ticket(1)])
    assert cli(["run", "first.csv"], tmp_path, sim.env()).returncode == 0
    rows = [ticket(i) for i in range(8)] + [ticket(3), dict(ticket(9), tenant_id="abc")]
    write_csv(tmp_path / "t.csv", rows)
    done = cli(["run", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr  # the duplicate and the invalid row
    assert (
        "top-import: t.csv: 6 rows to send (2 already sent, 1 duplicate, 1 invalid); "
        "about 1s at 9.5 calls/s"
    ) in stderr_lines(done)
    assert sim.stats()["calls"] == 8


def test_a_run_that_does_not_fit_the_daily_quota_needs_yes(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "earlier.csv", [ticket(i) for i in range(8)])
    assert cli(["run", "earlier.csv"], tmp_path, sim.env()).returncode == 0
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(100, 105)])

    refused = cli(["run", "t.csv", "--daily-quota", "10"], tmp_path, sim.env())
    assert refused.returncode == 2, refused.stderr
    assert stderr_lines(refused)[-2:] == [
        "top-import: t.csv: 5 rows to send; about 1s at 9.5 calls/s; daily quota 10: 8 calls "
        "used today (GMT+8), 2 left",
        "top-import: t.csv: sending 5 rows takes at least 5 calls, but only 2 of the daily "
        "quota of 10 are left (8 used today); rerun with --yes, or after 00:00 GMT+8",
    ]
    assert sim.stats()["calls"] == 8
    assert not (tmp_path / "reports" / "t.result.xlsx").exists()

    fits = cli(["run", "t.csv", "--daily-quota", "13", "--dry-run"], tmp_path, sim.env())
    assert fits.returncode == 0  # (a dry run makes no calls and checks no quota)
    forced = cli(["run", "t.csv", "--daily-quota", "10", "--yes"], tmp_path, sim.env())
    assert forced.returncode == 0, forced.stderr
    assert "top-import: t.csv: does not fit the daily quota; sending anyway (--yes)" in (
        stderr_lines(forced)
    )
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 5}

    write_csv(tmp_path / "more.csv", [ticket(i) for i in range(200, 202)])
    enough = cli(["run", "more.csv", "--daily-quota", "15"], tmp_path, sim.env())
    assert enough.returncode == 0, enough.stderr
    assert "daily quota 15: 13 calls used today (GMT+8), 2 left" in enough.stderr


@pytest.mark.journals
def test_runs_started_together_never_take_the_same_daily_quota(tmp_path, simulator):
    """Three runs of 40 rows with a daily quota of 100, started at once on one journal: two
    fit, the third does not (exit 2, nothing sent), whatever order their pre-flights meet."""
    sim = simulator()
    for r in range(3):
        write_csv(tmp_path / f"in{r}.csv", [ticket(r * 1000 + i) for i in range(40)])
    args = ["--daily-quota", "100", "--qps", "50"]
    ended = run_at_once([["run", f"in{r}.csv", *args] for r in range(3)], tmp_path, sim.env())
    assert sorted(code for code, _ in ended) == [0, 0, 2], ended
    assert sim.stats()["calls"] == 80
    assert max(sim.accepted().values()) == 1
    (refused,) = [error for code, error in ended if code == 2]
    assert "takes at least 40 calls, but only 20 of the daily quota of 100 are left" in refused


def test_the_pre_flight_counts_what_a_run_sending_now_still_plans(tmp_path, simulator):
    import re
    import sqlite3

    from helpers import start_cli, wait_for

    sim = simulator(latency_ms=2000)  # the first run is still sending when the second starts
    write_csv(tmp_path / "slow.csv", [ticket(i) for i in range(10)])
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(100, 110)])
    slow = start_cli(["run", "slow.csv", "--concurrency", "1"], tmp_path, sim.env())
    journal = tmp_path / "reports" / "journal.sqlite"

    def reserved() -> bool:
        if not journal.exists():
            return False
        with sqlite3.connect(journal) as db:
            try:
                return bool(db.execute("SELECT count(*) FROM reservations").fetchone()[0])
            except sqlite3.OperationalError:  # the first run is still creating the tables
                return False

    try:
        wait_for(reserved)
        done = cli(["run", "t.csv", "--daily-quota", "15", "--qps", "4"], tmp_path, sim.env())
    finally:
        slow.terminate()
        slow.wait(60)
    assert done.returncode == 2, done.stderr
    line, problem = stderr_lines(done)[-2:]
    assert re.fullmatch(
        r"top-import: t\.csv: 10 rows to send; about 6s at 1\.75 calls/s \(its share: 1 other run "
        r"is sending for this app key\); daily quota 15: (\d+) calls? used today \(GMT\+8\), "
        r"(\d+) planned by 1 other run sending now, 5 left",
        line,
    ), line
    assert problem.endswith(
        "planned by the runs sending now); rerun with --yes, or after 00:00 GMT+8, or when they "
        "have finished"
    ), problem
    assert sim.stats()["calls"] <= 10  # the first run's calls alone
    assert not (tmp_path / "reports" / "t.result.xlsx").exists()


# -- cron inbox --------------------------------------------------------------------------------


def test_a_cron_inbox_archives_only_the_files_that_ended_with_exit_0(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD}))
    inbox, done_dir = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    done_dir.mkdir()
    write_csv(inbox / "b.csv", rows_with_bad(3, {1}))
    write_csv(inbox / "a.csv", [ticket(i) for i in range(10, 13)])
    (inbox / "notes.txt").write_text("not an input")
    (done_dir / "a.csv").write_text("yesterday's a.csv")
    original_a = (inbox / "a.csv").read_bytes()
    args = ["run", "inbox/*.csv", "--archive", "done", "--summary-json", "s.json"]

    first = cli(args, tmp_path, sim.env())
    assert first.returncode == 1, first.stderr  # the worst of 0 (a) and 1 (b)
    lines = first.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("inbox/a.csv: 3 rows: 3 success;")
    assert lines[0].endswith("; archived to done/a-1.csv")
    assert lines[1].startswith("inbox/b.csv: 3 rows: 1 failed, 2 success;")
    assert "archived" not in lines[1]
    assert (done_dir / "a-1.csv").read_bytes() == original_a
    assert (done_dir / "a.csv").read_text() == "yesterday's a.csv"  # never overwritten
    assert sorted(p.name for p in inbox.iterdir()) == ["b.csv", "notes.txt"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [f["archived"] for f in summary["files"]] == ["done/a-1.csv", None]

    write_csv(inbox / "b.csv", rows_with_bad(3, set()))  # fixed overnight
    second = cli(args, tmp_path, sim.env())
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[0].endswith("; archived to done/b.csv")
    assert sorted(p.name for p in inbox.iterdir()) == ["notes.txt"]

    empty = cli(args, tmp_path, sim.env())
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == "inbox/*.csv: no file matches; nothing to do\n"
    assert json.loads((tmp_path / "s.json").read_text()) == {"exit_code": 0, "files": []}

    missing = cli(["run", "inbox/*.csv", "tonight.csv"], tmp_path, sim.env())
    assert missing.returncode == 2  # a plain path that is not there is still an error
    assert "tonight.csv" in missing.stderr
