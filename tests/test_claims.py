"""A payload is claimed in the journal before it is sent, across every run on that journal."""

from __future__ import annotations

import math
import multiprocessing
import os

import pytest

from importer.journal import KEPT_UNKNOWN_NOTE, PriorCall, SQLiteJournal, refusal
from importer.rows import Outcome, Status


def prior(state: str, live: bool = False) -> PriorCall:
    ended = None if live else 1700000000.0
    return PriorCall(state, "rid", "", 1700000000.0, 7, live, "other.csv", 4242, ended)


@pytest.mark.parametrize(
    ("held", "resend_unknown", "resend_success", "expected"),
    [
        (None, False, False, None),
        (prior("failed"), False, False, None),
        (prior("failed", live=True), False, False, None),
        (prior("success"), False, False, Status.SKIPPED),
        (prior("success", live=True), False, False, Status.SKIPPED),
        (prior("success"), False, True, None),  # --no-resume
        (prior("in_flight", live=True), False, False, Status.DUPLICATE),
        (prior("in_flight", live=True), True, True, Status.DUPLICATE),  # never beside a live run
        (prior("in_flight"), False, False, Status.UNKNOWN),  # its run died with it in flight
        (prior("in_flight"), True, False, None),
        (prior("unknown"), False, False, Status.UNKNOWN),
        (prior("unknown", live=True), False, False, Status.UNKNOWN),
        (prior("unknown"), True, False, None),
    ],
)
def test_refusal(held, resend_unknown, resend_success, expected):
    verdict = refusal(held, resend_unknown=resend_unknown, resend_success=resend_success)
    assert (verdict.status if verdict else None) is expected


def test_refusals_name_the_other_input_and_what_to_do():
    skipped = refusal(prior("success"), resend_unknown=False, resend_success=False)
    duplicate = refusal(prior("in_flight", True), resend_unknown=False, resend_success=False)
    unknown = refusal(prior("unknown"), resend_unknown=False, resend_success=False)
    assert "by the run of other.csv" in skipped.error and skipped.request_id == "rid"
    assert "being sent right now by the run of other.csv (process 4242)" in duplicate.error
    assert unknown.error == KEPT_UNKNOWN_NOTE and "--resend-unknown" in unknown.error


def open_run(path, name: str, **policy: bool):
    return SQLiteJournal(path).start_run(
        input_path=name, input_key=name, app_key="k", method="m.x", **policy
    )


def test_a_payload_claimed_by_a_live_run_is_not_claimed_by_another(tmp_path):
    path = tmp_path / "j.sqlite"
    first, second = open_run(path, "a.csv"), open_run(path, "b.csv", resend_unknown=True)
    assert first.claim("h1") is None
    refused = second.claim("h1")
    assert refused.status is Status.DUPLICATE and "a.csv" in refused.error
    # Settled failed: the next claim may send it again.
    first.settle(2, "h1", Outcome(Status.FAILED, code="50", attempts=1))
    assert second.claim("h1") is None
    second.settle(2, "h1", Outcome(Status.SUCCESS, request_id="r2", attempts=1))
    assert first.claim("h1").status is Status.SKIPPED


def test_a_claim_given_back_unsent_restores_what_the_journal_held(tmp_path):
    path = tmp_path / "j.sqlite"
    run = open_run(path, "a.csv", resend_unknown=True)
    assert run.claim("new") is None
    run.settle(2, "new", Outcome(Status.NOT_SENT))  # stopped before the call
    assert run.prior("new") is None
    run.claim("lost")
    run.settle(3, "lost", Outcome(Status.UNKNOWN, attempts=1))
    run.finish()
    later = open_run(path, "b.csv", resend_unknown=True)
    assert later.claim("lost") is None
    later.settle(3, "lost", Outcome(Status.NOT_SENT))
    assert later.prior("lost").state == "unknown"  # still unknown, not forgotten


def test_a_run_that_died_no_longer_holds_its_claims(tmp_path):
    path = tmp_path / "j.sqlite"
    run = open_run(path, "a.csv")
    run.claim("h1")
    # The process of that run is gone (a pid that cannot be alive).
    run._db.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (2**22 + 12345, run.run_id))
    later = open_run(path, "b.csv")
    assert later.claim("h1").status is Status.UNKNOWN
    assert open_run(path, "c.csv", resend_unknown=True).claim("h1") is None


def _open_and_claim(path: str, barrier, index: int, results) -> None:
    try:
        barrier.wait(30)
        run = SQLiteJournal(path).start_run(
            input_path=f"in{index}.csv", input_key=f"k{index}", app_key="k", method="m.x"
        )
        run.claim(f"h{index}")
        run.claim("shared")
        run.finish()
        results.put((index, "ok"))
    except Exception as exc:  # reported to the test, which names it
        results.put((index, f"{type(exc).__name__}: {exc}"))


def test_eight_processes_open_a_new_journal_together(tmp_path):
    path = tmp_path / "new" / "journal.sqlite"
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_claim, args=(str(path), barrier, i, results)) for i in range(8)
    ]
    for proc in procs:
        proc.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
    assert outcomes == dict.fromkeys(range(8), "ok")


def test_a_journal_busy_for_too_long_says_so_and_sends_nothing(tmp_path):
    import sqlite3

    from importer.errors import JournalError

    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(JournalError, match="is busy: another process held its write lock"):
            SQLiteJournal(path, busy_timeout=0.2).start_run(
                input_path="t.csv", input_key="k", app_key="k", method="m.x"
            )
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_rewrite_in_place_with_the_same_size_and_time_is_noticed(tmp_path):
    from importer import snapshot

    original = tmp_path / "in.csv"
    original.write_text("case_id\n1001\n1002\n")
    before = original.stat()
    copy = snapshot.take(original, tmp_path / "snaps")
    assert not copy.changed()
    with original.open("r+") as fh:  # the same inode, the same size
        fh.write("case_id\n1009\n1008\n")
    os.utime(original, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert copy.changed()
    copy.remove()


def test_runs_sending_for_one_app_key_share_its_quota(tmp_path):
    path = tmp_path / "j.sqlite"
    first, second = open_run(path, "a.csv"), open_run(path, "b.csv")
    assert first.share(40, 1000.0) == (math.inf, 1, True)  # alone: no other limit
    assert second.peers(1000.05) == 40  # where a joining --qps auto run starts
    others, live, seen = second.share(30, 1000.1)
    assert (others, live, seen) == (40, 2, False)  # the first has not seen the second yet
    assert first.share(40, 1000.5)[:2] == (30, 2)
    assert second.share(30, 1000.6) == (40, 2, True)
    assert first.share(25, 1000.7)[:2] == (30, 2)  # a limit learnt by --qps auto is renewed
    assert second.share(30, 1000.8)[:2] == (25, 2)
    assert first.share(40, 1000.6 + 10)[:2] == (math.inf, 1)  # the second stopped renewing: dead
    assert first.peers(1010.6) is None
    second.end_share()
    assert first.share(40, 1011.0)[:2] == (math.inf, 1)


def test_no_resume_resends_only_successes_of_runs_that_ended_before_it(tmp_path):
    path = tmp_path / "j.sqlite"
    old = open_run(path, "old.csv")
    old.claim("h-old")
    old.settle(2, "h-old", Outcome(Status.SUCCESS, attempts=1))
    old.finish()
    live = open_run(path, "a.csv")
    live.claim("h-live")
    live.settle(2, "h-live", Outcome(Status.SUCCESS, attempts=1))
    forced = open_run(path, "b.csv", resend_success=True)  # --no-resume
    assert forced.claim("h-old") is None  # an earlier run's success: sent again, as asked
    assert forced.claim("h-live").status is Status.SKIPPED  # an overlapping run's: never
    live.finish()
    assert forced.claim("h-live").status is Status.SKIPPED  # it overlapped this run
