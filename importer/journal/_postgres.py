"""The PostgreSQL journal: the same tables as the SQLite one, on a server several hosts share.

``--journal postgresql://user@host:5432/db`` (or ``TOP_JOURNAL``, ``journal`` in importer.toml):
every host that sends for one app key on one database shares never-twice, the input locks, the
quota leases and the daily usage. What differs from SQLite, and why:

- **The write lock.** SQLite has one (``BEGIN IMMEDIATE``); here a batch that claims takes a
  transaction advisory lock on its app key and method (``pg_advisory_xact_lock``), so two hosts
  claiming the same new payload are one after the other, and the second sees the first's claim.
- **Liveness** is judged on the server: a run holds a session advisory lock (taken by its
  heartbeat's connection) for as long as it lives, and beats ``beat_at`` on the server's clock
  (``clock_timestamp()``). A process killed on any host closes its connections, so the server
  drops its lock at once: within seconds its input lock and quota lease are free for the other
  hosts and its in-flight claims are ``unknown`` (never resent, never locked for ever). A host
  that vanishes without closing its connections is judged dead once its beat is
  ``BEAT_STALE_S`` old, whether or not the server has noticed its connections are gone.
- **Fail closed.** Any error of the connection mid-run is ``JournalLost`` (exit 3): no claim,
  no call. The connections give up after ``NETWORK_TIMEOUT_S`` of silence (``tcp_user_timeout``
  and keepalives), so a network cut stops a run within seconds, and a lease not renewed for
  ``LEASE_STALE_S`` is no longer counted by the others.
- **Round trips.** A run's claims and outcomes are committed by a writer thread (``writers``
  in ``_base``), so the event loop never waits for the network, and a batch is one statement:
  its claims of new payloads, call states, usage and results are data-modifying parts of it,
  one round trip and one transaction whatever the number of rows in it. Only the claims of
  payloads the journal already holds (a resume, a failure sent again) take a second
  transaction, which reads them under the claim lock for the rule. The planner's statistics of
  ``calls`` are refreshed as a run makes it grow (``_grew``).

The schema is created on first use under a session advisory lock, with its version in ``meta``,
so eight hosts opening an empty database at once all proceed. The password is never part of
what is shown (``redacted``), and never taken from the command line (``config``).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from importer.errors import JournalError, JournalLost, UsageError
from importer.i18n import _
from importer.journal._base import (
    BEAT_S,
    BEAT_STALE_S,
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
    wrong_version,
)
from importer.processes import pid_alive
from importer.rows import Outcome, Status

SCHEMES = ("postgresql://", "postgres://")
SCHEMA_NAME = "top-import-journal"
SCHEMA_VERSION = "1"
PICTURE_MAX = 500_000  # calls of one app key and method a run's look-ups hold in memory
ANALYZE_AFTER = 1_000  # claims of a run before it first refreshes the planner's view of calls
NETWORK_TIMEOUT_S = 5  # a connection silent this long is lost (a cut cable, a dead server)
# the first key of top-import's advisory locks ("top" in ASCII, then +1 and +2): in LOCK_SPACE
# the second key is 0 for the schema, 1 for starting a run, 2 for the daily quota; in
# LIVE_SPACE a run's id (its liveness); in CLAIM_SPACE a hash of the app key and method
LOCK_SPACE = 0x746F70
LIVE_SPACE = LOCK_SPACE + 1
CLAIM_SPACE = LOCK_SPACE + 2
_NOW = "extract(epoch from clock_timestamp())"  # the server's clock: one clock for every host
_LOCK_HELD = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    f"AND l.classid = {LIVE_SPACE} AND l.objid::bigint = r.run_id AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)
# a run is alive: not finished, its liveness lock held, its beat fresh (on the server's clock)
_ALIVE = f"(r.finished_at IS NULL AND {_LOCK_HELD} AND {_NOW} - r.beat_at <= {BEAT_STALE_S})"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    app_key TEXT NOT NULL, method TEXT NOT NULL, payload_hash TEXT NOT NULL,
    state TEXT NOT NULL, request_id TEXT, system_time TEXT, finished_at DOUBLE PRECISION,
    run_id BIGINT NOT NULL,
    PRIMARY KEY (app_key, method, payload_hash)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id BIGSERIAL PRIMARY KEY, input_key TEXT NOT NULL, input_path TEXT NOT NULL,
    app_key TEXT NOT NULL, method TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
    beat_at DOUBLE PRECISION
);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS exit_code INTEGER,
    ADD COLUMN IF NOT EXISTS counts TEXT, ADD COLUMN IF NOT EXISTS workbook TEXT;
CREATE INDEX IF NOT EXISTS runs_live ON runs (input_key, finished_at);
CREATE TABLE IF NOT EXISTS results (
    run_id BIGINT NOT NULL, source_row INTEGER NOT NULL, status TEXT NOT NULL,
    code TEXT, msg TEXT, sub_code TEXT, sub_msg TEXT, request_id TEXT, system_time TEXT,
    attempts INTEGER, elapsed_ms BIGINT, error TEXT, row_digest BIGINT, sent INTEGER,
    PRIMARY KEY (run_id, source_row)
);
CREATE TABLE IF NOT EXISTS usage (
    app_key TEXT NOT NULL, day TEXT NOT NULL, calls BIGINT NOT NULL,
    PRIMARY KEY (app_key, day)
);
CREATE TABLE IF NOT EXISTS minutes (
    run_id BIGINT NOT NULL, minute BIGINT NOT NULL, calls BIGINT NOT NULL,
    PRIMARY KEY (run_id, minute)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id BIGINT PRIMARY KEY, app_key TEXT NOT NULL, qps DOUBLE PRECISION NOT NULL,
    since DOUBLE PRECISION NOT NULL, renewed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    run_id BIGINT PRIMARY KEY, app_key TEXT NOT NULL, day TEXT NOT NULL,
    planned BIGINT NOT NULL, made BIGINT NOT NULL DEFAULT 0
);
"""


def is_url(target: object) -> bool:
    """Whether ``--journal`` names a PostgreSQL database rather than a file."""
    return isinstance(target, str) and target.lower().startswith(SCHEMES)


def redacted(url: str) -> str:
    """The URL as messages show it: without its password (or any query, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            _(
                "A PostgreSQL journal needs the psycopg driver: pip install "
                "'top-import[postgres]' (or pip install 'psycopg[binary]')."
            )
        ) from None
    return psycopg


def _connect(url: str) -> Any:
    """A connection in autocommit (the journal says BEGIN and COMMIT itself) that gives up on a
    silent network within seconds (fail closed); the password from the URL, ``PGPASSWORD``,
    ``~/.pgpass`` or a ``PGSERVICE``, as libpq finds it."""
    psycopg = _driver()
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=NETWORK_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=1,
        keepalives_interval=1,
        keepalives_count=NETWORK_TIMEOUT_S,
        tcp_user_timeout=NETWORK_TIMEOUT_S * 1000,
        application_name="top-import",
    )


def _why(exc: BaseException) -> str:
    """The driver's words on one line, never the password (libpq does not print it)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class PostgresJournal(Journal):
    """A journal in a PostgreSQL database; opened once per process, shared by its runs."""

    def __init__(
        self,
        url: str,
        folder: Path = Path("reports"),
        beat_s: float = BEAT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self.path = redacted(url)
        self.folder = Path(folder)
        self._beat_s = beat_s
        self._clock = clock
        self.host = socket.gethostname()
        psycopg = _driver()
        try:
            self._db = _connect(url)
        except psycopg.Error as exc:
            raise JournalError(
                _(
                    "Cannot open the journal {journal}: {why}; check the URL, that the server "
                    "runs and that the password is in PGPASSWORD, ~/.pgpass or importer.toml. "
                    "Nothing was sent."
                ).format(journal=self.path, why=_why(exc))
            ) from None
        with self.errors():
            self._create()

    def _create(self) -> None:
        """The tables, once, whoever opens first: under a session advisory lock, so hosts that
        open an empty database together wait for the first one and find its tables."""
        db = self._db
        db.execute("SELECT pg_advisory_lock(%s, 0)", (LOCK_SPACE,))
        try:
            db.execute(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                db.execute(
                    "INSERT INTO meta VALUES ('schema', %s), ('version', %s) "
                    "ON CONFLICT DO NOTHING",
                    (SCHEMA_NAME, SCHEMA_VERSION),
                )
                meta = {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION}
        finally:
            db.execute("SELECT pg_advisory_unlock(%s, 0)", (LOCK_SPACE,))
        if meta.get("schema") != SCHEMA_NAME:
            raise JournalError(
                _(
                    "Journal {journal} holds the tables of another program; it was left "
                    "untouched: give another database."
                ).format(journal=self.path)
            )
        if meta.get("version") != SCHEMA_VERSION:
            raise wrong_version(self.path, meta.get("version"), SCHEMA_VERSION)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        psycopg = _driver()
        try:
            yield
        except psycopg.Error as exc:
            raise lost(self.path, exc) from None

    def _close_dead_runs(self) -> None:
        """Inside a transaction: the unfinished runs found dead (their liveness lock gone, or
        their beat stale, or their process gone on this host) end as ``KILLED``."""
        rows = self._db.execute(
            f"SELECT r.run_id, r.pid, r.host, {_ALIVE} FROM runs r WHERE r.finished_at IS NULL"
        ).fetchall()
        dead = [
            run_id
            for run_id, pid, host, alive in rows
            if not alive or (host == self.host and not pid_alive(pid))
        ]
        if dead:
            self._db.execute(
                "UPDATE runs SET finished_at = %s WHERE run_id = ANY(%s)", (KILLED, dead)
            )

    def last_results(self, input_path: Path) -> RunJournal | None:
        target = str(Path(input_path).resolve())
        with self.errors(), _transaction(self._db):
            self._close_dead_runs()
            rows = self._db.execute(
                "SELECT run_id, input_path, app_key, method, finished_at, pid, host, "
                "EXISTS (SELECT 1 FROM results WHERE run_id = r.run_id) FROM runs r "
                "ORDER BY run_id DESC"
            ).fetchall()
        for run_id, path, app_key, method, finished_at, pid, host, kept in rows:
            if str(Path(path).resolve()) != target:
                continue
            if finished_at is None:
                raise being_imported(input_path, pid, host, self.path)
            if not kept and finished_at != KILLED:
                return None
            return _PostgresRun(self, run_id, app_key, method)
        return None

    def history(self, limit: int = 50) -> list[PastRun]:
        with self.errors(), _transaction(self._db):
            self._close_dead_runs()
            rows = self._db.execute(
                f"SELECT {HISTORY_COLUMNS} FROM runs ORDER BY run_id DESC LIMIT %s", (limit,)
            ).fetchall()
        return [PastRun.from_row(row) for row in rows]

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
        with self.errors():
            # alive before it exists: the heartbeat's connection holds the liveness lock of
            # the run's id, so no other host starting now can judge the new run dead
            (run_id,) = db.execute("SELECT nextval('runs_run_id_seq')").fetchone()
            heart = _Heartbeat(self._url, run_id, self._beat_s)
        try:
            self._insert_run(run_id, input_path, input_key, app_key, method)
        except BaseException:
            heart.stop()
            raise
        return _PostgresRun(
            self,
            run_id,
            app_key,
            method,
            resend_unknown=resend_unknown,
            resend_success=resend_success,
            heart=heart,
        )

    def _insert_run(
        self, run_id: int, input_path: str, input_key: str, app_key: str, method: str
    ) -> None:
        db = self._db
        with self.errors(), _transaction(db):
            # one start at a time on the database: two hosts starting the same input never
            # both find it free
            db.execute("SELECT pg_advisory_xact_lock(%s, 1)", (LOCK_SPACE,))
            self._close_dead_runs()
            for pid, other_host, started, other_input in db.execute(
                "SELECT pid, host, started_at, input_path FROM runs "
                "WHERE input_key = %s AND finished_at IS NULL",
                (input_key,),
            ).fetchall():
                raise input_locked(input_path, other_input, self.path, pid, other_host, started)
            db.execute(f"DELETE FROM leases WHERE renewed_at < {_NOW} - 60")
            db.execute(
                "DELETE FROM reservations WHERE run_id NOT IN "
                "(SELECT run_id FROM runs WHERE finished_at IS NULL)"
            )
            for table in ("results", "minutes"):
                db.execute(
                    f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM runs "
                    "WHERE input_path = %s AND finished_at IS NOT NULL)",
                    (input_path,),
                )
            db.execute(
                "INSERT INTO runs (run_id, input_key, input_path, app_key, method, pid, host, "
                f"started_at, beat_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {_NOW})",
                (
                    run_id,
                    input_key,
                    input_path,
                    app_key,
                    method,
                    os.getpid(),
                    self.host,
                    self._clock(),
                ),
            )


def lost(journal: str, exc: BaseException) -> JournalLost:
    return JournalLost(
        _(
            "The journal {journal} cannot be reached ({why}); the run stopped sending, since no "
            "call can be claimed: rows in flight are unknown, the rest not sent. Run the same "
            "command again once the server is back: it resumes, and sends nothing twice."
        ).format(journal=journal, why=_why(exc))
    )


class _PostgresRun(RunJournal):
    """One run's rows in the PostgreSQL journal. Its batches of claims and outcomes are committed
    by writer threads, each on a connection of its own (``writers``), so the round trips of a
    commit never stall the event loop; its other statements use the journal's connection."""

    # one: a second writer halves the batches and costs more CPU than it saves in waiting
    # (measured 2,000 against 2,130 calls/s on a 20,000-row run)
    writers = 1

    def __init__(
        self,
        journal: PostgresJournal,
        run_id: int,
        app_key: str,
        method: str,
        *,
        resend_unknown: bool = False,
        resend_success: bool = False,
        heart: _Heartbeat | None = None,
    ) -> None:
        super().__init__(
            run_id,
            app_key,
            method,
            resend_unknown=resend_unknown,
            resend_success=resend_success,
            clock=journal._clock,
        )
        self._journal = journal
        self._db = journal._db
        self._host = journal.host
        self._heart = heart
        self._psycopg = _driver()
        self._picture: dict[str, PriorCall] | bool | None = None  # see ``prior``
        self._local = threading.local()  # a writer's connection, batch, and what it claimed
        self._connections: list[Any] = []  # the writers', opened at their first batch
        self._unanalyzed = 0  # claims since the planner's statistics of calls were refreshed
        self._analyze_after = ANALYZE_AFTER
        # the claims of one app key and method, one batch at a time on any host
        self._claim_lock = (CLAIM_SPACE, _lock_key(app_key, method))

    @contextlib.contextmanager
    def _lost(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise lost(self._journal.path, exc) from None

    def _write(self, claims: list[str], outcomes: list[Settled]) -> list[Outcome | None]:
        if self._heart is not None and self._heart.lost is not None:
            # the server no longer knows this run is alive: others may take its place
            raise lost(self._journal.path, self._heart.lost)
        with self._lost():
            verdicts = super()._write(claims, outcomes)
            self._grew(len(claims))
        return verdicts

    # Each writer (and the event loop's thread, when it writes a batch itself) has its own
    # connection and batch: ``_writes``, ``_pending`` and ``_new`` are its.

    @property
    def _writes(self) -> Any:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _connect(self._journal._url)
            with self._lock:
                self._connections.append(db)
        return db

    @property
    def _pending(self) -> _Pending:
        return self._local.pending

    @_pending.setter
    def _pending(self, pending: _Pending | None) -> None:
        self._local.pending = pending

    @property
    def _new(self) -> set[str]:
        return self._local.new

    @_new.setter
    def _new(self, new: set[str]) -> None:
        self._local.new = new

    def _grew(self, claims: int) -> None:
        """Refresh the planner's statistics of ``calls`` as this run makes it grow (at 1,000
        claims, then each time their number doubles): autovacuum analyzes a table about once a
        minute at best, and until then the look-ups in a table that grew from nothing are
        planned as for an empty one (a scan of the app key's calls, not a probe of the key),
        which measured 20 times slower at 20,000 calls. Outside the batch's transaction, so
        no claim lock is held meanwhile."""
        with self._lock:  # two writers may count at once
            self._unanalyzed += claims
            due = self._unanalyzed >= self._analyze_after
            if due:
                self._unanalyzed, self._analyze_after = 0, self._analyze_after * 2
        if due:
            self._writes.execute("ANALYZE calls")

    # A batch is one statement, so one round trip and its own transaction: each of its writes is
    # a data-modifying part of it (``_Pending``). Only a batch that reads before it writes (the
    # rule must see the state of a payload the journal holds) or gives claims back is a
    # transaction of several statements (``_open``).

    def _begin(self, immediate: bool) -> None:
        self._pending = _Pending(immediate)

    def _open(self) -> None:
        pending = self._pending
        if not pending.open:
            self._writes.execute("BEGIN")
            if pending.immediate:
                self._writes.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._claim_lock)
            pending.open = True

    def _commit(self) -> None:
        pending = self._pending
        cursor = None
        if pending.parts:
            cursor = self._writes.execute(*pending.statement())
        if pending.open:
            self._writes.execute("COMMIT")
        self._new = {row[0] for row in cursor.fetchall()} if pending.claims else set()
        self._pending = None

    def _rollback(self) -> None:
        pending = getattr(self._local, "pending", None)
        self._pending = None
        if pending is not None and pending.open:
            with contextlib.suppress(Exception):
                self._writes.execute("ROLLBACK")

    def _prior_of(self, row: tuple) -> PriorCall:
        state, request_id, system_time, finished_at, run_id, alive, path, pid, host = row[1:10]
        unfinished, run_ended, run_started = row[10], row[11], row[12]
        if alive and host == self._host and not pid_alive(pid):
            alive = False
        return PriorCall(
            state,
            request_id or "",
            system_time or "",
            finished_at,
            run_id,
            bool(alive),
            path or "",
            pid or 0,
            run_ended=run_ended if run_ended is not None else (None if unfinished else 0.0),
            run_started=run_started,
        )

    def prior(self, row_key: str) -> PriorCall | None:
        """A look-up (the pre-flight's, the feed's; never the claim's, which reads under the
        claim lock): from a picture of the journal's calls for this app key and method, read
        in one statement at the first look-up, so a pass over a million rows is not a million
        round trips. What changed since is found by the claim, which decides."""
        if self._picture is None:
            self._picture = self._take_picture()
        if self._picture is not False:
            return self._picture.get(row_key)
        with self._lost():
            return self._look_up(self._db, [row_key]).get(row_key)

    def _take_picture(self) -> dict[str, PriorCall] | bool:
        with self._lost():
            (count,) = self._db.execute(
                "SELECT count(*) FROM calls WHERE app_key = %s AND method = %s", self._key
            ).fetchone()
            # a journal that holds many calls already has its statistics
            self._analyze_after = max(ANALYZE_AFTER, count)
            if count > PICTURE_MAX:
                return False  # too many to hold: one look-up a row
            rows = self._db.execute(_PRIORS_ALL, self._key).fetchall()
        return {row[0]: self._prior_of(row) for row in rows}

    def _look_up(self, db: Any, row_keys: Sequence[str]) -> dict[str, PriorCall | None]:
        rows = db.execute(_PRIORS, (*self._key, list(row_keys))).fetchall()
        return {row[0]: self._prior_of(row) for row in rows}

    def _priors(self, row_keys: Sequence[str]) -> dict[str, PriorCall | None]:
        self._open()
        return self._look_up(self._writes, row_keys)

    def _claim_new(self, row_keys: Sequence[str]) -> Callable[[], Sequence[str]]:
        keys = list(row_keys)
        self._pending.add(_NEW, (*self._key, self.run_id, keys, *self._claim_lock))
        self._pending.claims = True
        return lambda: [row_key for row_key in keys if row_key not in self._new]

    def _claim(self, row_key: str) -> None:
        self._claim_all([row_key])

    def _claim_all(self, row_keys: Sequence[str]) -> None:
        self._open()
        self._writes.execute(_CLAIM, (*self._key, self.run_id, list(row_keys)))

    def _release(self, row_key: str, before: PriorCall | None) -> None:
        self._open()
        if before is None:
            self._writes.execute(_FORGET_CALL, (*self._key, row_key, self.run_id))
        else:
            restore = (before.state, before.run_id, *self._key, row_key, self.run_id)
            self._writes.execute(_RESTORE_CALL, restore)

    def _settle_calls(self, states: Sequence[CallState], now: float) -> None:
        last = {row_key: (state, rid, st) for row_key, state, rid, st in states}
        columns = zip(*((key, *rest) for key, rest in last.items()), strict=True)
        self._pending.add(_SETTLED, (now, self.run_id, *map(list, columns), *self._key))

    def _count_calls(self, day: str, calls: int) -> None:
        self._pending.add(_USED, (self._key[0], day, calls, calls, self.run_id))

    def _add_results(self, outcomes: Sequence[Settled]) -> None:
        # a row settled twice in one batch: the last counts (a statement writes a row once)
        last = {row: (row, *o.values(), d, o.sent) for row, _key, o, d in outcomes}
        columns = zip(*last.values(), strict=True)
        self._pending.add(_KEPT, (self.run_id, *map(list, columns)))

    def _add_minutes(self, minutes: Sequence[tuple[int, int]]) -> None:
        with self._lost(), _transaction(self._db), self._db.cursor() as cur:
            cur.executemany(_ADD_MINUTE, [(self.run_id, m, n) for m, n in minutes])

    def _minutes_recorded(self) -> list[tuple[float, int]]:
        with self._lost():
            rows = self._db.execute(
                "SELECT minute, calls FROM minutes WHERE run_id = %s ORDER BY minute",
                (self.run_id,),
            ).fetchall()
        return [(minute * 60.0, calls) for minute, calls in rows]

    def mark_done(
        self, source_row: int, row_key: str, outcome: Outcome, digest: int | None = None
    ) -> None:
        db = self._db
        with self._lost(), _transaction(db):
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._claim_lock)
            db.execute(_MARK_DONE, (*self._key, row_key, self._clock(), self.run_id))
            db.execute(
                _INSERT_RESULT, (self.run_id, source_row, *outcome.values(), digest, outcome.sent)
            )

    def paired_results(self) -> Iterator[tuple[int, int | None, Outcome]]:
        with self._lost():
            rows = self._db.execute(
                "SELECT source_row, row_digest, status, code, msg, sub_code, sub_msg, "
                "request_id, system_time, attempts, elapsed_ms, error, sent FROM results "
                "WHERE run_id = %s ORDER BY source_row",
                (self.run_id,),
            ).fetchall()
        for row in rows:
            outcome = Outcome(Status(row[2]), *(v if v is not None else "" for v in row[3:12]))
            outcome.sent = row[12]
            yield row[0], row[1], outcome

    # -- the quota, on the server's clock ---------------------------------------------------------

    def share(self, qps: float, now: float) -> tuple[float, int, bool]:
        db, app_key = self._db, self._key[0]
        with self._lost(), _transaction(db):
            (since,) = db.execute(
                "INSERT INTO leases (run_id, app_key, qps, since, renewed_at) "
                f"VALUES (%s, %s, %s, {_NOW}, {_NOW}) ON CONFLICT (run_id) DO UPDATE SET "
                "qps = excluded.qps, renewed_at = excluded.renewed_at RETURNING since",
                (self.run_id, app_key, qps),
            ).fetchone()
            others = db.execute(
                "SELECT l.qps, l.renewed_at FROM leases l JOIN runs r ON r.run_id = l.run_id "
                f"WHERE l.app_key = %s AND l.run_id != %s AND l.renewed_at >= {_NOW} - %s "
                f"AND {_ALIVE}",
                (app_key, self.run_id, LEASE_STALE_S),
            ).fetchall()
        seen = all(renewed >= since for _qps, renewed in others)
        return min((q for q, _renewed in others), default=math.inf), len(others) + 1, seen

    def reserve(self, calls: int, now: float) -> QuotaView:
        db, app_key, day = self._db, self._key[0], quota_day(now)
        with self._lost(), _transaction(db):
            db.execute("SELECT pg_advisory_xact_lock(%s, 2)", (LOCK_SPACE,))
            # one statement, so one snapshot: read by statements one after another, the usage
            # and the reservations could each be of another moment (a call counted in between
            # would be in neither, or in both)
            rows = db.execute(
                _QUOTA_PICTURE, (app_key, day, app_key, self.run_id, app_key, self.run_id,
                                 LEASE_STALE_S),
            ).fetchall()  # fmt: skip
            used = next(int(r[2]) for r in rows if r[0] == "used")
            held = [(r[1], int(r[2]), r[3], r[4], r[5]) for r in rows if r[0] == "held"]
            leases = {r[1]: r[2] for r in rows if r[0] == "lease"}
            db.execute(
                "INSERT INTO reservations (run_id, app_key, day, planned, made) "
                "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (run_id) DO UPDATE SET "
                "app_key = excluded.app_key, day = excluded.day, planned = excluded.planned, "
                "made = 0",
                (self.run_id, app_key, day, calls),
            )
        live = [
            (run_id, left, held_day)
            for run_id, left, held_day, pid, host in held
            if not (host == self._host and not pid_alive(pid))
        ]
        today = [(run_id, left) for run_id, left, held_day in live if held_day == day]
        sending = set(leases) | {run_id for run_id, left, _day in live if left}
        return QuotaView(
            used=int(used),
            reserved=int(sum(left for _run, left in today)),
            reserving=sum(1 for _run, left in today if left),
            sending=len(sending),
            lowest=min(leases.values(), default=math.inf),
        )

    def peers(self, now: float) -> float | None:
        with self._lost():
            (lowest,) = self._db.execute(
                "SELECT min(l.qps) FROM leases l JOIN runs r ON r.run_id = l.run_id "
                f"WHERE l.app_key = %s AND l.run_id != %s AND l.renewed_at >= {_NOW} - %s "
                f"AND {_ALIVE}",
                (self._key[0], self.run_id, LEASE_STALE_S),
            ).fetchone()
        return lowest

    def end_share(self) -> None:
        with contextlib.suppress(Exception):
            self._db.execute("DELETE FROM leases WHERE run_id = %s", (self.run_id,))

    def calls_on(self, day: str) -> int:
        with self._lost():
            row = self._db.execute(
                "SELECT calls FROM usage WHERE app_key = %s AND day = %s", (self._key[0], day)
            ).fetchone()
        return int(row[0]) if row else 0

    def finish(self, keep_results: bool = False, end: RunEnd | None = None) -> None:
        try:
            with contextlib.suppress(JournalError):  # an error of a batch is the run's to report
                self.close_writer()
            for db in self._connections:
                with contextlib.suppress(Exception):
                    db.close()
            if keep_results:
                with contextlib.suppress(Exception):
                    self._save_minutes()
            db = self._db
            with self._lost(), _transaction(db):
                if not keep_results:
                    db.execute("DELETE FROM results WHERE run_id = %s", (self.run_id,))
                    db.execute("DELETE FROM minutes WHERE run_id = %s", (self.run_id,))
                db.execute("DELETE FROM reservations WHERE run_id = %s", (self.run_id,))
                db.execute("DELETE FROM leases WHERE run_id = %s", (self.run_id,))
                db.execute(
                    "UPDATE runs SET finished_at = %s, exit_code = %s, counts = %s, "
                    "workbook = %s WHERE run_id = %s",
                    (self._clock(), *end_columns(end), self.run_id),
                )
        finally:
            if self._heart is not None:  # its connection's end frees the liveness lock
                self._heart.stop()


class _Heartbeat:
    """Holds a run's liveness lock on a connection of its own and beats ``beat_at`` on the
    server's clock, from a thread: the run's own thread may be busy for minutes. ``lost`` is
    what broke the connection, once it has (the run then stops: the others may judge it dead)."""

    def __init__(self, url: str, run_id: int, beat_s: float) -> None:
        self._run_id, self._beat_s = run_id, beat_s
        self.lost: BaseException | None = None
        self._db = _connect(url)
        self._db.execute("SELECT pg_advisory_lock(%s, %s)", (LIVE_SPACE, run_id))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="journal-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(self._beat_s):
                self._db.execute(
                    f"UPDATE runs SET beat_at = {_NOW} WHERE run_id = %s AND finished_at IS NULL",
                    (self._run_id,),
                )
        except Exception as exc:  # the server or the network went away
            self.lost = exc
        finally:
            with contextlib.suppress(Exception):
                self._db.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


@contextlib.contextmanager
def _transaction(db: Any) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            db.execute("ROLLBACK")
        raise


@dataclass(slots=True)
class _Pending:
    """A batch's writes, sent as one statement at its commit (``statement``)."""

    immediate: bool  # it claims: under the claim lock
    open: bool = False  # an explicit transaction was begun (it read before it wrote)
    claims: bool = False  # its statement returns the payloads it claimed as new
    parts: list[tuple[str, tuple]] = field(default_factory=list)

    def add(self, cte: str, params: tuple) -> None:
        self.parts.append((cte, params))

    def statement(self) -> tuple[str, tuple]:
        after = _AFTER_NEW if self.claims else ""
        ctes = ", ".join(cte.replace("{after}", after) for cte, _params in self.parts)
        main = "SELECT payload_hash FROM new" if self.claims else "SELECT 1"
        return f"WITH {ctes} {main}", tuple(p for _cte, params in self.parts for p in params)


def _lock_key(app_key: str, method: str) -> int:
    """A stable 31-bit number for an app key and method (the second key of its claim lock)."""
    return zlib.crc32(f"{app_key}\x00{method}".encode()) & 0x7FFFFFFF


_PRIORS = (
    "SELECT c.payload_hash, c.state, c.request_id, c.system_time, c.finished_at, c.run_id, "
    f"coalesce({_ALIVE}, false), r.input_path, r.pid, r.host, "
    "r.run_id IS NOT NULL AND r.finished_at IS NULL, r.finished_at, r.started_at "
    "FROM calls c LEFT JOIN runs r ON r.run_id = c.run_id "
    "WHERE c.app_key = %s AND c.method = %s AND c.payload_hash = ANY(%s)"
)
_PRIORS_ALL = _PRIORS.replace(" AND c.payload_hash = ANY(%s)", "")
_CLAIM = (
    "INSERT INTO calls (app_key, method, payload_hash, state, run_id) "
    "SELECT %s, %s, key, 'in_flight', %s FROM unnest(%s::text[]) AS key "
    # A success stays a success: --no-resume may send it again, but resume must not.
    "ON CONFLICT (app_key, method, payload_hash) DO UPDATE SET run_id = excluded.run_id, "
    "state = CASE calls.state WHEN 'success' THEN 'success' ELSE 'in_flight' END"
)
_FORGET_CALL = (
    "DELETE FROM calls WHERE app_key = %s AND method = %s AND payload_hash = %s "
    "AND run_id = %s AND state = 'in_flight'"
)
_RESTORE_CALL = (
    "UPDATE calls SET state = %s, run_id = %s WHERE app_key = %s AND method = %s "
    "AND payload_hash = %s AND run_id = %s AND state = 'in_flight'"
)
_ADD_MINUTE = (
    "INSERT INTO minutes (run_id, minute, calls) VALUES (%s, %s, %s) "
    "ON CONFLICT (run_id, minute) DO UPDATE SET calls = minutes.calls + excluded.calls"
)
_MARK_DONE = (
    "INSERT INTO calls (app_key, method, payload_hash, state, finished_at, run_id) "
    "VALUES (%s, %s, %s, 'success', %s, %s) "
    "ON CONFLICT (app_key, method, payload_hash) DO UPDATE SET state = 'success', "
    "finished_at = excluded.finished_at, run_id = excluded.run_id "
    "WHERE calls.state != 'success'"
)
_RESULT_COLUMNS = (
    "INSERT INTO results (run_id, source_row, status, code, msg, sub_code, sub_msg, "
    "request_id, system_time, attempts, elapsed_ms, error, row_digest, sent) "
)
_RESULT_CONFLICT = (
    "ON CONFLICT (run_id, source_row) DO UPDATE SET status = excluded.status, "
    "code = excluded.code, msg = excluded.msg, sub_code = excluded.sub_code, "
    "sub_msg = excluded.sub_msg, request_id = excluded.request_id, "
    "system_time = excluded.system_time, attempts = excluded.attempts, "
    "elapsed_ms = excluded.elapsed_ms, error = excluded.error, "
    "row_digest = excluded.row_digest, sent = excluded.sent"
)
_INSERT_RESULT = (
    f"{_RESULT_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    f"{_RESULT_CONFLICT}"
)

# The parts of a batch's statement (``_Pending``), each a data-modifying CTE. When the batch
# claims, ``new`` takes the claim lock before its first insert, and every other part reads its
# count (``{after}``) so it writes nothing before then: every statement that waits for the
# claim lock holds no lock yet, so two batches (of any hosts) never wait for each other in a
# circle, whatever order the server would run the parts in.
# Claims each new payload (one the journal holds nothing of) under the claim lock, and returns
# the payloads it claimed; the others are judged by a second transaction.
_NEW = (
    "new AS (INSERT INTO calls (app_key, method, payload_hash, state, run_id) "
    "SELECT %s, %s, key, 'in_flight', %s FROM unnest(%b::text[]) AS key, "
    "(SELECT pg_advisory_xact_lock(%s, %s)) AS claim_lock "
    "ON CONFLICT (app_key, method, payload_hash) DO NOTHING RETURNING payload_hash)"
)
_AFTER_NEW = ", (SELECT count(*) FROM new) AS after_new"
_SETTLED = (
    "settled AS (UPDATE calls c SET request_id = v.request_id, system_time = v.system_time, "
    "finished_at = %s, run_id = %s, state = v.state "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[]) "
    "AS v(payload_hash, state, request_id, system_time){after} "
    "WHERE c.app_key = %s AND c.method = %s AND c.payload_hash = v.payload_hash "
    # a success stays a success
    "AND (c.state != 'success' OR v.state = 'success'))"
)
_USED = (
    "used AS (INSERT INTO usage (app_key, day, calls) SELECT %s, %s, %s "
    "FROM (SELECT 1) AS one{after} "
    "ON CONFLICT (app_key, day) DO UPDATE SET calls = usage.calls + excluded.calls), "
    "made AS (UPDATE reservations SET made = made + %s FROM (SELECT 1) AS one{after} "
    "WHERE run_id = %s)"
)
_KEPT = (
    f"kept AS ({_RESULT_COLUMNS} SELECT %s, u.* FROM unnest(%b::int[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::bigint[], "
    "%b::text[], %b::bigint[], %b::int[]) AS u{after} "
    f"{_RESULT_CONFLICT})"
)
# What the pre-flight's reservation reads, in one snapshot: the app key's usage of the day, the
# calls the other live runs still plan, and their leases.
_QUOTA_PICTURE = (
    "SELECT 'used', NULL::bigint, coalesce(sum(calls), 0)::double precision, NULL::text, "
    "NULL::integer, NULL::text FROM usage WHERE app_key = %s AND day = %s "
    "UNION ALL SELECT 'held', x.run_id, greatest(0, x.planned - x.made)::double precision, "
    "x.day, r.pid, r.host FROM reservations x JOIN runs r ON r.run_id = x.run_id "
    f"WHERE x.app_key = %s AND x.run_id != %s AND {_ALIVE} "
    "UNION ALL SELECT 'lease', l.run_id, l.qps, NULL, NULL, NULL FROM leases l "
    "JOIN runs r ON r.run_id = l.run_id WHERE l.app_key = %s AND l.run_id != %s "
    f"AND l.renewed_at >= {_NOW} - %s AND {_ALIVE}"
)
