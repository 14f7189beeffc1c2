"""What the resume journal costs the Dispatcher: the same calls with and without its callbacks.

    python benchmarks/bench_journal.py [--calls 5000] [--rounds 3] [--quick]

1. dispatch: N signed calls to the simulator (its own process, answering after 20 ms) through
   the Dispatcher with concurrency 64, (a) with callbacks that do nothing, (b) with the journal's
   callbacks as ``pipeline.run_file`` wires them (``run.claim_soon`` -- the claim -- awaited
   before the first call, ``run.settle_soon`` as each outcome is known: the claims and outcomes
   of one event-loop tick share a commit; a fresh journal file per round), and (c) the same
   callbacks with the claim's look-up of what the journal holds switched off (a plain in-flight
   mark, as before claims existed). Rounds alternate; the best of each is kept. Prints calls/s
   and the ratios b/a (target >= 0.9) and b/c (the claim's cost, target >= 0.95), and the time
   the journal callbacks held the event loop, per call.
2. journal alone, no network: ``in_flight`` + ``settle`` of N payloads in a tight loop, µs per
   call, and the share of that spent in COMMIT (the WAL append).

3. ``--postgres``: a whole ``top-import run`` of ``--rows`` rows (20,000) against the simulator
   (20 ms latency, ``--qps 10000 --concurrency 64``), its journal an SQLite file or a database
   on a local PostgreSQL server (started here as the tests start theirs), alternately; prints
   the best wall time of each and the ratio PostgreSQL/SQLite of their rates (target >= 0.9).

Prints, never asserts: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_send import SimulatorProcess, builder, make_records

from importer.dispatcher import Dispatcher, DispatchSettings
from importer.gateway import Gateway
from importer.journal import RunJournal, SQLiteJournal
from importer.rows import Outcome, RequestRecord, Status

APP_KEY = "12345678"
CONCURRENCY = 64


def open_run(path: Path) -> tuple[SQLiteJournal, RunJournal]:
    journal = SQLiteJournal(path)
    run = journal.start_run(
        input_path=str(path.with_suffix(".csv")),
        input_key=hashlib.sha256(str(path).encode()).hexdigest(),
        app_key=APP_KEY,
        method=builder().spec.method,
    )
    return journal, run


class Timed:
    """The journal callbacks of ``pipeline.run_file``, timing how long they hold the loop."""

    def __init__(self, run: RunJournal) -> None:
        self.run = run
        self.seconds = 0.0
        self.calls = 0
        self.commits = 0
        write = run._write

        def timed_write(*args: object) -> object:  # every transaction, whoever queued it
            started = time.perf_counter()
            verdicts = write(*args)
            self.seconds += time.perf_counter() - started
            self.commits += 1
            return verdicts

        run._write = timed_write  # type: ignore[method-assign]

    def claim(self, record: RequestRecord) -> asyncio.Future[None]:
        return self.run.claim_soon(record.row_key)

    def on_outcome(self, record: RequestRecord, outcome: Outcome) -> None:
        self.run.settle_soon(record.source_row, record.row_key, outcome)
        self.calls += 1


async def dispatch(
    url: str,
    recs: list[RequestRecord],
    claim: Callable[[RequestRecord], object],
    on_outcome: Callable[[RequestRecord, Outcome], None],
) -> float:
    settings = DispatchSettings(qps=100_000, concurrency=CONCURRENCY)
    async with Gateway(url, concurrency=CONCURRENCY, timeout=15) as gateway:
        d = Dispatcher(builder(), gateway, settings, claim=claim, on_outcome=on_outcome)
        started = time.perf_counter()
        await d.run(iter(recs))
        return len(recs) / (time.perf_counter() - started)


async def with_and_without(calls: int, rounds: int, tmp: Path) -> None:
    print(
        f"dispatch: {calls} calls, simulator latency 20 ms in its own process, concurrency "
        f"{CONCURRENCY}; best of {rounds} alternating rounds"
    )
    bare: list[float] = []
    journalled: list[float] = []
    unclaimed: list[float] = []
    held: list[float] = []
    commits: list[float] = []
    offset = 0
    with SimulatorProcess(latency_ms=20) as sim:
        await dispatch(sim.url, make_records(500, 10_000_000), _noop, _noop)  # warm up
        for i in range(rounds):
            bare.append(await dispatch(sim.url, make_records(calls, offset), _noop, _noop))
            offset += calls
            journal, run = open_run(tmp / f"round{i}.sqlite")
            timed = Timed(run)
            recs = make_records(calls, offset)
            journalled.append(await dispatch(sim.url, recs, timed.claim, timed.on_outcome))
            run.flush()
            offset += calls
            held.append(timed.seconds / max(timed.calls, 1))
            commits.append(timed.commits / max(timed.calls, 1))
            run.finish()
            journal.close()
            journal, run = open_run(tmp / f"unclaimed{i}.sqlite")
            run.prior = lambda row_key: None  # type: ignore[method-assign]
            plain = Timed(run)
            recs = make_records(calls, offset)
            unclaimed.append(await dispatch(sim.url, recs, plain.claim, plain.on_outcome))
            run.flush()
            offset += calls
            run.finish()
            journal.close()
        stats = await sim.stats()
    a, b, c = max(bare), max(journalled), max(unclaimed)
    print(f"  (a) no-op callbacks     : {a:8.0f} calls/s   rounds {_rates(bare)}")
    print(f"  (b) journal callbacks   : {b:8.0f} calls/s   rounds {_rates(journalled)}")
    print(f"  (c) marks, no claim     : {c:8.0f} calls/s   rounds {_rates(unclaimed)}")
    print(f"  ratio b/a               : {b / a:8.2f}   (target >= 0.90)")
    print(f"  ratio b/c (the claim)   : {b / c:8.2f}   (target >= 0.95)")
    print(
        f"  journal held the loop   : {min(held) * 1e6:8.0f} µs a call (in_flight + settle), "
        f"rounds {' '.join(f'{h * 1e6:.0f}' for h in held)}"
    )
    print(
        f"  commits                 : {min(commits):8.2f} a call (marks and outcomes of one "
        "loop tick share one)"
    )
    print(
        f"  simulator accepted {stats['accepted']} of {stats['calls']} calls, "
        f"duplicates {stats['duplicate_accepts']}"
    )


def journal_alone(calls: int, tmp: Path) -> None:
    """``in_flight`` and ``settle`` in a tight loop; the COMMIT's share from a traced run."""
    recs = make_records(calls)
    outcome = Outcome(
        Status.SUCCESS,
        request_id="r1x2y3z4",
        system_time="2024-05-01 12:00:00",
        attempts=1,
        elapsed_ms=21,
    )
    journal, run = open_run(tmp / "alone.sqlite")
    started = time.perf_counter()
    for r in recs:
        run.claim(r.row_key)
    mid = time.perf_counter()
    for r in recs:
        run.settle(r.source_row, r.row_key, outcome)
    ended = time.perf_counter()
    run.finish()
    # The same again with every statement timed by the connection's trace callback.
    journal2, run2 = open_run(tmp / "traced.sqlite")
    spent: dict[str, float] = {}
    last = [time.perf_counter(), ""]

    def trace(sql: str) -> None:  # called as each statement starts: charge the previous one
        now = time.perf_counter()
        if last[1]:
            spent[last[1]] = spent.get(last[1], 0.0) + now - last[0]
        last[0], last[1] = now, sql.split(None, 1)[0].upper()

    run2._db.set_trace_callback(trace)
    for r in recs:
        run2.claim(r.row_key)
        run2.settle(r.source_row, r.row_key, outcome)
        trace("END")  # charge the last statement of the call
        last[1] = ""
    run2._db.set_trace_callback(None)
    run2.finish()
    journal.close()
    journal2.close()
    per = 1e6 / calls
    print(f"journal alone, no network: {calls} payloads, WAL, synchronous=NORMAL")
    print(f"  in_flight               : {(mid - started) * per:8.1f} µs a call")
    print(f"  settle                  : {(ended - mid) * per:8.1f} µs a call")
    total = sum(spent.values())
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(spent.items(), key=_second))
    print(f"  statements (traced run) : {shares}")


def _second(kv: tuple[str, float]) -> float:
    return -kv[1]


def _noop(*_: object) -> None:
    return None


def _rates(rates: list[float]) -> str:
    return " ".join(f"{r:.0f}" for r in rates)


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await with_and_without(calls, rounds, Path(tmp))
        print()
        journal_alone(calls, Path(tmp))


def postgres_vs_sqlite(rows: int, rounds: int) -> None:
    """The whole CLI on each journal, alternately; the best round of each."""
    import csv
    import os
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import pgserver

    if pgserver.binaries() is None:
        print("no PostgreSQL server binaries: skipped")
        return
    server = pgserver.Server()
    server.start()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            SimulatorProcess(app_key=APP_KEY, secret="bench-secret", latency_ms=20.0) as sim,
        ):
            folder = Path(tmp)
            with (folder / "t.csv").open("w", newline="", encoding="utf-8") as fh:
                out = csv.writer(fh)
                out.writerow(["corp_id", "user_identify", "case_id", "tenant_id",
                              "open_conversation_id"])  # fmt: skip
                for i in range(rows):
                    out.writerow([f"ding{i:032d}", f"uid{i:09d}", str(396743391396743391 + i),
                                  "200110004", f"cid{i:09d}=="])  # fmt: skip
            env = {**os.environ, "TOP_APP_KEY": APP_KEY, "TOP_APP_SECRET": "bench-secret",
                   "TOP_GATEWAY": sim.url, **server.env()}  # fmt: skip
            best: dict[str, float] = {}
            for round_ in range(rounds):
                for kind in ("sqlite", "postgresql"):
                    target = (
                        str(folder / f"j{round_}.sqlite")
                        if kind == "sqlite"
                        else server.create_database(f"bench_{round_}")
                    )
                    started = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, "-m", "importer", "run", "t.csv", "--journal", target,
                         "--qps", "10000", "--concurrency", "64", "--canary", "0",
                         "--no-progress", "--out", f"{kind}{round_}.xlsx"],
                        cwd=folder, env=env, capture_output=True, text=True,
                    )  # fmt: skip
                    took = time.perf_counter() - started
                    if done.returncode != 0:
                        print(f"{kind}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                        return
                    best[kind] = min(best.get(kind, took), took)
                    print(f"  round {round_ + 1} {kind:10}: {took:6.2f} s")
            sqlite = best["sqlite"]
            print(f"  sqlite     best: {sqlite:6.2f} s  ({rows / sqlite:,.0f} rows/s)")
            print(
                f"  postgresql best: {best['postgresql']:6.2f} s  "
                f"({rows / best['postgresql']:,.0f} rows/s)"
            )
            print(f"  ratio postgresql/sqlite (rate): {best['sqlite'] / best['postgresql']:.2f}")
    finally:
        server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="the whole run, PG vs SQLite")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the --postgres run")
    parser.add_argument("--calls", type=int, default=5_000, help="calls a round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept")
    parser.add_argument("--quick", action="store_true", help="1000 calls, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 1_000, 2
    if args.postgres:
        postgres_vs_sqlite(args.rows, args.rounds)
    else:
        asyncio.run(main(args.calls, args.rounds))
