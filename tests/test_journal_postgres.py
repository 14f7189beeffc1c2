"""The journal on a real PostgreSQL server, as several hosts share it: never twice across
hosts, liveness judged on the server (a host killed frees its input and its quota share at
once, its in-flight rows unknown for the others), fail closed when the server goes away, safe
concurrent first opens, and the password in no output. "Another host" is a process with its
own host name (``unshare --uts``)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pytest
from helpers import cli, read_sheet, ticket, wait_for, write_csv

from importer.errors import JournalError, LockedError
from importer.journal import PostgresJournal, open_journal
from importer.rows import Outcome, Status

SLOW = ["--qps", "200", "--no-progress", "--retries", "0"]


def _as_host(host: str, args: list[str]) -> list[str]:
    """``top-import ARGS`` as a process whose host name is ``host``."""
    return ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"',
            sys.executable, "-m", "importer", *args]  # fmt: skip


needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="another host is played with unshare --uts, which needs root",
)


def _open_run(journal, key="k", path="t.csv", **kw):
    return journal.start_run(input_path=path, input_key=key, app_key="app", method="m", **kw)


# -- the journal's rules, on the server --------------------------------------------------------


def test_a_claim_on_one_host_refuses_the_same_payload_on_another(
    pg_journal, pg_server, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    a, b = PostgresJournal(pg_journal), PostgresJournal(pg_journal)
    b.host = "B"  # the same database seen from another machine
    run_a, run_b = _open_run(a, key="a"), _open_run(b, key="b", path="u.csv")
    assert run_a.claim("p1") is None
    refused = run_b.claim("p1")  # A is alive: never beside it
    assert refused is not None and refused.status is Status.DUPLICATE
    run_a.settle(2, "p1", Outcome(Status.SUCCESS, request_id="r1", attempts=1))
    skipped = run_b.claim("p1")
    assert skipped is not None and skipped.status is Status.SKIPPED
    assert run_b.claim("p2") is None
    run_a.finish()
    run_b.finish()
    # the same content twice is locked while the first runs, on any host
    first = _open_run(a, key="same")
    with pytest.raises(LockedError, match="already being imported"):
        _open_run(b, key="same", path="copy.csv")
    first.finish()
    _open_run(b, key="same", path="copy.csv").finish()
    a.close()
    b.close()


def test_a_killed_hosts_lock_and_claims_are_free_at_once(pg_journal, pg_server, tmp_path):
    script = (
        "import os, sys\n"
        "from importer.journal import PostgresJournal\n"
        f"j = PostgresJournal({pg_journal!r})\n"
        "r = j.start_run(input_path='t.csv', input_key='k', app_key='app', method='m')\n"
        "assert r.claim('p1') is None\n"
        "from importer.rows import Outcome, Status\n"
        "r.add_rows([(7, Outcome(Status.INVALID, error='bad'))])\n"
        "print('claimed', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout.readline().strip() == b"claimed"
        os.environ["PGPASSWORD"] = pg_server.password
        other = PostgresJournal(pg_journal)
        with pytest.raises(LockedError):
            _open_run(other)  # alive: its lock holds
        with pytest.raises(LockedError, match="being imported right now"):
            other.last_results(Path("t.csv"))  # report: not while it runs
        child.kill()  # kill -9: the server drops its connections, and its liveness lock
        child.wait()
        started = time.monotonic()
        # report at once: what the killed run recorded is in the journal, on any host
        wait_for(lambda: _killed_results(other) is not None)
        killed = _killed_results(other)
        assert [(row, o.status) for row, _digest, o in killed.paired_results()] == [
            (7, Status.INVALID)
        ]
        wait_for(lambda: _can_start(other))
        assert time.monotonic() - started < 10
        run = _open_run(other, key="k2", path="u.csv")
        kept = run.claim("p1")
        assert kept is not None and kept.status is Status.UNKNOWN  # never resent, never stuck
        run.finish()
        other.close()
    finally:
        child.kill()
        os.environ.pop("PGPASSWORD", None)


def _killed_results(journal):
    try:
        return journal.last_results(Path("t.csv"))
    except LockedError:  # the server has not seen the connection go yet
        return None


def _can_start(journal) -> bool:
    try:
        _open_run(journal).finish()
    except LockedError:
        return False
    return True


def test_eight_first_opens_at_once_on_an_empty_database(pg_journal, pg_server):
    script = (
        "from importer.journal import PostgresJournal\n"
        f"j = PostgresJournal({pg_journal!r})\n"
        "import sys; r = j.start_run(input_path=sys.argv[1], input_key=sys.argv[1], "
        "app_key='app', method='m')\n"
        "assert r.claim('p-' + sys.argv[1]) is None\n"
        "r.finish(); j.close()\n"
    )
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    opens = [
        subprocess.Popen([sys.executable, "-c", script, f"in{i}"], env=env, stderr=subprocess.PIPE)
        for i in range(8)
    ]
    for process in opens:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    import psycopg

    with psycopg.connect(pg_journal, password=pg_server.password) as db:
        assert db.execute("SELECT count(*) FROM calls").fetchone() == (8,)
        assert db.execute("SELECT count(*) FROM meta").fetchone() == (2,)


def test_a_wrong_password_or_no_server_is_one_sentence_without_the_password(
    pg_journal, pg_server, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(JournalError) as wrong:
        PostgresJournal(pg_journal)
    assert "not-the-password" not in str(wrong.value) and "Nothing was sent" in str(wrong.value)
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    with pytest.raises(JournalError, match="Cannot open the journal"):
        open_journal("postgresql://top@127.0.0.1:1/none")


# -- the real command, two hosts, a server that goes away ---------------------------------------


def _rows(tmp_path, n):
    return write_csv(tmp_path / "t.csv", [ticket(i) for i in range(n)])


def test_a_run_on_postgresql_resumes_and_reports(tmp_path, simulator, pg_journal, pg_server):
    sim = simulator()
    _rows(tmp_path, 30)
    env = sim.env(**pg_server.env())
    first = cli(["run", "t.csv", "--journal", pg_journal, *SLOW], tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert sim.stats()["accepted"] == 30
    again = cli(["run", "t.csv", "--journal", pg_journal, *SLOW], tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert sim.stats()["calls"] == 30  # all skipped: nothing sent twice
    statuses = {r["status"] for r in read_sheet(tmp_path / "reports" / "t.result.xlsx")}
    assert statuses == {"skipped"}
    # TOP_JOURNAL does the same as --journal
    via_env = cli(["run", "t.csv", *SLOW], tmp_path, {**env, "TOP_JOURNAL": pg_journal})
    assert via_env.returncode == 0 and sim.stats()["calls"] == 30
    for done in (first, again, via_env):
        assert pg_server.password not in done.stdout + done.stderr


def test_the_password_on_the_command_line_is_refused_and_never_shown(tmp_path, pg_server):
    _rows(tmp_path, 3)
    url = f"postgresql://top:{pg_server.password}@127.0.0.1:{pg_server.port}/postgres"
    done = cli(["run", "t.csv", "--simulate", "--journal", url], tmp_path)
    assert done.returncode == 2
    assert "PGPASSWORD" in done.stderr and pg_server.password not in done.stderr + done.stdout


@needs_unshare
def test_host_a_killed_mid_send_host_b_finishes_and_nothing_is_sent_twice(
    tmp_path, simulator, pg_journal, pg_server
):
    sim = simulator(latency_ms=150)
    _rows(tmp_path, 60)
    env = sim.env(**pg_server.env())
    args = ["run", "t.csv", "--journal", pg_journal, "--qps", "40", "--concurrency", "4",
            "--canary", "0", "--retries", "0", "--no-progress"]  # fmt: skip
    a = subprocess.Popen(
        _as_host("host-a", args), cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: sim.stats()["calls"] >= 12)
    finally:
        os.killpg(a.pid, signal.SIGKILL)  # kill -9 host A's run mid-send
        a.wait()
    started = time.monotonic()
    b = subprocess.run(
        _as_host("host-b", args), cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert b.returncode == 1, b.stderr  # A's in-flight rows are unknown: to check
    stats = sim.stats()
    assert stats["duplicate_accepts"] == 0
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    statuses = [r["status"] for r in rows]
    assert 1 <= statuses.count("unknown") <= 4  # what A had in flight (at most --concurrency)
    assert statuses.count("success") + statuses.count("skipped") + statuses.count("unknown") == 60
    assert "host-a" not in b.stderr or "imported" not in b.stderr  # not refused as locked


def test_the_server_stopped_mid_run_stops_the_run_and_a_rerun_sends_each_payload_once(
    tmp_path, simulator, pg_server
):
    import pgserver

    own = pgserver.Server()  # stopped below: a server of its own
    own.start()
    try:
        url = own.create_database("stop_test")
        sim = simulator(latency_ms=50)
        _rows(tmp_path, 200)
        env = sim.env(**own.env())
        args = ["run", "t.csv", "--journal", url, "--qps", "50", "--concurrency", "2",
                "--canary", "0", "--retries", "0", "--no-progress"]  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-m", "importer", *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: sim.stats()["calls"] >= 10)
        own.stop("immediate")
        stopped_at = time.monotonic(), sim.stats()["calls"]
        out, err = run.communicate(timeout=60)
        assert run.returncode == 3, err
        assert time.monotonic() - stopped_at[0] < 15
        assert sim.stats()["calls"] - stopped_at[1] <= 4  # in flight then, no new call after
        lines = [line for line in err.splitlines() if "cannot be reached" in line]
        assert len(lines) == 1 and own.password not in out + err
        own.start()
        again = subprocess.run(
            [sys.executable, "-m", "importer", *args], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode in (0, 1), again.stderr
        stats = sim.stats()
        assert stats["duplicate_accepts"] == 0
        book = openpyxl.load_workbook(sorted((tmp_path / "reports").glob("t*.result.xlsx"))[-1])
        statuses = [row[0] for row in book["results"].iter_rows(min_row=2, values_only=True)]
        assert len(statuses) > 0
    finally:
        own.remove()


@needs_unshare
def test_two_hosts_at_the_whole_quota_each_share_it_unthrottled_and_use_nearly_all_of_it(
    tmp_path, simulator, pg_journal, pg_server
):
    quota = 20
    sim = simulator(qps=quota, latency_ms=20)
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(100)])
    write_csv(tmp_path / "b.csv", [ticket(i) for i in range(1000, 1100)])
    env = sim.env(**pg_server.env())

    def run_as(host: str, name: str) -> subprocess.Popen:
        args = ["run", name, "--journal", pg_journal, "--qps", str(quota), "--canary", "0",
                "--retries", "0", "--no-progress"]  # fmt: skip
        return subprocess.Popen(
            _as_host(host, args), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    hosts = [run_as("host-a", "a.csv"), run_as("host-b", "b.csv")]
    for proc in hosts:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    stats = sim.stats()
    assert stats["accepted"] == 200 and stats["duplicate_accepts"] == 0
    assert stats["rejected"].get("7", 0) == 0  # never throttled: each paced to its share
    assert stats["max_calls_in_a_second"] <= quota
    # the seconds both send in: the quota nearly all used (the first two, while each is yet to
    # see the other's lease, and the last two, as one finishes, go slower on SQLite too)
    per_second = [
        n for _second, n in sorted(stats["per_second"].items(), key=lambda kv: int(kv[0]))
    ]
    both = per_second[2:-2]
    # the typical second of those (the median: a loaded machine may stretch the start a little)
    # uses 95 % of the quota or more; their mean, 90 % or more
    typical, mean = statistics.median(both) / quota, sum(both) / (quota * len(both))
    assert len(both) >= 5 and typical >= 0.95 and mean >= 0.9, (typical, mean, per_second)
    for name in ("a", "b"):
        assert statuses_of(tmp_path / "reports" / f"{name}.result.xlsx") == {"success": 100}


def statuses_of(book) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_sheet(book):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def test_the_python_api_takes_the_url_as_journal(
    tmp_path, simulator, pg_journal, pg_server, monkeypatch
):
    import importer

    sim = simulator()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    _rows(tmp_path, 5)
    given = {"gateway": sim.url, "app_key": sim.settings.app_key,
             "app_secret": sim.settings.secret, "qps": 1000, "canary": 0}  # fmt: skip
    first = importer.run("t.csv", **given, journal=pg_journal)
    assert (first.exit_code, first.counts) == (0, {"success": 5})
    again = importer.run("t.csv", **given, journal=pg_journal)
    assert (again.exit_code, again.counts) == (0, {"skipped": 5})
    assert sim.stats()["calls"] == 5


def test_a_url_without_the_driver_installed_says_how_to_install_it(monkeypatch, pg_journal):
    from importer.errors import UsageError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(UsageError, match=r"pip install 'top-import\[postgres\]'"):
        open_journal(pg_journal)


def _runs_at_once(count: int, work) -> list:
    """``work(i)`` on ``count`` threads started together; what each returned (or raised)."""
    import threading

    start, results = threading.Barrier(count), [None] * count

    def go(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_eight_runs_claiming_one_payload_at_once_claim_it_once_new_or_held(
    pg_journal, pg_server, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    journals = [PostgresJournal(pg_journal) for _ in range(8)]
    runs = [_open_run(j, key=f"k{i}", path=f"{i}.csv") for i, j in enumerate(journals)]
    failed = Outcome(Status.FAILED, code="15", attempts=1)
    runs[0].claim("held")
    runs[0].settle(2, "held", failed)  # held: a failure, which a run may send again
    for payload in ("new", "held"):
        verdicts = _runs_at_once(8, lambda i, payload=payload: runs[i].claim(payload))
        assert not any(isinstance(v, Exception) for v in verdicts), verdicts
        assert sum(v is None for v in verdicts) == 1  # one claims it; the others are refused
        assert {v.status for v in verdicts if v is not None} == {Status.DUPLICATE}
    for run in runs:
        run.finish()
    for journal in journals:
        journal.close()


def test_batches_of_claims_and_outcomes_of_four_runs_at_once_never_deadlock(
    pg_journal, pg_server, monkeypatch
):
    """Every batch of every run takes the claim lock and writes the one usage row of the app key
    and day: four runs' batches at once all commit, and every call is counted once."""
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    journals = [PostgresJournal(pg_journal) for _ in range(4)]
    runs = [_open_run(j, key=f"k{i}", path=f"{i}.csv") for i, j in enumerate(journals)]

    def send(i: int) -> int:
        run, before = runs[i], []
        for step in range(60):
            keys = [f"r{i}-{step}-{n}" for n in range(5)]
            outcomes = [(n, key, Outcome(Status.SUCCESS, attempts=1), None) for n, key in before]
            assert run._write(keys, outcomes) == [None] * 5
            before = list(enumerate(keys, start=step * 5))
        return 0

    assert _runs_at_once(4, send) == [0, 0, 0, 0]
    used = runs[0].calls_on(quota_day_now())
    assert used == 4 * 59 * 5  # every settled call counted once
    for run in runs:
        run.finish()
    for journal in journals:
        journal.close()


def quota_day_now() -> str:
    from importer.journal._base import quota_day

    return quota_day(time.time())


def test_a_reservation_reads_the_usage_and_the_others_plans_at_one_moment(
    pg_journal, pg_server, monkeypatch
):
    """While run A counts its calls, run C's pre-flight always finds A's calls either used or
    still planned, never in neither or in both: used + reserved is A's plan, whatever the
    moment (read by statements one after another, it drifted by the calls counted between)."""
    import threading

    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    journal = PostgresJournal(pg_journal)
    sender, watcher = _open_run(journal, key="a", path="a.csv"), None
    sender.reserve(400, time.time())
    other = PostgresJournal(pg_journal)
    watcher = _open_run(other, key="c", path="c.csv")
    done = threading.Event()

    def count() -> None:
        for row in range(400):
            sender._write([], [(row, None, Outcome(Status.SUCCESS, attempts=1), None)])
        done.set()

    counting = threading.Thread(target=count)
    counting.start()
    seen = []
    while not done.is_set():
        view = watcher.reserve(0, time.time())
        seen.append(view.used + view.reserved)
    counting.join()
    assert len(seen) > 5 and set(seen) == {400}, sorted(set(seen))
    for run in (sender, watcher):
        run.finish()
    journal.close()
    other.close()
