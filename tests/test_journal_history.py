"""The journal's history of runs (what serve's page lists): each run's input, start, counts,
exit code and workbook, kept as it ends, on SQLite and on PostgreSQL; a killed run shows so; a
journal of an earlier version gains the columns as it opens."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from helpers import cli, ticket, write_csv

from importer.journal import KILLED, RunEnd, SQLiteJournal, open_journal


def _journal(tmp_path):
    """The journal the test's commands used: TOP_JOURNAL (PostgreSQL) or the default file."""
    return open_journal(os.environ.get("TOP_JOURNAL") or tmp_path / "reports" / "journal.sqlite")


@pytest.mark.journals
def test_each_run_is_in_the_history_with_its_counts_exit_code_and_workbook(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({7}))
    write_csv(tmp_path / "t.csv", [ticket(i, tenant=7 if i == 2 else 200110004) for i in range(5)])
    assert cli(["run", "t.csv", "--no-progress"], tmp_path, sim.env()).returncode == 1
    write_csv(tmp_path / "u.csv", [ticket(i) for i in range(10, 13)])
    assert cli(["run", "u.csv", "--no-progress"], tmp_path, sim.env()).returncode == 0
    journal = _journal(tmp_path)
    try:
        newest, oldest = journal.history()
    finally:
        journal.close()
    assert newest.input_path.endswith("u.csv") and oldest.input_path.endswith("t.csv")
    assert newest.started_at >= oldest.started_at
    assert (oldest.exit_code, oldest.counts) == (1, {"success": 4, "failed": 1})
    assert (newest.exit_code, newest.counts) == (0, {"success": 3})
    assert newest.workbook == str((tmp_path / "reports" / "u.result.xlsx").resolve())
    assert newest.finished_at and newest.finished_at >= newest.started_at


@pytest.mark.journals
def test_a_run_aborted_by_its_canary_is_in_the_history_with_exit_code_3(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({7}))
    write_csv(tmp_path / "t.csv", [ticket(i, tenant=7) for i in range(6)])
    args = ["run", "t.csv", "--no-progress", "--canary", "2", "--max-failure-rate", "0.1"]
    assert cli(args, tmp_path, sim.env()).returncode == 3
    journal = _journal(tmp_path)
    try:
        [run] = journal.history()
    finally:
        journal.close()
    assert run.exit_code == 3
    assert sum(run.counts.values()) == 6 and run.counts.get("not_sent")


def test_a_killed_run_shows_killed_and_an_unfinished_end_has_no_code(tmp_path):
    path = tmp_path / "j.sqlite"
    code = (
        "import os; from importer.journal import SQLiteJournal; "
        f"r = SQLiteJournal({str(path)!r}).start_run(input_path='t.csv', input_key='k', "
        "app_key='a', method='m.x'); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    journal = SQLiteJournal(path)
    run = journal.start_run(input_path="u.csv", input_key="k2", app_key="a", method="m.x")
    [going, killed] = journal.history()
    assert (going.input_path, going.finished_at, going.exit_code) == ("u.csv", None, None)
    assert (killed.input_path, killed.finished_at, killed.counts) == ("t.csv", KILLED, {})
    run.finish(end=RunEnd(None, {"not_sent": 2}, None))
    assert journal.history(limit=1)[0].counts == {"not_sent": 2}


def test_a_journal_of_an_earlier_version_gains_the_history_columns(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = SQLiteJournal(path)
    journal.start_run(input_path="t.csv", input_key="k", app_key="a", method="m.x").finish()
    journal.close()
    with sqlite3.connect(path) as db:
        for column in ("exit_code", "counts", "workbook"):
            db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    reopened = SQLiteJournal(path)
    [earlier] = reopened.history()
    assert (earlier.input_path, earlier.exit_code, earlier.counts) == ("t.csv", None, {})
    run = reopened.start_run(input_path="u.csv", input_key="k2", app_key="a", method="m.x")
    run.finish(end=RunEnd(0, {"success": 1}, "/x/u.result.xlsx"))
    assert reopened.history()[0].workbook == "/x/u.result.xlsx"
