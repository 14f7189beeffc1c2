"""Runs on one journal share the app key's quota (the README is a contract), end to end: the
real CLI against the real simulator."""

from __future__ import annotations

import pytest
from helpers import cli, run_at_once, ticket, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


@pytest.mark.parametrize("other_qps", [36, 8])
def test_a_qps_auto_run_joins_at_the_limit_of_the_runs_already_sending(
    tmp_path, simulator, other_qps
):
    """Another run on the journal holds a lease at ``other_qps`` (a --qps auto run that has
    learnt 36 calls/s, or a run at --qps 8): the joining --qps auto run starts at that limit
    instead of 5 calls/s, and takes half of it."""
    import sqlite3
    import time

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
    quota = 40
    sim = simulator(qps=quota)
    rows = quota * 3 // runs  # about three seconds of sending at the full quota
    for r in range(runs):
        write_csv(tmp_path / f"in{r}.csv", [ticket(r * 1000 + i) for i in range(rows)])
    args = ["--qps", str(quota), "--canary", "0", "--no-progress"]
    ended = run_at_once([["run", f"in{r}.csv", *args] for r in range(runs)], tmp_path, sim.env())
    assert [code for code, _ in ended] == [0] * runs, ended
    stats = sim.stats()
    assert stats["rejected"].get("7", 0) == 0  # no throttle: never more than N in a second
    assert stats["max_calls_in_a_second"] <= quota
    # Ceilings only on the real clock: how much of the quota they use together (~96 %) is
    # bench_share.py's figure, and the pacing of each share is proven on the fake clock.
