"""The journal on its own: what resume reads, what a crash leaves, what the lock refuses."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest

from importer.errors import JournalError, LockedError
from importer.journal import SQLiteJournal
from importer.rows import Outcome, Status


def open_run(journal: SQLiteJournal, key: str = "input-1", app_key: str = "app"):
    return journal.start_run(input_path="t.csv", input_key=key, app_key=app_key, method="m.x")


def test_a_settled_success_is_what_a_later_run_sees(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    run = open_run(journal)
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.SUCCESS, request_id="r1", system_time="t", attempts=1))
    run.finish()
    later = open_run(journal)
    prior = later.prior("h1")
    assert prior is not None
    assert (prior.state, prior.request_id) == ("success", "r1")
    assert later.prior("h2") is None


def test_an_in_flight_mark_survives_a_process_that_dies(tmp_path):
    path = tmp_path / "j.sqlite"
    code = (
        "import os; from importer.journal import SQLiteJournal; "
        f"r = SQLiteJournal({str(path)!r}).start_run(input_path='t', input_key='k', app_key='a', "
        "method='m.x'); r.claim('h1'); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    run = open_run(SQLiteJournal(path), key="k", app_key="a")  # the dead run's lock does not block
    assert run.prior("h1").state == "in_flight"


def test_a_success_is_never_downgraded_by_a_later_failure(tmp_path):
    run = open_run(SQLiteJournal(tmp_path / "j.sqlite"))
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.SUCCESS, request_id="r1", attempts=1))
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.FAILED, request_id="r2", attempts=1))
    assert (run.prior("h1").state, run.prior("h1").request_id) == ("success", "r1")


def test_another_app_key_does_not_see_the_success(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    run = open_run(journal, app_key="a")
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.SUCCESS, attempts=1))
    run.finish()
    assert open_run(journal, app_key="b").prior("h1") is None


def test_results_come_back_in_source_row_order(tmp_path):
    run = open_run(SQLiteJournal(tmp_path / "j.sqlite"))
    run.settle(5, "h5", Outcome(Status.FAILED, code="50", attempts=1))
    run.add_rows([(3, Outcome(Status.INVALID, error="bad")), (2, Outcome(Status.SKIPPED))])
    assert [(r, o.status) for r, o in run.results()] == [
        (2, Status.SKIPPED),
        (3, Status.INVALID),
        (5, Status.FAILED),
    ]


def test_a_live_run_of_the_same_input_is_refused_with_its_pid(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    open_run(journal, key="same")
    with pytest.raises(LockedError) as err:
        open_run(SQLiteJournal(tmp_path / "j.sqlite"), key="same")
    message = str(err.value)
    assert "j.sqlite" in message and "t.csv" in message
    assert str(__import__("os").getpid()) in message


def test_runs_of_different_inputs_share_a_journal(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    first, second = (
        open_run(journal, key="a"),
        open_run(SQLiteJournal(tmp_path / "j.sqlite"), key="b"),
    )
    assert first.run_id != second.run_id


def test_a_finished_run_releases_the_lock(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    open_run(journal, key="same").finish()
    open_run(journal, key="same")


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 10, b"SQLite format 3\x00" + b"\x00" * 100],
)
def test_a_corrupt_journal_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "j.sqlite"
    path.write_bytes(content)
    with pytest.raises(JournalError) as err:
        SQLiteJournal(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == content


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="another program"):
        SQLiteJournal(path)
    assert path.read_bytes() == before


def test_a_directory_is_not_a_journal(tmp_path):
    with pytest.raises(JournalError, match="directory"):
        SQLiteJournal(tmp_path)


def test_usage_counts_every_call_per_app_key_and_gmt8_day(tmp_path):
    from importer.journal import quota_day

    journal = SQLiteJournal(tmp_path / "j.sqlite")
    run = open_run(journal, app_key="a")
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.SUCCESS, attempts=3))  # two retries: three calls
    run.claim("h2")
    run.settle(3, "h2", Outcome(Status.FAILED, attempts=1))
    run.settle(4, None, Outcome(Status.INVALID))  # no call
    run.finish()
    other = open_run(journal, key="input-2", app_key="b")
    other.claim("h1")
    other.settle(2, "h1", Outcome(Status.SUCCESS, attempts=1))
    today = quota_day(time.time())
    assert open_run(journal, key="input-3", app_key="a").calls_on(today) == 4
    assert other.calls_on(today) == 1
    assert other.calls_on("2001-01-01") == 0


def test_the_quota_day_turns_at_midnight_gmt8():
    from importer.journal import quota_day

    midnight_gmt8 = 1_699_977_600  # 2023-11-15 00:00:00 GMT+8 = 2023-11-14 16:00 UTC
    assert quota_day(midnight_gmt8 - 1) == "2023-11-14"
    assert quota_day(midnight_gmt8) == "2023-11-15"


def test_a_journal_from_before_the_usage_table_gets_it_and_keeps_its_calls(tmp_path):
    path = tmp_path / "j.sqlite"
    run = open_run(SQLiteJournal(path))
    run.claim("h1")
    run.settle(2, "h1", Outcome(Status.SUCCESS, request_id="r1", attempts=1))
    run.finish()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE usage")  # as an older top-import left it
    db.commit()
    db.close()
    later = open_run(SQLiteJournal(path))
    assert later.prior("h1").state == "success"
    assert later.calls_on("2001-01-01") == 0


async def test_marks_and_outcomes_of_one_loop_tick_share_one_commit(tmp_path):
    run = open_run(SQLiteJournal(tmp_path / "j.sqlite"))
    transactions = []
    write = run._write
    run._write = lambda marks, outcomes: (transactions.append(1), write(marks, outcomes))
    first, second = run.claim_soon("h1"), run.claim_soon("h2")
    run.settle_soon(9, None, Outcome(Status.INVALID, error="bad"))
    await first
    await second
    assert len(transactions) == 1
    assert run.prior("h1").state == "in_flight"
    assert [r for r, _ in run.results()] == [9]


async def test_a_mark_is_committed_before_the_call_may_start(tmp_path):
    path = tmp_path / "j.sqlite"
    run = open_run(SQLiteJournal(path))
    await run.claim_soon("h1")
    other = sqlite3.connect(path)  # another process's view: what a kill -9 would leave
    (state,) = other.execute("SELECT state FROM calls WHERE payload_hash = 'h1'").fetchone()
    other.close()
    assert state == "in_flight"


async def test_an_outcome_queued_in_a_tick_is_committed_by_the_end_of_it(tmp_path):
    path = tmp_path / "j.sqlite"
    run = open_run(SQLiteJournal(path))
    await run.claim_soon("h1")
    run.settle_soon(2, "h1", Outcome(Status.SUCCESS, request_id="r1", attempts=1))
    await asyncio.sleep(0)  # the tick ends
    other = sqlite3.connect(path)
    (state,) = other.execute("SELECT state FROM calls WHERE payload_hash = 'h1'").fetchone()
    other.close()
    assert state == "success"


async def test_a_commit_that_fails_fails_the_waiting_call_and_the_flush(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    run = open_run(journal)
    journal.close()  # every write now fails
    mark = run.claim_soon("h1")
    with pytest.raises(JournalError, match="cannot be written"):
        await mark
    run.settle_soon(2, None, Outcome(Status.INVALID))
    await asyncio.sleep(0)
    with pytest.raises(JournalError, match="cannot be written"):
        run.flush()


def test_a_journal_with_a_damaged_page_is_one_sentence_and_exit_2(tmp_path, simulator):
    """The header is whole (the journal opens), pages further on are not: met mid-run."""
    import json

    from helpers import cli, ticket, write_csv

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(2000)])
    assert cli(["run", "t.csv", "--qps", "5000"], tmp_path, sim.env()).returncode == 0
    journal = tmp_path / "reports" / "journal.sqlite"
    size = journal.stat().st_size
    with journal.open("r+b") as fh:
        for offset in range(4096 * 3, size, 4096 * 2):
            fh.seek(offset + 100)
            fh.write(bytes(range(200)))
    done = cli(["run", "t.csv", "--summary-json", "s.json"], tmp_path, sim.env())
    assert done.returncode == 2, done.stderr
    assert "Journal reports/journal.sqlite is damaged" in done.stderr
    assert "move the file away" in done.stderr
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["exit_code"] == 2 and "is damaged" in document["files"][0]["error"]
    assert sim.stats()["accepted"] == 2000  # nothing sent again
    assert journal.stat().st_size >= size  # never removed or rebuilt by the tool


def test_a_reservation_holds_planned_calls_until_they_are_made_or_the_run_ends(tmp_path):
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    first = open_run(journal, key="input-1")
    alone = first.reserve(40, time.time())
    assert (alone.used, alone.reserved, alone.reserving, alone.sending) == (0, 0, 0, 0)
    second = open_run(journal, key="input-2")
    seen = second.reserve(30, time.time())
    assert (seen.used, seen.reserved, seen.reserving, seen.sending) == (0, 40, 1, 1)
    first.claim("h1")
    first.settle(2, "h1", Outcome(Status.SUCCESS, attempts=3))  # three calls made of forty
    third = open_run(journal, key="input-3")
    seen = third.reserve(5, time.time())
    assert (seen.used, seen.reserved, seen.reserving) == (3, 37 + 30, 2)
    first.finish()
    seen = third.reserve(5, time.time())  # asking again replaces its own, never adds to it
    assert (seen.used, seen.reserved, seen.reserving) == (3, 30, 1)
    other_key = journal.start_run(
        input_path="t.csv", input_key="input-4", app_key="other", method="m.x"
    ).reserve(1, time.time())
    assert (other_key.used, other_key.reserved) == (0, 0)  # another app key's quota


def test_a_reservation_of_a_run_that_died_is_not_held(tmp_path):
    path = tmp_path / "j.sqlite"
    code = (
        "import os, time; from importer.journal import SQLiteJournal; "
        f"r = SQLiteJournal({str(path)!r}).start_run(input_path='t', input_key='k', app_key='app', "
        "method='m.x'); r.reserve(50, time.time()); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    seen = open_run(SQLiteJournal(path)).reserve(10, time.time())
    assert (seen.reserved, seen.reserving, seen.sending) == (0, 0, 0)


@pytest.mark.parametrize(
    ("unfinished", "beat_age", "pid_gone", "alive"),
    [
        (True, 1.0, False, True),  # beating
        (True, 59.0, False, True),  # within BEAT_STALE_S
        (True, 61.0, False, False),  # silent too long: dead, on any host, whatever its pid
        (True, 1.0, True, False),  # its process is gone (this host): dead at once
        (True, None, False, True),  # a run of an earlier version: its process decides
        (True, None, True, False),
        (False, 1.0, False, False),  # finished
    ],
)
def test_a_run_is_alive_while_it_beats_and_its_process_is_there(
    unfinished, beat_age, pid_gone, alive
):
    from importer.journal import run_alive

    now = 1_000_000.0
    beat_at = None if beat_age is None else now - beat_age
    assert run_alive(unfinished=unfinished, beat_at=beat_at, now=now, pid_gone=pid_gone) is alive


def _other_host_run(path, beat_at: float) -> None:
    """A run of host B, as it left the journal: unfinished, a payload in flight, a reservation."""
    from importer.journal import quota_day

    db = sqlite3.connect(path)
    with db:
        db.execute(
            "INSERT INTO runs (run_id, input_key, input_path, app_key, method, pid, host, "
            "started_at, beat_at) VALUES (99, 'input-1', 'b.csv', 'app', 'm.x', 1, 'B', ?, ?)",
            (beat_at, beat_at),
        )
        db.execute(
            "INSERT INTO calls (app_key, method, payload_hash, state, run_id) "
            "VALUES ('app', 'm.x', 'h1', 'in_flight', 99)"
        )
        db.execute(
            "INSERT INTO reservations (run_id, app_key, day, planned) VALUES (99, 'app', ?, 40)",
            (quota_day(time.time()),),
        )
    db.close()


def test_a_run_of_another_host_that_went_silent_is_dead_and_one_that_beats_is_not(tmp_path):
    from importer.journal import BEAT_STALE_S

    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    _other_host_run(path, time.time())
    with pytest.raises(LockedError, match="on B"):
        open_run(SQLiteJournal(path))  # the same content, beating on host B
    other = open_run(SQLiteJournal(path), key="input-2")
    assert other.prior("h1").live
    assert other.claim("h1").status is Status.DUPLICATE
    assert other.reserve(1, time.time()).reserved == 40
    other.finish()

    path = tmp_path / "silent.sqlite"
    SQLiteJournal(path).close()
    _other_host_run(path, time.time() - BEAT_STALE_S - 1)  # killed, or its host lost
    run = open_run(SQLiteJournal(path))  # its lock no longer blocks
    assert not run.prior("h1").live
    assert run.claim("h1").status is Status.UNKNOWN  # what it held in flight is unknown
    assert run.reserve(1, time.time()).reserved == 0


def test_a_run_beats_from_a_thread_of_its_own_until_it_finishes(tmp_path):
    from helpers import wait_for

    path = tmp_path / "j.sqlite"
    run = open_run(SQLiteJournal(path, beat_s=0.01))
    db = sqlite3.connect(path)

    def beat() -> float:
        return db.execute("SELECT beat_at FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()[0]

    first = beat()
    wait_for(lambda: beat() > first)  # while the run's own thread does nothing at all
    run.finish()
    last = beat()
    assert not run._heart._thread.is_alive()  # stopped and joined
    assert beat() == last
    db.close()


def test_a_run_that_stops_beating_is_dead_after_beat_stale_s_on_the_journals_clock(tmp_path):
    """Liveness on a fake clock: the same process and host (its pid alive), so only the
    heartbeat's age decides; no real minute goes by."""
    from importer.journal import BEAT_STALE_S

    now = [1_000_000.0]
    clock = lambda: now[0]  # noqa: E731
    path = tmp_path / "j.sqlite"
    silent = open_run(SQLiteJournal(path, beat_s=3600, clock=clock))  # its beats never come
    assert silent.claim("h1") is None
    now[0] += BEAT_STALE_S - 1
    with pytest.raises(LockedError, match="already being imported"):
        open_run(SQLiteJournal(path, clock=clock))
    now[0] += 2
    after = open_run(SQLiteJournal(path, clock=clock))  # its lock no longer blocks
    assert after.claim("h1").status is Status.UNKNOWN  # what it held in flight is unknown
    after.finish()
    silent.finish()


def test_a_batch_of_a_thousand_new_claims_claims_each_and_judges_the_held(tmp_path):
    CLAIM_CHUNK = 500  # a batch of a thousand and three, the held one among them

    journal = SQLiteJournal(tmp_path / "j.sqlite")
    first = open_run(journal)
    first.claim("held")
    first.settle(2, "held", Outcome(Status.SUCCESS, request_id="r1", attempts=1))
    first.finish()
    run = open_run(journal, key="input-2")
    keys = [f"k{i}" for i in range(2 * CLAIM_CHUNK + 3)]
    keys.insert(CLAIM_CHUNK, "held")  # held, in the middle of the first chunks

    async def claims():
        return await asyncio.gather(*(run.claim_soon(key) for key in keys))

    verdicts = dict(zip(keys, asyncio.run(claims()), strict=True))
    assert verdicts.pop("held").status is Status.SKIPPED  # a success is never claimed again
    assert set(verdicts.values()) == {None}
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        states = dict(db.execute("SELECT state, count(*) FROM calls GROUP BY state"))
    assert states == {"in_flight": 2 * CLAIM_CHUNK + 3, "success": 1}
