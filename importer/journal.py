"""The resume journal: SQLite, one row per payload ever sent, committed as each outcome is known.

Tables::

    meta     schema name and version (a foreign SQLite file is refused, never altered)
    calls    (app_key, method, payload_hash) -> state in_flight | success | failed | unknown,
             request_id, system_time, finished_at, run_id          -- what resume reads
    runs     one row per run: input, pid, host, started/finished   -- also the lock
    results  (run_id, source_row) -> the report columns            -- the workbook is built from it
    usage    (app_key, day) -> calls: HTTP calls settled per GMT+8 day -- the daily-quota check
             (added later; CREATE IF NOT EXISTS gives older journals the table as they open)

A call is marked ``in_flight`` before it starts and settled as soon as its answer is known, each
in its own short transaction, so ``kill -9`` at any moment loses nothing committed. WAL with
``synchronous=NORMAL`` keeps a commit at tens of microseconds; a power cut may lose the last few.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from importer.errors import JournalError, LockedError
from importer.protocol import GMT8
from importer.records import Outcome, Status

SCHEMA_NAME = "top-import-journal"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    app_key TEXT NOT NULL, method TEXT NOT NULL, payload_hash TEXT NOT NULL,
    state TEXT NOT NULL, request_id TEXT, system_time TEXT, finished_at REAL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (app_key, method, payload_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, input_key TEXT NOT NULL, input_path TEXT NOT NULL,
    app_key TEXT NOT NULL, method TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_live ON runs (input_key, finished_at);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL, source_row INTEGER NOT NULL, status TEXT NOT NULL,
    code TEXT, msg TEXT, sub_code TEXT, sub_msg TEXT, request_id TEXT, system_time TEXT,
    attempts INTEGER, elapsed_ms INTEGER, error TEXT,
    PRIMARY KEY (run_id, source_row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    app_key TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (app_key, day)
) WITHOUT ROWID;
"""


def quota_day(epoch: float) -> str:
    """The platform's quota day of a moment: its date in GMT+8 (quotas reset at 00:00 there)."""
    return datetime.fromtimestamp(epoch, GMT8).strftime("%Y-%m-%d")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, GMT8).strftime("%Y-%m-%d %H:%M:%S GMT+8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class PriorCall:
    """What an earlier run recorded for a payload."""

    state: str
    request_id: str
    system_time: str
    finished_at: float | None
    run_id: int


class Journal:
    """One SQLite file; opened once per process, shared by the runs of its inputs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise JournalError(f"Journal {self.path} is a directory; give a file with --journal.")
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if fresh:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"Cannot create the journal folder for {path}: {exc}.") from None
        else:
            self._check_foreign()
        try:
            if not fresh:
                self._check_schema()  # read-only: a foreign file must not be touched
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._db.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                [("schema", SCHEMA_NAME), ("version", SCHEMA_VERSION)],
            )
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"Journal {self.path} is not a usable top-import journal ({exc}); "
                "it was left untouched: pass another --journal path or move the file away."
            ) from None

    def _check_foreign(self) -> None:
        with self.path.open("rb") as fh:
            head = fh.read(16)
        if head != b"SQLite format 3\x00":
            raise JournalError(
                f"Journal {self.path} is not a top-import journal (not an SQLite file); "
                "it was left untouched: pass another --journal path or move the file away."
            )

    def _check_schema(self) -> None:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        probe = sqlite3.connect(uri, uri=True, timeout=30.0)
        try:
            meta = dict(probe.execute("SELECT key, value FROM meta"))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            meta = {}
        finally:
            probe.close()
        if meta.get("schema") != SCHEMA_NAME:
            raise JournalError(
                f"Journal {self.path} is an SQLite file of another program; it was left "
                "untouched: pass another --journal path."
            )
        if meta.get("version") != SCHEMA_VERSION:
            raise JournalError(
                f"Journal {self.path} has version {meta.get('version')}, this top-import reads "
                f"version {SCHEMA_VERSION}; use a new --journal path."
            )

    def close(self) -> None:
        self._db.close()

    def start_run(
        self, *, input_path: str, input_key: str, app_key: str, method: str
    ) -> RunJournal:
        """Take the lock of ``input_key`` (an input's content hash) and open a run."""
        db = self._db
        host = socket.gethostname()
        db.execute("BEGIN IMMEDIATE")
        try:
            for run_id, pid, other_host, started, other_input in db.execute(
                "SELECT run_id, pid, host, started_at, input_path FROM runs "
                "WHERE input_key = ? AND finished_at IS NULL",
                (input_key,),
            ).fetchall():
                if other_host == host and not _pid_alive(pid):
                    # A dead run's lock: it never blocks.
                    db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (0, run_id))
                    continue
                same = input_path if other_input == input_path else f"{other_input} (same content)"
                raise LockedError(
                    f"{input_path}: {same} is already being imported with journal {self.path} by "
                    f"process {pid} on {other_host}, started {_when(started)}; wait for it to "
                    "finish (a second run would send the same rows twice)."
                )
            cur = db.execute(
                "INSERT INTO runs (input_key, input_path, app_key, method, pid, host, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (input_key, input_path, app_key, method, os.getpid(), host, time.time()),
            )
            run_id = cur.lastrowid
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return RunJournal(db, int(run_id or 0), app_key, method)


class RunJournal:
    """One run's view of the journal: resume look-ups, in-flight marks, settled outcomes."""

    def __init__(self, db: sqlite3.Connection, run_id: int, app_key: str, method: str) -> None:
        self._db = db
        self.run_id = run_id
        self._key = (app_key, method)
        self._marks: list[tuple[str, asyncio.Future[None]]] = []
        self._outcomes: list[tuple[int, str | None, Outcome]] = []
        self._flush_scheduled = False
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"RunJournal(run_id={self.run_id}, method={self._key[1]!r})"

    def prior(self, payload_hash: str) -> PriorCall | None:
        row = self._db.execute(
            "SELECT state, request_id, system_time, finished_at, run_id FROM calls "
            "WHERE app_key = ? AND method = ? AND payload_hash = ?",
            (*self._key, payload_hash),
        ).fetchone()
        if row is None:
            return None
        return PriorCall(row[0], row[1] or "", row[2] or "", row[3], row[4])

    def in_flight(self, payload_hash: str) -> None:
        """Mark a payload as sent-but-unanswered before its first call starts (own commit)."""
        self._write([payload_hash], [])

    def settle(self, source_row: int, payload_hash: str | None, outcome: Outcome) -> None:
        """Commit a row's final outcome (and, for a sent payload, its call state) at once."""
        self._write([], [(source_row, payload_hash, outcome)])

    # -- the same writes, coalesced per event-loop tick ------------------------------------------
    #
    # At thousands of calls a second, a commit per mark and per outcome is most of the journal's
    # cost. Marks and outcomes that arise in the same tick of the event loop share one
    # transaction, committed by a callback at the end of that tick: before any further I/O,
    # timer or sleep, so there is no time window in which a known outcome waits. A call starts
    # only once its mark is committed (``in_flight_soon`` returns the future to await).

    def in_flight_soon(self, payload_hash: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._marks.append((payload_hash, future))
        self._schedule()
        return future

    def settle_soon(self, source_row: int, payload_hash: str | None, outcome: Outcome) -> None:
        self._outcomes.append((source_row, payload_hash, outcome))
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception as exc:  # a callback cannot raise to anyone: keep it for flush()
            self._error = exc

    def flush(self) -> None:
        """Commit whatever the current tick queued; raise what an earlier tick's commit hit."""
        marks, outcomes = self._marks, self._outcomes
        self._marks, self._outcomes = [], []
        try:
            if marks or outcomes:
                self._write([h for h, _ in marks], outcomes)
        except BaseException as exc:
            for _, future in marks:
                if not future.done():
                    future.set_exception(JournalError(f"The journal cannot be written: {exc}."))
            raise
        for _, future in marks:
            if not future.done():
                future.set_result(None)
        if self._error is not None:
            error, self._error = self._error, None
            raise JournalError(f"The journal cannot be written: {error}.") from None

    def _write(self, marks: list[str], outcomes: list[tuple[int, str | None, Outcome]]) -> None:
        """One transaction: in-flight marks, then outcomes (call states, usage, results)."""
        db = self._db
        now = time.time()
        run_id, (app_key, method) = self.run_id, self._key
        db.execute("BEGIN")
        try:
            if marks:
                db.executemany(_MARK_IN_FLIGHT, [(app_key, method, h, run_id) for h in marks])
            states, calls = [], 0
            for _, payload_hash, outcome in outcomes:
                calls += outcome.attempts
                if payload_hash is None or not outcome.attempts:
                    continue
                state = _CALL_STATE.get(outcome.status, "failed")
                answer = (outcome.request_id, outcome.system_time, now, run_id, state)
                states.append((*answer, app_key, method, payload_hash, state))
            if states:
                db.executemany(_SETTLE_CALL, states)
            if calls:  # every HTTP call counts against the daily quota
                db.execute(_ADD_USAGE, (app_key, quota_day(now), calls))
            if outcomes:
                db.executemany(
                    _INSERT_RESULT,
                    [(run_id, row, *o.values()) for row, _, o in outcomes],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add_rows(self, rows: Iterable[tuple[int, Outcome]]) -> None:
        """Record outcomes of rows that made no call (invalid, duplicate, skipped...) in bulk."""
        self._write([], [(source_row, None, o) for source_row, o in rows])

    def results(self) -> Iterator[tuple[int, Outcome]]:
        """Every recorded row of this run, in source-row order."""
        cur = self._db.execute(
            "SELECT source_row, status, code, msg, sub_code, sub_msg, request_id, system_time, "
            "attempts, elapsed_ms, error FROM results WHERE run_id = ? ORDER BY source_row",
            (self.run_id,),
        )
        for row in cur:
            yield row[0], Outcome(Status(row[1]), *(v if v is not None else "" for v in row[2:]))

    def calls_on(self, day: str) -> int:
        """HTTP calls settled for this app key (any method, any run) on a ``quota_day``."""
        row = self._db.execute(
            "SELECT calls FROM usage WHERE app_key = ? AND day = ?", (self._key[0], day)
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(self) -> None:
        """Release the lock and drop this run's per-row results (the workbook holds them)."""
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM results WHERE run_id = ?", (self.run_id,))
        self._db.execute(
            "UPDATE runs SET finished_at = ? WHERE run_id = ?", (time.time(), self.run_id)
        )
        self._db.execute("COMMIT")


_ADD_USAGE = (
    "INSERT INTO usage (app_key, day, calls) VALUES (?, ?, ?) "
    "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls"
)
_MARK_IN_FLIGHT = (
    "INSERT INTO calls (app_key, method, payload_hash, state, run_id) "
    "VALUES (?, ?, ?, 'in_flight', ?) "
    # A success stays a success: --no-resume may send it again, but resume must not.
    "ON CONFLICT DO UPDATE SET run_id = excluded.run_id, "
    "state = CASE state WHEN 'success' THEN 'success' ELSE 'in_flight' END"
)
_SETTLE_CALL = (
    "UPDATE calls SET request_id = ?, system_time = ?, finished_at = ?, run_id = ?, state = ? "
    "WHERE app_key = ? AND method = ? AND payload_hash = ? "
    # a success stays a success (and keeps its request_id)
    "AND (state != 'success' OR ? = 'success')"
)
# An unknown outcome (cancelled in flight) may or may not have landed: it stays in flight.
_CALL_STATE = {Status.SUCCESS: "success", Status.UNKNOWN: "in_flight"}
_INSERT_RESULT = (
    "INSERT OR REPLACE INTO results (run_id, source_row, status, code, msg, sub_code, sub_msg, "
    "request_id, system_time, attempts, elapsed_ms, error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
