"""`top-import report` right after `kill -9`: the truth of every row, from the journal alone."""

from __future__ import annotations

import signal

import pytest
from helpers import cli, killed_9_when, read_sheet, start_cli, ticket, wait_for, write_csv

# Answers that come long after the kill: the calls the gateway accepted are in flight then.
SLOW_MS = 4000
CONCURRENCY = 3


def killed_mid_send(tmp_path, sim, rows: list[dict[str, str]]) -> None:
    """Run ``t.csv`` and ``kill -9`` it once the gateway has accepted ``CONCURRENCY`` calls, all
    still waiting for their answers."""
    write_csv(tmp_path / "t.csv", rows)
    args = ["run", "t.csv", "--qps", "100", "--concurrency", str(CONCURRENCY), "--canary", "0"]
    status = killed_9_when(
        args, tmp_path, sim.env(), lambda: sim.stats()["accepted"] >= CONCURRENCY
    )
    assert status == -signal.SIGKILL


def test_report_at_once_after_kill_9_calls_in_flight_unknown_the_rest_not_sent(tmp_path, simulator):
    sim = simulator(latency_ms=SLOW_MS)
    rows = [ticket(i) for i in range(10)]
    rows[6]["tenant_id"] = "abc"  # invalid: the run may not have reached it; the report judges it
    killed_mid_send(tmp_path, sim, rows)

    done = cli(["report", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr  # as the run's would be: unknown rows
    report = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    by_status: dict[str, list[int]] = {}
    for row in report:
        by_status.setdefault(str(row["status"]), []).append(int(row["source_row"]))
    accepted = sim.stats()["accepted_payloads"]
    assert accepted == CONCURRENCY
    assert by_status.pop("unknown") == [2, 3, 4]  # the calls the gateway had taken
    assert by_status.pop("invalid") == [8]
    assert by_status.pop("not_sent") == [5, 6, 7, 9, 10, 11]  # never tried
    assert by_status == {}
    unknown = next(r for r in report if r["status"] == "unknown")
    assert "killed (or its machine stopped) with this call in flight" in str(unknown["error"])
    assert "--sheet check" in str(unknown["error"])
    not_sent = next(r for r in report if r["status"] == "not_sent")
    assert str(not_sent["error"]).startswith("not sent: the run was killed")
    check = read_sheet(tmp_path / "reports" / "t.result.xlsx", "check")
    assert [r["source_row"] for r in check] == [2, 3, 4]
    assert "3 unknown" in done.stdout and "6 not_sent" in done.stdout
    twice = cli(["report", "t.csv"], tmp_path, sim.env())  # kept until the next run of t.csv
    assert twice.returncode == 1 and twice.stdout == done.stdout

    # The rerun sends the rows never tried, and keeps the unknown ones back: none twice.
    again = cli(["run", "t.csv", "--qps", "100"], tmp_path, sim.env())
    assert again.returncode == 1, again.stderr
    stats = sim.stats()
    assert stats["accepted_payloads"] == CONCURRENCY + 6
    assert stats["duplicate_accepts"] == 0


@pytest.mark.journals
def test_report_while_the_run_is_alive_says_so_and_exits_2(tmp_path, simulator):
    sim = simulator(latency_ms=SLOW_MS)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    proc = start_cli(["run", "t.csv", "--concurrency", "1"], tmp_path, sim.env())
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 1 or proc.poll() is not None)
        done = cli(["report", "t.csv"], tmp_path, sim.env())
        assert done.returncode == 2
        assert "is being imported right now by process" in done.stderr
        assert "report it then" in done.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def test_report_after_a_run_that_ended_well_is_refused(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    assert cli(["run", "t.csv"], tmp_path, sim.env()).returncode == 0
    done = cli(["report", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 2
    assert "holds no results of a run of t.csv" in done.stderr


def test_a_check_sheet_run_killed_then_reported_and_applied_again_sends_nothing_twice(
    tmp_path, simulator
):
    import openpyxl

    lossy = simulator(lost_response_rate=1.0)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(6)])
    args = ["run", "t.csv", "--qps", "200", "--retries", "0", "--no-progress"]
    assert cli(args, tmp_path, lossy.env()).returncode == 1  # six unknown rows
    result = tmp_path / "reports" / "t.result.xlsx"
    book = openpyxl.load_workbook(result)
    check = book["check"]
    col = {c.value: i + 1 for i, c in enumerate(check[1])}
    for r in range(2, check.max_row + 1):
        check.cell(r, col["decision"]).value = "resend"
    book.save(result)

    slow = simulator(latency_ms=SLOW_MS)
    sheet = [str(result), "--sheet", "check", "--concurrency", "2", "--canary", "0"]
    killed_9_when(["run", *sheet], tmp_path, slow.env(), lambda: slow.stats()["accepted"] >= 2)
    assert slow.stats()["accepted_payloads"] == 2

    report = cli(["report", str(result), "--sheet", "check"], tmp_path, slow.env())
    assert report.returncode == 1, report.stderr
    rows = read_sheet(tmp_path / "reports" / "t-2.result.xlsx")
    assert sorted(str(r["status"]) for r in rows) == ["not_sent"] * 4 + ["unknown"] * 2

    fast = simulator()
    again = cli(["run", *sheet, "--no-progress"], tmp_path, fast.env())
    assert again.returncode == 1, again.stderr  # the two in flight at the kill stay unknown
    assert fast.stats()["accepted_payloads"] == 4
    assert not set(fast.accepted()) & set(slow.accepted())  # none sent twice
