"""The README is a contract: values never changed on the way, and sentences that hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, read_sheet, ticket

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def test_number_cells_in_the_2_53_band_pass_only_where_exact(tmp_path):
    from openpyxl import Workbook

    band = [9007199254740991, 9007199254740992, 9007199254740994, 9007199254740996]
    book = Workbook()
    sheet = book.active
    sheet.append(list(ticket(0)))
    for i, tenant in enumerate(band):
        row = list(ticket(i).values())
        row[3] = float(tenant)  # a number cell, as Excel stores it
        sheet.append(row)
    book.save(tmp_path / "t.xlsx")
    done = cli(["validate", "t.xlsx"], tmp_path)
    assert done.returncode == 1, done.stderr
    report = tmp_path / "reports" / "t.validate.xlsx"
    if not report.exists():
        report = tmp_path / "reports" / "t.result.xlsx"
    statuses = [r["status"] for r in read_sheet(report)]
    assert statuses == ["valid", "valid", "invalid", "invalid"]


def test_simulate_demands_a_session_where_the_platform_does(tmp_path):
    from helpers import clean_env

    spec = tmp_path / "s.toml"
    spec.write_text(
        'method = "example.thing.save"\nneeds_session = true\n'
        '[[fields]]\nname = "thing_id"\ntype = "String"\nrequired = true\n'
    )
    (tmp_path / "t.csv").write_text("thing_id\na1\na2\n")
    args = ["run", "t.csv", "--api", "s.toml", "--simulate", *FAST]
    refused = cli(args, tmp_path, clean_env())
    assert refused.returncode == 2 and "set TOP_SESSION" in refused.stderr, refused.stderr
    assert not (tmp_path / "reports" / "journal.sqlite").exists()
    done = cli(args, tmp_path, clean_env(TOP_SESSION="sess-for-the-trial"))
    assert done.returncode == 0, done.stderr


def test_a_check_never_overwrites_a_runs_workbook(tmp_path, simulator):
    from helpers import write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    assert cli(["run", "t.csv", *FAST], tmp_path, sim.env()).returncode == 0
    workbook = tmp_path / "reports" / "t.result.xlsx"
    before = workbook.read_bytes()
    assert cli(["validate", "t.csv"], tmp_path).returncode == 0
    assert cli(["run", "t.csv", "--dry-run", "--no-progress"], tmp_path, sim.env()).returncode == 0
    assert workbook.read_bytes() == before
    assert [r["status"] for r in read_sheet(tmp_path / "reports" / "t.validate.xlsx")] == [
        "valid"
    ] * 3
    assert (tmp_path / "reports" / "t.dry-run.xlsx").exists()


def test_a_deadline_that_passed_within_12_hours_stops_at_once(tmp_path, simulator):
    from datetime import datetime, timedelta

    from helpers import statuses, write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    past = (datetime.now() - timedelta(hours=1)).strftime("%H:%M")
    done = cli(["run", "t.csv", *FAST, "--deadline", past], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert "had already passed when the run started" in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"not_sent": 3}
    assert sim.stats()["calls"] == 0
    later = (datetime.now() + timedelta(hours=2)).strftime("%H:%M")
    assert cli(["run", "t.csv", *FAST, "--deadline", later], tmp_path, sim.env()).returncode == 0


def test_deadline_table():
    from datetime import datetime

    from importer.config import Config

    def at(deadline: str, now: str) -> str:
        moment = datetime.fromisoformat(f"2026-11-30 {now}")
        return f"{Config(deadline=deadline).stop_at(moment):%d %H:%M}"

    assert at("03:00", "04:41") == "30 03:00"  # passed 1h41 ago: at once
    assert at("06:30", "22:00") == "01 06:30"  # tonight's window: tomorrow morning
    assert at("23:00", "01:00") == "29 23:00"  # passed 2 h ago (yesterday): at once
    assert at("06:30", "02:00") == "30 06:30"  # later today


def test_the_end_line_gives_no_rate_for_a_handful_of_calls(tmp_path, simulator):
    from helpers import write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert "t.csv: 1 row: 1 success; 1 call; workbook" in done.stdout, done.stdout
    assert "calls/s" not in done.stdout


def test_options_that_do_nothing_here_are_said_once(tmp_path, simulator):
    from helpers import write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST, "--sheet", "Sheet2", "--qps-max", "50"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert "warning: --sheet Sheet2 does nothing for t.csv (a CSV file)" in done.stderr
    assert "warning: --qps-max does nothing without --qps auto" in done.stderr


def test_a_csv_report_fed_back_sends_exactly_the_original_payloads(tmp_path, simulator):
    from helpers import statuses, write_csv

    sim = simulator()
    rows = [ticket(i) for i in range(4)]
    rows[0]["user_identify"] = "=1+1"  # written as '=1+1 in the CSV report
    rows[1]["user_identify"] = "'quoted"  # a real leading quote survives the round trip
    rows[2]["user_identify"] = "-dash"
    rows[3]["user_identify"] = "@at\tx"
    write_csv(tmp_path / "t.csv", rows)
    first = cli(["run", "t.csv", *FAST, "--out", "r.csv"], tmp_path, sim.env())
    assert first.returncode == 0, first.stderr
    text = (tmp_path / "r.csv").read_text(encoding="utf-8-sig")
    assert "'=1+1" in text and "''quoted" in text
    accepted = sim.accepted()
    again = cli(["run", "r.csv", *FAST], tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    assert statuses(tmp_path / "reports" / "r.result.xlsx") == {"skipped": 4}
    assert sim.accepted() == accepted  # not one new payload: no value changed on the way
    sent = {json.loads(p)["user_identify"] for p in accepted}
    assert sent == {"=1+1", "'quoted", "-dash", "@at\tx"}


def test_a_field_without_a_name_does_not_hide_its_other_mistakes(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'method = "example.thing.save"\n'
        '[[fields]]\ntype = "Strin"\nrequired = "yes"\nmax_length = 0\n'
        '[[fields]]\nname = "ok_field"\ntype = "Number"\n'
    )
    done = cli(["apis", "s.toml"], tmp_path)
    assert done.returncode == 2
    for words in (
        "field #1 has no name",
        "field #1 has type 'Strin'",
        "field #1: required must be true or false",
        "field #1: max_length must be a whole number of at least 1",
    ):
        assert words in done.stderr, done.stderr


def test_a_failed_sheet_fed_back_keeps_the_original_rows_and_name(tmp_path, simulator):
    from helpers import write_csv

    bad = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i, tenant=999 if i in (1, 4) else 200110004) for i in range(6)]
    write_csv(tmp_path / "t.csv", rows)
    first = cli(["run", "t.csv", *FAST, "--max-failure-rate", "1"], tmp_path, bad.env())
    assert first.returncode == 1, first.stderr
    failed = read_sheet(tmp_path / "reports" / "t.result.xlsx", "failed")
    assert [r["source_row"] for r in failed] == [3, 6]

    good = simulator(app_key=bad.settings.app_key)
    args = ["run", "reports/t.result.xlsx", "--sheet", "failed", *FAST]
    again = cli(args, tmp_path, good.env())
    assert again.returncode == 0, again.stderr
    report = tmp_path / "reports" / "t-2.result.xlsx"
    assert [(r["source_row"], r["status"]) for r in read_sheet(report)] == [
        (3, "success"),
        (6, "success"),
    ]
    assert not (tmp_path / "reports" / "t.result.result.xlsx").exists()
    assert good.stats()["accepted"] == 2


def test_messages_count_in_good_grammar():
    from importer.config import Config
    from importer.errors import UsageError
    from importer.summary import Plan, plural

    assert (plural(1, "row"), plural(2, "row"), plural(1234, "call")) == (
        "1 row",
        "2 rows",
        "1,234 calls",
    )
    assert Plan(Path("t.csv"), to_send=1, rate=9.5).line().startswith("t.csv: 1 row to send;")
    one_left = Plan(Path("t.csv"), to_send=3, daily_quota=10, used_today=9).problem()
    assert "sending 3 rows takes at least 3 calls, but only 1 of the daily quota of 10 is left" in (
        one_left or ""
    )
    try:
        Config(app_key="k").credentials()
    except UsageError as exc:
        assert "Missing app secret (TOP_APP_SECRET): set it in" in str(exc)


@pytest.mark.parametrize("other_qps", [36, 8])
def test_a_qps_auto_run_joins_at_the_limit_of_the_runs_already_sending(
    tmp_path, simulator, other_qps
):
    """Another run on the journal holds a lease at ``other_qps`` (a --qps auto run that has
    learnt 36 calls/s, or a run at --qps 8): the joining --qps auto run starts at that limit
    instead of 5 calls/s, and takes half of it."""
    import sqlite3
    import time

    from helpers import write_csv

    sim = simulator(qps=100)
    write_csv(tmp_path / "first.csv", [ticket(0)])
    assert cli(["run", "first.csv", *FAST], tmp_path, env=sim.env()).returncode == 0  # the journal
    with sqlite3.connect(tmp_path / "reports" / "journal.sqlite") as db:
        db.execute(
            "INSERT INTO leases (run_id, app_key, qps, since, renewed_at) VALUES (?, ?, ?, ?, ?)",
            (10_000, sim.settings.app_key, other_qps, time.time(), time.time() + 3600),
        )
    rows = other_qps  # about two seconds at half the limit
    write_csv(tmp_path / "in.csv", [ticket(100 + i) for i in range(rows)])
    done = cli(
        ["run", "in.csv", "--qps", "auto", "--canary", "0", "--no-progress"],
        tmp_path,
        env=sim.env(),
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"--qps auto: from {other_qps} calls/s (the limit of the runs already sending for this "
        "app key)"
    ) in done.stderr
    per_second = sim.stats()["per_second"]
    share = other_qps / 2
    assert max(per_second.values()) <= share, per_second  # (ceilings only on the real clock)
    assert sim.stats()["rejected"].get("7", 0) == 0  # never throttled


@pytest.mark.parametrize("runs", [2, 4])
def test_runs_on_one_journal_share_the_app_keys_quota(tmp_path, simulator, runs):
    import subprocess
    import sys

    from helpers import write_csv

    quota = 40
    sim = simulator(qps=quota)
    rows = quota * 3 // runs  # about three seconds of sending at the full quota
    for r in range(runs):
        write_csv(tmp_path / f"in{r}.csv", [ticket(r * 1000 + i) for i in range(rows)])
    args = ["--qps", str(quota), "--canary", "0", "--no-progress"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "importer", "run", f"in{r}.csv", *args],
            cwd=tmp_path,
            env=sim.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(runs)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * runs, errors
    stats = sim.stats()
    assert stats["rejected"].get("7", 0) == 0  # no throttle: never more than N in a second
    assert stats["max_calls_in_a_second"] <= quota
    # Ceilings only on the real clock: how much of the quota they use together (~96 %) is
    # bench_share.py's figure, and the pacing of each share is proven on the fake clock.


def test_deadline_is_wall_clock_time_across_a_daylight_saving_change(monkeypatch):
    """The night Berlin's clocks go from 02:00 to 03:00 (2026-03-29): a run started at 00:30
    (+01:00) with --deadline 06:30 stops at 06:30 on the clock, +02:00, not an hour later."""
    import time
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from importer.config import Config

    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=berlin)
    at = Config(deadline="06:30").stop_at(start, berlin)
    assert at.astimezone(timezone.utc) == datetime(2026, 3, 29, 4, 30, tzinfo=timezone.utc)
    autumn = datetime(2026, 10, 24, 23, 0, tzinfo=berlin)  # clocks go back on the 25th
    at = Config(deadline="06:30").stop_at(autumn, berlin)
    assert at.astimezone(timezone.utc) == datetime(2026, 10, 25, 5, 30, tzinfo=timezone.utc)
    # this machine's own local time, as the CLI uses it (the C library's rules)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        local = start.astimezone()  # what datetime.now().astimezone() gives: a fixed offset
        at = Config(deadline="06:30").stop_at(local)
        assert at.astimezone(timezone.utc) == datetime(2026, 3, 29, 4, 30, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_max_runtime_0_says_so_in_one_finished_sentence(tmp_path, simulator):
    from helpers import write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST, "--max-runtime", "0"], tmp_path, sim.env())
    assert done.returncode == 1
    assert "--max-runtime 0 left no time to send, so nothing was sent; give it more time." in (
        done.stderr
    )
    assert "--deadline" not in done.stderr
    one = cli(["validate", "t.csv"], tmp_path)
    assert "  sending 1 valid row at --qps" in one.stdout
