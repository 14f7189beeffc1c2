"""The SQLite journal: one file, one row per payload ever sent, committed as each outcome is known.

Tables::

    meta     schema name and version (a foreign SQLite file is refused, never altered)
    calls    (app_key, method, payload_hash) -> state in_flight | success | failed | unknown,
             request_id, system_time, finished_at, run_id          -- what resume reads
    runs     one row per run: input, pid, host, started/finished, its heartbeat -- also the lock
    results  (run_id, source_row) -> the report columns and a digest of the row's cells
             (``Row.digest``)                                    -- the workbook is built from it
    usage    (app_key, day) -> calls: HTTP calls settled per GMT+8 day -- the daily-quota check
             (added later; CREATE IF NOT EXISTS gives older journals the table as they open)
    minutes  (run_id, minute) -> calls: HTTP calls settled per minute of a run -- the
             workbook's calls-per-minute chart (counted in memory, written with the report)
    leases   one row per sending run: app key, its limit, renewed every half second -- the
             runs sending for one app key share its quota (``RunJournal.share``)
    reservations  one row per unfinished run: the calls it planned at its pre-flight and has
             made so far -- runs started together do not all take the same daily quota
             (``RunJournal.reserve``)

A payload is *claimed* before its first call: in one ``BEGIN IMMEDIATE`` transaction the run
reads what the journal holds for it and, if ``refusal`` allows, marks it ``in_flight`` under its
own run id. Every run on the journal goes through that one write lock, so two runs holding the
same rows (the same file twice, or two different files) never both send a payload. The outcome
is committed as soon as it is known, so ``kill -9`` at any moment loses nothing committed. A call
whose answer was lost is settled ``unknown``; one in flight when its run died stays
``in_flight``; both are sent again only with ``--resend-unknown``. A claim the run gives back
unsent (it stopped first) restores what the journal held before.

WAL with ``synchronous=NORMAL`` keeps a commit at tens of microseconds; a power cut may lose the
last few. The first open of a journal (creating the file and its tables) is serialized by an
advisory lock on ``<journal>.lock``, so runs started together on a new journal all proceed.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from importer.errors import JournalError
from importer.i18n import _
from importer.journal._base import (
    BEAT_S,
    HISTORY_COLUMNS,
    KILLED,
    LEASE_STALE_S,
    CallState,
    Journal,
    PastRun,
    PriorCall,
    QuotaView,
    RunEnd,
    RunJournal,
    Settled,
    being_imported,
    end_columns,
    input_locked,
    quota_day,
    run_alive,
    wrong_version,
)
from importer.processes import pid_alive
from importer.rows import Outcome, Status

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

BUSY_TIMEOUT_S = 30.0  # how long a run waits for another one's write before giving up
SCHEMA_NAME = "top-import-journal"
SCHEMA_VERSION = "1"

# calls.payload_hash holds a row's key (RequestRecord.row_key: the payload's hash, or the
# identity fields' when the spec names them); the column keeps its name for existing journals
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
    started_at REAL NOT NULL, finished_at REAL, beat_at REAL,
    exit_code INTEGER, counts TEXT, workbook TEXT
);
CREATE INDEX IF NOT EXISTS runs_live ON runs (input_key, finished_at);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL, source_row INTEGER NOT NULL, status TEXT NOT NULL,
    code TEXT, msg TEXT, sub_code TEXT, sub_msg TEXT, request_id TEXT, system_time TEXT,
    attempts INTEGER, elapsed_ms INTEGER, error TEXT, row_digest INTEGER, sent INTEGER,
    PRIMARY KEY (run_id, source_row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    app_key TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (app_key, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minutes (
    run_id INTEGER NOT NULL, minute INTEGER NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (run_id, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    run_id INTEGER PRIMARY KEY, app_key TEXT NOT NULL, qps REAL NOT NULL,
    since REAL NOT NULL, renewed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    run_id INTEGER PRIMARY KEY, app_key TEXT NOT NULL, day TEXT NOT NULL,
    planned INTEGER NOT NULL, made INTEGER NOT NULL DEFAULT 0
);
"""


def _busy(path: Path, exc: Exception) -> JournalError:
    return JournalError(
        _(
            "Journal {path} is busy: another process held its write lock for too long ({why}); "
            "nothing was sent: try again when it has finished."
        ).format(path=path, why=exc)
    )


def _unusable(path: Path, exc: Exception) -> str:
    return _(
        "Journal {path} is not a usable top-import journal ({why}); it was left untouched: pass "
        "another --journal path or move the file away."
    ).format(path=path, why=exc)


class SQLiteJournal(Journal):
    """One SQLite file; opened once per process, shared by the runs of its inputs."""

    def __init__(
        self,
        path: Path,
        busy_timeout: float = BUSY_TIMEOUT_S,
        beat_s: float = BEAT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.folder = self.path.parent
        self._busy_timeout = busy_timeout
        self._beat_s = beat_s
        self._clock = clock  # wall time: started, beats, leases, liveness (a fake one in tests)
        if self.path.is_dir():
            raise JournalError(
                _("Journal {path} is a directory; give a file with --journal.").format(
                    path=self.path
                )
            )
        with self._opening():
            self._open()
        self.host = socket.gethostname()

    @contextlib.contextmanager
    def _opening(self) -> Iterator[None]:
        """One process at a time checks, creates and migrates the file (a new journal is empty
        or half-written while another process creates it)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(
                _("Cannot create the journal {path}: {why}; pass another --journal path.").format(
                    path=self.path, why=exc.strerror or exc
                )
            ) from None
        try:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)  # closing releases the lock

    def _open(self) -> None:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            self._check_foreign()
        _private(self.path, create=fresh)
        try:
            if not fresh:
                self._check_schema()  # read-only: a foreign file must not be touched
            self._db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._db.executescript(_SCHEMA)
            for table, column in (
                ("results", "row_digest INTEGER"),
                ("results", "sent INTEGER"),
                ("runs", "beat_at REAL"),
                ("runs", "exit_code INTEGER"),
                ("runs", "counts TEXT"),
                ("runs", "workbook TEXT"),
            ):
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if column.split()[0] not in columns:  # a journal of an earlier version
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            self._db.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                [("schema", SCHEMA_NAME), ("version", SCHEMA_VERSION)],
            )
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise _busy(self.path, exc) from None
            raise JournalError(_unusable(self.path, exc)) from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(_unusable(self.path, exc)) from None

    def _check_foreign(self) -> None:
        with self.path.open("rb") as fh:
            head = fh.read(16)
        if head != b"SQLite format 3\x00":
            raise JournalError(
                _(
                    "Journal {path} is not a top-import journal (not an SQLite file); it was left "
                    "untouched: pass another --journal path or move the file away."
                ).format(path=self.path)
            )

    def _check_schema(self) -> None:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        probe = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout)
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
                _(
                    "Journal {path} is an SQLite file of another program; it was left untouched: "
                    "pass another --journal path."
                ).format(path=self.path)
            )
        if meta.get("version") != SCHEMA_VERSION:
            raise wrong_version(self.path, meta.get("version"), SCHEMA_VERSION)

    def close(self) -> None:
        self._db.close()

    def last_results(self, input_path: Path) -> RunJournal | None:
        """The latest run of ``input_path``, when the journal still holds what it did: its
        workbook could not be written, or it was killed (a run of this host whose process is
        gone is closed here first, as the next run would). None when the workbook holds it."""
        target = Path(input_path).resolve()
        self._close_dead_runs()
        rows = self._db.execute(
            "SELECT run_id, input_path, app_key, method, finished_at, pid, host, "
            "EXISTS (SELECT 1 FROM results WHERE run_id = r.run_id) FROM runs r "
            "ORDER BY run_id DESC"
        ).fetchall()
        for run_id, path, app_key, method, finished_at, pid, host, kept in rows:
            if Path(path).resolve() != target:
                continue
            if finished_at is None:
                raise being_imported(input_path, pid, host, self.path)
            if not kept and finished_at != KILLED:
                return None  # it ended well: its workbook holds its results
            return _SQLiteRun(self._db, run_id, app_key, method, host=self.host, path=self.path)
        return None

    def history(self, limit: int = 50) -> list[PastRun]:
        self._close_dead_runs()
        rows = self._db.execute(
            f"SELECT {HISTORY_COLUMNS} FROM runs ORDER BY run_id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [PastRun.from_row(row) for row in rows]

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_errors(self.path)

    def _close_dead_runs(self) -> None:
        """Mark the runs found dead as ended (``KILLED``)."""
        with _immediate(self._db, self.path):
            _close_dead_runs(self._db, self.host, self._clock())

    def start_run(
        self,
        *,
        input_path: str,
        input_key: str,
        app_key: str,
        method: str,
        resend_unknown: bool = False,
        resend_success: bool = False,
    ) -> RunJournal:
        db = self._db
        host = self.host
        with _immediate(db, self.path):
            _close_dead_runs(db, host, self._clock())
            for pid, other_host, started, other_input in db.execute(
                "SELECT pid, host, started_at, input_path FROM runs "
                "WHERE input_key = ? AND finished_at IS NULL",
                (input_key,),
            ).fetchall():
                raise input_locked(input_path, other_input, self.path, pid, other_host, started)
            db.execute("DELETE FROM leases WHERE renewed_at < ?", (self._clock() - 60,))
            db.execute(
                "DELETE FROM reservations WHERE run_id NOT IN "
                "(SELECT run_id FROM runs WHERE finished_at IS NULL)"
            )
            # Results kept by earlier runs of this input (killed, or whose workbook could not be
            # written) are superseded by this run's.
            for table in ("results", "minutes"):
                db.execute(
                    f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM runs "
                    "WHERE input_path = ? AND finished_at IS NOT NULL)",
                    (input_path,),
                )
            now = self._clock()
            cur = db.execute(
                "INSERT INTO runs (input_key, input_path, app_key, method, pid, host, "
                "started_at, beat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (input_key, input_path, app_key, method, os.getpid(), host, now, now),
            )
            run_id = cur.lastrowid
        return _SQLiteRun(
            db,
            int(run_id or 0),
            app_key,
            method,
            host=host,
            path=self.path,
            resend_unknown=resend_unknown,
            resend_success=resend_success,
            beat_s=self._beat_s,
            busy_timeout=self._busy_timeout,
            clock=self._clock,
        )


class _SQLiteRun(RunJournal):
    """One run's rows in the SQLite journal; a thread of its own beats its heartbeat."""

    def __init__(
        self,
        db: sqlite3.Connection,
        run_id: int,
        app_key: str,
        method: str,
        *,
        host: str = "",
        path: Path = Path("journal"),
        resend_unknown: bool = False,
        resend_success: bool = False,
        beat_s: float | None = None,
        busy_timeout: float = BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            run_id,
            app_key,
            method,
            resend_unknown=resend_unknown,
            resend_success=resend_success,
            clock=clock,
        )
        self._db = db
        self._path = path  # for messages
        self._host = host or socket.gethostname()
        self._heart = (
            None if beat_s is None else _Heartbeat(path, run_id, beat_s, busy_timeout, clock)
        )

    def _alive(
        self, unfinished: bool, host: str, pid: int, beat_at: float | None, now: float
    ) -> bool:
        if not unfinished:  # the common case: no process to look at
            return False
        gone = host == self._host and not pid_alive(pid)
        return run_alive(unfinished=True, beat_at=beat_at, now=now, pid_gone=gone)

    def prior(self, row_key: str) -> PriorCall | None:
        row = self._db.execute(_PRIOR, (*self._key, row_key)).fetchone()
        if row is None:
            return None
        state, request_id, system_time, finished_at, run_id, unfinished, path, pid, host = row[:9]
        return PriorCall(
            state,
            request_id or "",
            system_time or "",
            finished_at,
            run_id,
            self._alive(unfinished, host, pid, row[11], self._clock()),
            path or "",
            pid,
            run_ended=row[9] if row[9] is not None else (None if unfinished else 0.0),
            run_started=row[10],
        )

    def _begin(self, immediate: bool) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except sqlite3.OperationalError as exc:
            raise _busy(self._path, exc) from None

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        _rollback(self._db)

    def _claim(self, row_key: str) -> None:
        self._db.execute(_CLAIM, (*self._key, row_key, self.run_id))

    def _release(self, row_key: str, before: PriorCall | None) -> None:
        if before is None:
            self._db.execute(_FORGET_CALL, (*self._key, row_key, self.run_id))
        else:
            restore = (before.state, before.run_id, *self._key, row_key, self.run_id)
            self._db.execute(_RESTORE_CALL, restore)

    def _settle_calls(self, states: Sequence[CallState], now: float) -> None:
        self._db.executemany(
            _SETTLE_CALL,
            [
                (request_id, system_time, now, self.run_id, state, *self._key, row_key, state)
                for row_key, state, request_id, system_time in states
            ],
        )

    def _count_calls(self, day: str, calls: int) -> None:
        self._db.execute(_ADD_USAGE, (self._key[0], day, calls))
        self._db.execute(_MADE, (calls, self.run_id))

    def _add_results(self, outcomes: Sequence[Settled]) -> None:
        self._db.executemany(
            _INSERT_RESULT,
            [(self.run_id, row, *o.values(), d, o.sent) for row, _key, o, d in outcomes],
        )

    def _add_minutes(self, minutes: Sequence[tuple[int, int]]) -> None:
        with _plain(self._db):
            self._db.executemany(_ADD_MINUTE, [(self.run_id, m, n) for m, n in minutes])

    def _minutes_recorded(self) -> list[tuple[float, int]]:
        rows = self._db.execute(
            "SELECT minute, calls FROM minutes WHERE run_id = ? ORDER BY minute", (self.run_id,)
        )
        return [(minute * 60.0, calls) for minute, calls in rows]

    def mark_done(
        self, source_row: int, row_key: str, outcome: Outcome, digest: int | None = None
    ) -> None:
        db = self._db
        with _immediate(db, self._path):
            db.execute(_MARK_DONE, (*self._key, row_key, self._clock(), self.run_id))
            db.execute(
                _INSERT_RESULT, (self.run_id, source_row, *outcome.values(), digest, outcome.sent)
            )

    def paired_results(self) -> Iterator[tuple[int, int | None, Outcome]]:
        cur = self._db.execute(
            "SELECT source_row, row_digest, status, code, msg, sub_code, sub_msg, request_id, "
            "system_time, attempts, elapsed_ms, error, sent FROM results WHERE run_id = ? "
            "ORDER BY source_row",
            (self.run_id,),
        )
        for row in cur:
            outcome = Outcome(Status(row[2]), *(v if v is not None else "" for v in row[3:12]))
            outcome.sent = row[12]  # None: every attempt left the machine (or an older journal)
            yield row[0], row[1], outcome

    def share(self, qps: float, now: float) -> tuple[float, int, bool]:
        db, app_key = self._db, self._key[0]
        with _immediate(db, self._path):
            db.execute(
                "INSERT INTO leases (run_id, app_key, qps, since, renewed_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET qps = excluded.qps, renewed_at = excluded.renewed_at",
                (self.run_id, app_key, qps, now, now),
            )
            (since,) = db.execute(
                "SELECT since FROM leases WHERE run_id = ?", (self.run_id,)
            ).fetchone()
            others = db.execute(
                "SELECT qps, renewed_at FROM leases "
                "WHERE app_key = ? AND run_id != ? AND renewed_at >= ?",
                (app_key, self.run_id, now - LEASE_STALE_S),
            ).fetchall()
        seen = all(renewed >= since for _qps, renewed in others)
        return min((q for q, _renewed in others), default=math.inf), len(others) + 1, seen

    def reserve(self, calls: int, now: float) -> QuotaView:
        db, app_key, day = self._db, self._key[0], quota_day(now)
        with _immediate(db, self._path):
            (used,) = db.execute(
                "SELECT coalesce(sum(calls), 0) FROM usage WHERE app_key = ? AND day = ?",
                (app_key, day),
            ).fetchone()
            held = db.execute(
                "SELECT r.run_id, max(0, r.planned - r.made), r.day, u.pid, u.host, u.beat_at "
                "FROM reservations r JOIN runs u ON u.run_id = r.run_id "
                "WHERE r.app_key = ? AND r.run_id != ? AND u.finished_at IS NULL",
                (app_key, self.run_id),
            ).fetchall()
            leases = dict(
                db.execute(
                    "SELECT run_id, qps FROM leases "
                    "WHERE app_key = ? AND run_id != ? AND renewed_at >= ?",
                    (app_key, self.run_id, now - LEASE_STALE_S),
                ).fetchall()
            )
            db.execute(
                "INSERT OR REPLACE INTO reservations (run_id, app_key, day, planned, made) "
                "VALUES (?, ?, ?, ?, 0)",
                (self.run_id, app_key, day, calls),
            )
        live = [
            (run_id, left, held_day)
            for run_id, left, held_day, pid, host, beat_at in held
            if self._alive(True, host, pid, beat_at, now)
        ]
        today = [(run_id, left) for run_id, left, held_day in live if held_day == day]
        sending = set(leases) | {run_id for run_id, left, _day in live if left}
        return QuotaView(
            used=int(used),
            reserved=sum(left for _run, left in today),
            reserving=sum(1 for _run, left in today if left),
            sending=len(sending),
            lowest=min(leases.values(), default=math.inf),
        )

    def peers(self, now: float) -> float | None:
        (lowest,) = self._db.execute(
            "SELECT min(qps) FROM leases WHERE app_key = ? AND run_id != ? AND renewed_at >= ?",
            (self._key[0], self.run_id, now - LEASE_STALE_S),
        ).fetchone()
        return lowest

    def end_share(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DELETE FROM leases WHERE run_id = ?", (self.run_id,))

    def calls_on(self, day: str) -> int:
        row = self._db.execute(
            "SELECT calls FROM usage WHERE app_key = ? AND day = ?", (self._key[0], day)
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(self, keep_results: bool = False, end: RunEnd | None = None) -> None:
        if self._heart is not None:
            self._heart.stop()
        if keep_results:
            with contextlib.suppress(sqlite3.Error):
                self._save_minutes()
        db = self._db
        with _plain(db):  # one failure must not leave the shared connection mid-way
            if not keep_results:
                db.execute("DELETE FROM results WHERE run_id = ?", (self.run_id,))
                db.execute("DELETE FROM minutes WHERE run_id = ?", (self.run_id,))
            db.execute("DELETE FROM reservations WHERE run_id = ?", (self.run_id,))
            db.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, counts = ?, workbook = ? "
                "WHERE run_id = ?",
                (self._clock(), *end_columns(end), self.run_id),
            )


class _Heartbeat:
    """Tells the journal every ``beat_s`` that a run is alive, from a thread with a connection
    of its own: the run's own thread may be busy for minutes (a pre-flight over a million
    rows, the workbook), and a run silent for ``BEAT_STALE_S`` is judged dead on any host."""

    def __init__(
        self,
        path: Path,
        run_id: int,
        beat_s: float,
        busy_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path, self._run_id, self._beat_s = path, run_id, beat_s
        self._busy_timeout, self._clock = busy_timeout, clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="journal-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            db = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error:
            return  # the run's own writes say what is wrong with the journal
        try:
            while not self._stopped.wait(self._beat_s):
                with contextlib.suppress(sqlite3.Error):  # busy or full: beat again next time
                    db.execute(
                        "UPDATE runs SET beat_at = ? WHERE run_id = ? AND finished_at IS NULL",
                        (self._clock(), self._run_id),
                    )
        finally:
            db.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """A write transaction taken at once (``BEGIN IMMEDIATE``: read then write, no other run's
    write in between), committed at the end of the block, rolled back if it raises; a journal
    another process holds too long is a ``JournalError`` sentence."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise _busy(path, exc) from None
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


@contextlib.contextmanager
def _plain(db: sqlite3.Connection) -> Iterator[None]:
    """A transaction that takes the write lock at its first write (``BEGIN``)."""
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back, where SQLite has not already (it does itself on a full disk): the error
    that made the caller roll back is the one to report, never "no transaction is active"."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


@contextlib.contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Any SQLite error inside (a damaged page met mid-run, a full disk) as one ``JournalError``
    sentence naming the journal and what to do, never a traceback."""
    try:
        yield
    except sqlite3.Error as exc:
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            raise JournalError(
                _(
                    "Journal {path}: the disk is full ({why}); free some space and run the same "
                    "command again: what was recorded is kept, rows in flight are unknown."
                ).format(path=path, why=exc)
            ) from None
        raise JournalError(
            _(
                "Journal {path} is damaged ({why}); the run stopped there: move the file away "
                "(keep it, it records what was sent) and run with another --journal or a backup."
            ).format(path=path, why=exc)
        ) from None


def _private(path: Path, create: bool) -> None:
    """The journal holds every payload sent: 0600, made so before SQLite opens it (SQLite gives
    its ``-wal`` and ``-shm`` files the database's mode); a journal left 0644 by an earlier
    version is made 0600 too, where this user owns it."""
    try:
        if create:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for side in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if side.exists() and side.stat().st_mode & 0o077:
                side.chmod(0o600)
    except OSError:  # another user's journal, or a read-only folder: SQLite says what it can
        pass


def _close_dead_runs(db: sqlite3.Connection, host: str, now: float) -> None:
    """Inside a write transaction: the unfinished runs found dead (``run_alive``: silent too
    long on any host, or their process gone on this one) end, as ``KILLED``; their locks no
    longer block and what they held in flight is unknown."""
    for run_id, pid, run_host, beat_at in db.execute(
        "SELECT run_id, pid, host, beat_at FROM runs WHERE finished_at IS NULL"
    ).fetchall():
        gone = run_host == host and not pid_alive(pid)
        if not run_alive(unfinished=True, beat_at=beat_at, now=now, pid_gone=gone):
            db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (KILLED, run_id))


_ADD_MINUTE = (
    "INSERT INTO minutes (run_id, minute, calls) VALUES (?, ?, ?) "
    "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls"
)
_ADD_USAGE = (
    "INSERT INTO usage (app_key, day, calls) VALUES (?, ?, ?) "
    "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls"
)
_MADE = "UPDATE reservations SET made = made + ? WHERE run_id = ?"
_PRIOR = (
    "SELECT c.state, c.request_id, c.system_time, c.finished_at, c.run_id, "
    "r.run_id IS NOT NULL AND r.finished_at IS NULL, r.input_path, r.pid, r.host, "
    "r.finished_at, r.started_at, r.beat_at "
    "FROM calls c LEFT JOIN runs r ON r.run_id = c.run_id "
    "WHERE c.app_key = ? AND c.method = ? AND c.payload_hash = ?"
)
_MARK_DONE = (
    "INSERT INTO calls (app_key, method, payload_hash, state, finished_at, run_id) "
    "VALUES (?, ?, ?, 'success', ?, ?) "
    "ON CONFLICT DO UPDATE SET state = 'success', finished_at = excluded.finished_at, "
    "run_id = excluded.run_id WHERE state != 'success'"
)
_CLAIM = (
    "INSERT INTO calls (app_key, method, payload_hash, state, run_id) "
    "VALUES (?, ?, ?, 'in_flight', ?) "
    # A success stays a success: --no-resume may send it again, but resume must not.
    "ON CONFLICT DO UPDATE SET run_id = excluded.run_id, "
    "state = CASE state WHEN 'success' THEN 'success' ELSE 'in_flight' END"
)
# A claim given back unsent: the journal holds again what it held before (or nothing).
_FORGET_CALL = (
    "DELETE FROM calls WHERE app_key = ? AND method = ? AND payload_hash = ? AND run_id = ? "
    "AND state = 'in_flight'"
)
_RESTORE_CALL = (
    "UPDATE calls SET state = ?, run_id = ? "
    "WHERE app_key = ? AND method = ? AND payload_hash = ? AND run_id = ? AND state = 'in_flight'"
)
_SETTLE_CALL = (
    "UPDATE calls SET request_id = ?, system_time = ?, finished_at = ?, run_id = ?, state = ? "
    "WHERE app_key = ? AND method = ? AND payload_hash = ? "
    # a success stays a success (and keeps its request_id)
    "AND (state != 'success' OR ? = 'success')"
)
_INSERT_RESULT = (
    "INSERT OR REPLACE INTO results (run_id, source_row, status, code, msg, sub_code, sub_msg, "
    "request_id, system_time, attempts, elapsed_ms, error, row_digest, sent) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
