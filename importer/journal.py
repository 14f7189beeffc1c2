"""The resume journal: SQLite, one row per payload ever sent, committed as each outcome is known.

Tables::

    meta     schema name and version (a foreign SQLite file is refused, never altered)
    calls    (app_key, method, payload_hash) -> state in_flight | success | failed | unknown,
             request_id, system_time, finished_at, run_id          -- what resume reads
    runs     one row per run: input, pid, host, started/finished   -- also the lock
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

import asyncio
import contextlib
import math
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from importer.errors import JournalError, LockedError
from importer.processes import pid_alive
from importer.protocol import GMT8, platform_stamp
from importer.rows import Outcome, Status
from importer.steps import CHECK_ADVICE

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

LEASE_STALE_S = 3.0  # a quota lease not renewed for this long belongs to a run that died
# the states of a call that may or may not have reached the platform: its answer was lost, or
# its run died with it in flight
UNKNOWN_STATES = frozenset({"in_flight", "unknown"})
KILLED = 0  # runs.finished_at of a run whose process died: found so by a later run or report
BUSY_TIMEOUT_S = 30.0  # how long a run waits for another one's write before giving up
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
    attempts INTEGER, elapsed_ms INTEGER, error TEXT, row_digest INTEGER,
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
        f"Journal {path} is busy: another process held its write lock for too long ({exc}); "
        "nothing was sent: try again when it has finished."
    )


def quota_day(epoch: float) -> str:
    """The platform's quota day of a moment: its date in GMT+8 (quotas reset at 00:00 there)."""
    return datetime.fromtimestamp(epoch, GMT8).strftime("%Y-%m-%d")


KEPT_UNKNOWN_NOTE = (
    "an earlier call of this payload got no answer (its outcome is unknown), so it was not sent "
    f"again: {CHECK_ADVICE}"
)


@dataclass(frozen=True, slots=True)
class QuotaView:
    """The app key's daily quota and rate as a run's pre-flight finds them (``reserve``)."""

    used: int  # HTTP calls settled today (GMT+8) by any run
    reserved: int  # calls the other live runs planned at their pre-flight and have not made yet
    reserving: int  # ... how many runs those are
    sending: int  # other live runs sending, or about to send, for the app key
    lowest: float  # the lowest limit among those of them already sending (inf: none is)


@dataclass(frozen=True, slots=True)
class PriorCall:
    """What the journal holds for a payload, and whether the run holding it is still going."""

    state: str  # in_flight | success | failed | unknown
    request_id: str
    system_time: str
    finished_at: float | None
    run_id: int
    live: bool = False  # the run that holds it has not finished (and, on this host, is alive)
    input_path: str = ""  # that run's input
    pid: int = 0
    run_ended: float | None = None  # when that run finished (None: still going)
    run_started: float | None = None  # when that run started (None: its row is gone)


def refusal(
    prior: PriorCall | None,
    *,
    resend_unknown: bool,
    resend_success: bool,
    started: float = math.inf,
) -> Outcome | None:
    """The one rule of "never twice": None when a run may send a payload the journal holds as
    ``prior``, else the outcome of the row that must not be sent.

    Pure; the pre-flight, the feed and the claim (authoritative, under the write lock) all ask
    it. ``resend_success`` is ``--no-resume``: a success of a run that ended before ``started``
    (when the asking run began) may be sent again, never one of a run that overlapped it;
    ``resend_unknown`` is ``--resend-unknown``.
    """
    if prior is None or prior.state == "failed":
        return None
    by = f" by the run of {prior.input_path}" if prior.input_path else ""
    if prior.state == "success":
        # never a success of a run that overlapped this one (it may be sending the same rows)
        before = prior.run_ended is not None and prior.run_ended < started
        if resend_success and before and not prior.live:
            return None
        when = platform_stamp(prior.finished_at) if prior.finished_at else "an earlier run"
        return Outcome(
            Status.SKIPPED,
            request_id=prior.request_id,
            system_time=prior.system_time,
            error=f"already sent successfully at {when}{by}",
        )
    if prior.state == "in_flight" and prior.live:
        return Outcome(
            Status.DUPLICATE,
            error=f"being sent right now{by} (process {prior.pid}); not sent twice",
        )
    # unknown: an answer was lost, or its run died with the call in flight
    return None if resend_unknown else Outcome(Status.UNKNOWN, error=KEPT_UNKNOWN_NOTE)


class Journal:
    """One SQLite file; opened once per process, shared by the runs of its inputs."""

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        if self.path.is_dir():
            raise JournalError(f"Journal {self.path} is a directory; give a file with --journal.")
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
                f"Cannot create the journal {self.path}: {exc.strerror or exc}; pass another "
                "--journal path."
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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            if "row_digest" not in columns:  # a journal of an earlier version
                self._db.execute("ALTER TABLE results ADD COLUMN row_digest INTEGER")
            self._db.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                [("schema", SCHEMA_NAME), ("version", SCHEMA_VERSION)],
            )
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise _busy(self.path, exc) from None
            raise JournalError(
                f"Journal {self.path} is not a usable top-import journal ({exc}); "
                "it was left untouched: pass another --journal path or move the file away."
            ) from None
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
                raise LockedError(
                    f"{input_path} is being imported right now by process {pid} on {host} "
                    f"(journal {self.path}); its workbook is written when it ends: report it then."
                )
            if not kept and finished_at != KILLED:
                return None  # it ended well: its workbook holds its results
            return RunJournal(self._db, run_id, app_key, method, host=self.host, path=self.path)
        return None

    def _close_dead_runs(self) -> None:
        """Mark the runs of this host whose process is gone as ended (``KILLED``)."""
        with _immediate(self._db, self.path):
            _close_dead_runs(self._db, self.host)

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
        """Take the lock of ``input_key`` (an input's content hash) and open a run.

        Runs of this host whose process is gone are closed first: their locks never block, and
        what they held in flight becomes unknown to every later claim.
        """
        db = self._db
        host = self.host
        with _immediate(db, self.path):
            _close_dead_runs(db, host)
            for pid, other_host, started, other_input in db.execute(
                "SELECT pid, host, started_at, input_path FROM runs "
                "WHERE input_key = ? AND finished_at IS NULL",
                (input_key,),
            ).fetchall():
                same = input_path if other_input == input_path else f"{other_input} (same content)"
                raise LockedError(
                    f"{input_path}: {same} is already being imported with journal {self.path} by "
                    f"process {pid} on {other_host}, started {platform_stamp(started)}; wait for "
                    "it to finish (a second run would send the same rows twice)."
                )
            db.execute("DELETE FROM leases WHERE renewed_at < ?", (time.time() - 60,))
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
            cur = db.execute(
                "INSERT INTO runs (input_key, input_path, app_key, method, pid, host, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (input_key, input_path, app_key, method, os.getpid(), host, time.time()),
            )
            run_id = cur.lastrowid
        return RunJournal(
            db,
            int(run_id or 0),
            app_key,
            method,
            host=host,
            path=self.path,
            resend_unknown=resend_unknown,
            resend_success=resend_success,
        )


class RunJournal:
    """One run's view of the journal: resume look-ups, claims, settled outcomes."""

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
    ) -> None:
        self._db = db
        self.run_id = run_id
        self._key = (app_key, method)
        self._path = path  # for messages
        self._host = host or socket.gethostname()
        self._policy = {
            "resend_unknown": resend_unknown,
            "resend_success": resend_success,
            "started": time.time(),
        }
        self._claims: list[tuple[str, asyncio.Future[Outcome | None]]] = []
        self._outcomes: list[_Settled] = []
        # payload hash -> what the journal held before this run claimed it, until it is settled
        self._claimed: dict[str, PriorCall | None] = {}
        self._minutes: Counter[int] = Counter()  # calls per minute not yet in the journal
        self._resend: set[str] = set()  # payloads a person decided to resend (the check sheet)
        self._flush_scheduled = False
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"RunJournal(run_id={self.run_id}, method={self._key[1]!r})"

    def prior(self, payload_hash: str) -> PriorCall | None:
        row = self._db.execute(_PRIOR, (*self._key, payload_hash)).fetchone()
        if row is None:
            return None
        state, request_id, system_time, finished_at, run_id, unfinished, path, pid, host = row[:9]
        live = bool(unfinished) and (host != self._host or pid_alive(pid))
        return PriorCall(
            state,
            request_id or "",
            system_time or "",
            finished_at,
            run_id,
            live,
            path or "",
            pid,
            run_ended=row[9] if row[9] is not None else (None if unfinished else 0.0),
            run_started=row[10],
        )

    def judge(self, prior: PriorCall | None, resend_unknown: bool | None = None) -> Outcome | None:
        """``refusal`` with this run's policy (``resend_unknown`` overriding its own): None when
        it may send a payload held as ``prior`` (a look-up, not a claim)."""
        policy = self._policy
        if resend_unknown is not None:
            policy = {**policy, "resend_unknown": resend_unknown}
        return refusal(prior, **policy)

    def allow_resend(self, payload_hash: str) -> None:
        """Let this run claim a payload the journal holds as unknown (a person checked the
        platform and decided ``resend``), whatever its ``--resend-unknown``."""
        self._resend.add(payload_hash)

    def mark_done(
        self, source_row: int, payload_hash: str, outcome: Outcome, digest: int | None = None
    ) -> None:
        """Record a payload as a success without a call (a person found it on the platform and
        decided ``done``): later runs skip it. A success already recorded is kept as it is."""
        db = self._db
        app_key, method = self._key
        with _immediate(db, self._path):
            db.execute(_MARK_DONE, (app_key, method, payload_hash, time.time(), self.run_id))
            db.execute(_INSERT_RESULT, (self.run_id, source_row, *outcome.values(), digest))

    def in_flight(self, payload_hash: str) -> Outcome | None:
        """Claim a payload before its first call (own commit): None when claimed, else the
        outcome of a row that must not be sent (another run holds or sent the payload)."""
        return self._write([payload_hash], [])[0]

    def settle(
        self, source_row: int, payload_hash: str | None, outcome: Outcome, digest: int | None = None
    ) -> None:
        """Commit a row's final outcome (and, for a claimed payload, its call state) at once."""
        self._write([], [(source_row, payload_hash, outcome, digest)])

    # -- the same writes, coalesced per event-loop tick ------------------------------------------
    #
    # At thousands of calls a second, a commit per claim and per outcome is most of the journal's
    # cost. Claims and outcomes that arise in the same tick of the event loop share one
    # transaction, committed by a callback at the end of that tick: before any further I/O,
    # timer or sleep, so there is no time window in which a known outcome waits. A call starts
    # only once its claim is committed (``in_flight_soon`` returns the future to await).

    def in_flight_soon(self, payload_hash: str) -> asyncio.Future[Outcome | None]:
        future = asyncio.get_running_loop().create_future()
        self._claims.append((payload_hash, future))
        self._schedule()
        return future

    def settle_soon(
        self, source_row: int, payload_hash: str | None, outcome: Outcome, digest: int | None = None
    ) -> None:
        self._outcomes.append((source_row, payload_hash, outcome, digest))
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
        claims, outcomes = self._claims, self._outcomes
        self._claims, self._outcomes = [], []
        try:
            verdicts = self._write([h for h, _ in claims], outcomes) if claims or outcomes else []
        except BaseException as exc:
            for _, future in claims:
                if not future.done():
                    future.set_exception(JournalError(f"The journal cannot be written: {exc}."))
            raise
        for (_, future), verdict in zip(claims, verdicts, strict=True):
            if not future.done():
                future.set_result(verdict)
        if self._error is not None:
            error, self._error = self._error, None
            raise JournalError(f"The journal cannot be written: {error}.") from None

    def _write(self, claims: list[str], outcomes: list[_Settled]) -> list[Outcome | None]:
        """One transaction: claims, then outcomes (call states, usage, results). Returns each
        claim's verdict: None when claimed, else the outcome of a row not to send."""
        db = self._db
        now = time.time()
        run_id, (app_key, method) = self.run_id, self._key
        verdicts: list[Outcome | None] = []
        claimed: dict[str, PriorCall | None] = {}
        # IMMEDIATE: the claim reads, then writes; no other run may write in between.
        db.execute("BEGIN IMMEDIATE" if claims else "BEGIN")
        try:
            for payload_hash in claims:
                prior = self.prior(payload_hash)
                verdict = self.judge(prior, True if payload_hash in self._resend else None)
                if verdict is None:
                    db.execute(_CLAIM, (app_key, method, payload_hash, run_id))
                    claimed[payload_hash] = prior
                verdicts.append(verdict)
            states, released, calls = [], [], 0
            for _, payload_hash, outcome, _ in outcomes:
                calls += outcome.attempts if outcome.sent is None else outcome.sent
                if payload_hash is None:
                    continue
                if not outcome.attempts:
                    if payload_hash in self._claimed or payload_hash in claimed:
                        released.append(payload_hash)  # claimed, then stopped before the call
                    continue
                state = _CALL_STATE.get(outcome.status, "failed")
                answer = (outcome.request_id, outcome.system_time, now, run_id, state)
                states.append((*answer, app_key, method, payload_hash, state))
            for payload_hash in released:
                before = claimed.pop(payload_hash, None) or self._claimed.get(payload_hash)
                if before is None:
                    db.execute(_FORGET_CALL, (app_key, method, payload_hash, run_id))
                else:
                    restore = (before.state, before.run_id, app_key, method, payload_hash, run_id)
                    db.execute(_RESTORE_CALL, restore)
            if states:
                db.executemany(_SETTLE_CALL, states)
            if calls:  # every HTTP call counts against the daily quota
                db.execute(_ADD_USAGE, (app_key, quota_day(now), calls))
                db.execute(_MADE, (calls, run_id))
            if outcomes:
                db.executemany(
                    _INSERT_RESULT,
                    [(run_id, row, *o.values(), d) for row, _, o, d in outcomes],
                )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        self._claimed.update(claimed)
        if calls:  # kept in memory: written with the report (a chart; not worth a statement)
            self._minutes[int(now // 60)] += calls
        for _, payload_hash, _, _ in outcomes:
            if payload_hash is not None:
                self._claimed.pop(payload_hash, None)
        return verdicts

    def add_rows(self, rows: Iterable[tuple[int, Outcome] | tuple[int, Outcome, int]]) -> None:
        """Record outcomes of rows that made no call (invalid, duplicate, skipped...) in bulk:
        (source_row, outcome) or (source_row, outcome, the row's digest)."""
        self._write([], [(r[0], None, r[1], r[2] if len(r) > 2 else None) for r in rows])

    def calls_per_minute(self) -> list[tuple[float, int]]:
        """(the minute's start, epoch seconds; HTTP calls settled in it) of this run, in order."""
        self._save_minutes()
        rows = self._db.execute(
            "SELECT minute, calls FROM minutes WHERE run_id = ? ORDER BY minute", (self.run_id,)
        )
        return [(minute * 60.0, calls) for minute, calls in rows]

    def results(self) -> Iterator[tuple[int, Outcome]]:
        """Every recorded row of this run, in source-row order."""
        for source_row, _, outcome in self.paired_results():
            yield source_row, outcome

    def paired_results(self) -> Iterator[tuple[int, int | None, Outcome]]:
        """(source_row, digest of the row's cells, outcome) of every recorded row, in order."""
        cur = self._db.execute(
            "SELECT source_row, row_digest, status, code, msg, sub_code, sub_msg, request_id, "
            "system_time, attempts, elapsed_ms, error FROM results WHERE run_id = ? "
            "ORDER BY source_row",
            (self.run_id,),
        )
        for row in cur:
            outcome = Outcome(Status(row[2]), *(v if v is not None else "" for v in row[3:]))
            yield row[0], row[1], outcome

    # -- the app key's quota, shared by the runs sending on this journal -----------------------

    def share(self, qps: float, now: float) -> tuple[float, int, bool]:
        """Renew this run's lease (taken at the first call) and read the others'.

        ``qps`` is this run's own limit: its ``--qps``, or the rate ``--qps auto`` has learnt.
        Returns (the lowest limit of the other live leases, ``inf`` without any; how many live
        leases share the quota, this one included; whether every other live lease was renewed
        since this one was taken). A lease not renewed for ``LEASE_STALE_S`` is a run that died.
        """
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
        seen = all(renewed >= since for _, renewed in others)
        return min((q for q, _ in others), default=math.inf), len(others) + 1, seen

    def reserve(self, calls: int, now: float) -> QuotaView:
        """Hold ``calls`` of today's quota for this run (the least its pre-flight found it will
        make) and read, in the same write transaction, what the others hold: two runs started
        together never both count the same quota as left. The reservation shrinks as the run's
        calls are settled (they count as used instead) and ends with the run."""
        db, app_key, day = self._db, self._key[0], quota_day(now)
        with _immediate(db, self._path):
            (used,) = db.execute(
                "SELECT coalesce(sum(calls), 0) FROM usage WHERE app_key = ? AND day = ?",
                (app_key, day),
            ).fetchone()
            held = db.execute(
                "SELECT r.run_id, max(0, r.planned - r.made), r.day, u.pid, u.host "
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
            for run_id, left, held_day, pid, host in held
            if host != self._host or pid_alive(pid)
        ]
        today = [(run_id, left) for run_id, left, held_day in live if held_day == day]
        sending = set(leases) | {run_id for run_id, left, _ in live if left}
        return QuotaView(
            used=int(used),
            reserved=sum(left for _, left in today),
            reserving=sum(1 for _, left in today if left),
            sending=len(sending),
            lowest=min(leases.values(), default=math.inf),
        )

    def peers(self, now: float) -> float | None:
        """The lowest limit of the other runs sending for this app key now (None: none is), read
        before this run's lease is taken: where a joining ``--qps auto`` run starts."""
        (lowest,) = self._db.execute(
            "SELECT min(qps) FROM leases WHERE app_key = ? AND run_id != ? AND renewed_at >= ?",
            (self._key[0], self.run_id, now - LEASE_STALE_S),
        ).fetchone()
        return lowest

    def end_share(self) -> None:
        """Give this run's share back (the others take it at their next renewal); a lease left
        by a run that died is ignored once stale and removed by the next run's start."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DELETE FROM leases WHERE run_id = ?", (self.run_id,))

    def calls_on(self, day: str) -> int:
        """HTTP calls settled for this app key (any method, any run) on a ``quota_day``."""
        row = self._db.execute(
            "SELECT calls FROM usage WHERE app_key = ? AND day = ?", (self._key[0], day)
        ).fetchone()
        return int(row[0]) if row else 0

    def _save_minutes(self) -> None:
        if not self._minutes:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                _ADD_MINUTE, [(self.run_id, minute, n) for minute, n in self._minutes.items()]
            )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        self._minutes.clear()

    def finish(self, keep_results: bool = False) -> None:
        """Release the lock and drop this run's per-row results (the workbook holds them), or
        keep them for ``top-import report`` when the workbook could not be written."""
        if keep_results:
            with contextlib.suppress(sqlite3.Error):
                self._save_minutes()
        db = self._db
        db.execute("BEGIN")
        try:
            if not keep_results:
                db.execute("DELETE FROM results WHERE run_id = ?", (self.run_id,))
                db.execute("DELETE FROM minutes WHERE run_id = ?", (self.run_id,))
            db.execute("DELETE FROM reservations WHERE run_id = ?", (self.run_id,))
            db.execute(
                "UPDATE runs SET finished_at = ? WHERE run_id = ?", (time.time(), self.run_id)
            )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)  # one failure must not leave the shared connection mid-way
            raise


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
                f"Journal {path}: the disk is full ({exc}); free some space and run the same "
                "command again: what was recorded is kept, rows in flight are unknown."
            ) from None
        raise JournalError(
            f"Journal {path} is damaged ({exc}); the run stopped there: move the file away "
            "(keep it, it records what was sent) and run with another --journal or a backup."
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


def _close_dead_runs(db: sqlite3.Connection, host: str) -> None:
    """Inside a write transaction: the unfinished runs of ``host`` whose process is gone end,
    as ``KILLED``; their locks no longer block and what they held in flight is unknown."""
    for run_id, pid in db.execute(
        "SELECT run_id, pid FROM runs WHERE finished_at IS NULL AND host = ?", (host,)
    ).fetchall():
        if not pid_alive(pid):
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
    "r.finished_at, r.started_at "
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
# An unknown outcome (its answer lost, or cancelled in flight) may or may not have landed.
_CALL_STATE = {Status.SUCCESS: "success", Status.UNKNOWN: "unknown"}
_INSERT_RESULT = (
    "INSERT OR REPLACE INTO results (run_id, source_row, status, code, msg, sub_code, sub_msg, "
    "request_id, system_time, attempts, elapsed_ms, error, row_digest) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# (source_row, payload_hash or None, outcome, digest of the row's cells or None)
_Settled = tuple[int, "str | None", Outcome, "int | None"]
