"""What every journal backend shares: the rule of "never twice", the liveness of a run, and one
run's view (``RunJournal``): its policy, its claims and outcomes batched per event-loop tick, and
the storage steps a backend provides underneath (one transaction of them per batch).

A backend is a ``Journal`` (open runs, find a run's kept results, translate its errors) and a
``RunJournal`` subclass (the steps marked abstract); ``_sqlite`` is the first.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from importer.advice import CHECK_ADVICE
from importer.errors import JournalError, LockedError
from importer.i18n import N_, _
from importer.protocol import GMT8, platform_stamp
from importer.rows import Outcome, Status

LEASE_STALE_S = 3.0  # a quota lease not renewed for this long belongs to a run that died
BEAT_S = 5.0  # how often a run tells the journal it is alive
BEAT_STALE_S = 60.0  # a run silent for this long died (on any host), whatever its pid shows
# the states of a call that may or may not have reached the platform: its answer was lost, or
# its run died with it in flight
UNKNOWN_STATES = frozenset({"in_flight", "unknown"})
KILLED = 0  # runs.finished_at of a run whose process died: found so by a later run or report

HISTORY_COLUMNS = (
    "run_id, input_path, method, host, started_at, finished_at, exit_code, counts, workbook"
)


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, kept in its row of ``runs`` for the history (serve's page lists it)."""

    exit_code: int | None  # None: it ended by an error the run could not name a code for
    counts: dict[str, int]  # rows per status word
    workbook: str | None  # its result workbook (an absolute path), None when none was written


@dataclass(frozen=True)
class PastRun:
    """A run as the journal's history shows it: what it read, when, and how it ended."""

    run_id: int
    input_path: str
    method: str
    host: str
    started_at: float
    finished_at: float | None  # None: still going (or dead, not yet found so); KILLED: died
    exit_code: int | None
    counts: dict[str, int]
    workbook: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PastRun:
        """One row of ``SELECT {HISTORY_COLUMNS} FROM runs``."""
        run_id, path, method, host, started, finished, code, counts, workbook = row
        return cls(
            int(run_id), path, method, host, float(started),
            None if finished is None else float(finished),
            None if code is None else int(code),
            json.loads(counts) if counts else {}, workbook,
        )  # fmt: skip


def end_columns(end: RunEnd | None) -> tuple[int | None, str | None, str | None]:
    """``runs.exit_code``, ``counts`` (JSON) and ``workbook`` of a run that ended so."""
    if end is None:
        return None, None, None
    return end.exit_code, json.dumps(end.counts, sort_keys=True), end.workbook


KEPT_UNKNOWN_NOTE = N_(
    "an earlier call of this payload got no answer (its outcome is unknown), so it was not sent "
    "again: {advice}"
).format(advice=CHECK_ADVICE)


def quota_day(epoch: float) -> str:
    """The platform's quota day of a moment: its date in GMT+8 (quotas reset at 00:00 there)."""
    return datetime.fromtimestamp(epoch, GMT8).strftime("%Y-%m-%d")


def run_alive(*, unfinished: bool, beat_at: float | None, now: float, pid_gone: bool) -> bool:
    """Whether a run still goes: not finished, its heartbeat fresh, and (on this host, where a
    process can be looked at) its process there. A run of an earlier version has no heartbeat
    (``beat_at`` None) and is judged by its process alone."""
    if not unfinished or pid_gone:
        return False
    return beat_at is None or now - beat_at <= BEAT_STALE_S


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
    live: bool = False  # the run that holds it has not finished and is alive (``run_alive``)
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
    # kept in English in the journal's results; a report shows it in its language (i18n.shown)
    by = prior.input_path
    if prior.state == "success":
        # never a success of a run that overlapped this one (it may be sending the same rows)
        before = prior.run_ended is not None and prior.run_ended < started
        if resend_success and before and not prior.live:
            return None
        when = platform_stamp(prior.finished_at) if prior.finished_at else N_("an earlier run")
        return Outcome(
            Status.SKIPPED,
            request_id=prior.request_id,
            system_time=prior.system_time,
            error=(
                N_("already sent successfully at {when} by the run of {input}")
                if by
                else N_("already sent successfully at {when}")
            ).format(when=when, input=by),
        )
    if prior.state == "in_flight" and prior.live:
        return Outcome(
            Status.DUPLICATE,
            error=(
                N_("being sent right now by the run of {input} (process {pid}); not sent twice")
                if by
                else N_("being sent right now (process {pid}); not sent twice")
            ).format(input=by, pid=prior.pid),
        )
    # unknown: an answer was lost, or its run died with the call in flight
    return None if resend_unknown else Outcome(Status.UNKNOWN, error=KEPT_UNKNOWN_NOTE)


def wrong_version(journal: object, version: object, expected: str) -> JournalError:
    return JournalError(
        _(
            "Journal {path} has version {version}, this top-import reads version "
            "{expected}; use a new --journal path."
        ).format(path=journal, version=version, expected=expected)
    )


def input_locked(
    input_path: str, other_input: str, journal: object, pid: int, host: str, started: float
) -> LockedError:
    """A live run (on any host) holds the same content: the second would send it twice."""
    same = (
        input_path
        if other_input == input_path
        else _("{path} (same content)").format(path=other_input)
    )
    return LockedError(
        _(
            "{path}: {other} is already being imported with journal {journal} by "
            "process {pid} on {host}, started {started}; wait for it to finish (a "
            "second run would send the same rows twice)."
        ).format(
            path=input_path,
            other=same,
            journal=journal,
            pid=pid,
            host=host,
            started=platform_stamp(started),
        )
    )


def being_imported(input_path: object, pid: int, host: str, journal: object) -> LockedError:
    return LockedError(
        _(
            "{path} is being imported right now by process {pid} on {host} (journal "
            "{journal}); its workbook is written when it ends: report it then."
        ).format(path=input_path, pid=pid, host=host, journal=journal)
    )


# (source_row, row_key or None, outcome, digest of the row's cells or None)
Settled = tuple[int, "str | None", Outcome, "int | None"]
# a call state to record: (row_key, state, request_id, system_time)
CallState = tuple[str, str, str, str]
# An unknown outcome (its answer lost, or cancelled in flight) may or may not have landed.
_CALL_STATE = {Status.SUCCESS: "success", Status.UNKNOWN: "unknown"}


def _as_journal_error(why: BaseException) -> JournalError:
    """What a batch's commit hit, as a run reports it: a backend's own sentence (a lost server:
    exit 3) as it is, any other error as the journal that cannot be written."""
    if isinstance(why, JournalError):
        return why
    return JournalError(_("The journal cannot be written: {why}.").format(why=why))


@dataclass(slots=True)
class _Batch:
    """The claims and outcomes committed together, and (``writers``) a writer's commit of them."""

    claims: list[tuple[str, asyncio.Future[Outcome | None]]]
    outcomes: list[Settled]
    done: concurrent.futures.Future[list[Outcome | None]] | None = None

    def keys(self) -> list[str]:
        return [row_key for row_key, _future in self.claims]

    def resolve(self, verdicts: list[Outcome | None]) -> None:
        for (_key, future), verdict in zip(self.claims, verdicts, strict=True):
            if not future.done():
                future.set_result(verdict)


class Journal(abc.ABC):
    """Where the runs of one process record what they send; shared by the runs of its inputs.
    ``path`` names it in messages (a file, or a database's address without its password);
    ``folder`` is the local folder of its runs' input snapshots."""

    path: Path | str
    folder: Path

    @abc.abstractmethod
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
        """Take the lock of ``input_key`` (an input's content hash) and open a run; runs found
        dead are closed first (their locks never block, what they held in flight is unknown).
        ``LockedError`` when a live run holds the same content."""

    @abc.abstractmethod
    def last_results(self, input_path: Path) -> RunJournal | None:
        """The latest run of ``input_path`` when the journal still holds what it did (its
        workbook could not be written, or it was killed); None when its workbook holds it."""

    @abc.abstractmethod
    def history(self, limit: int = 50) -> list[PastRun]:
        """The latest ``limit`` runs, newest first (runs found dead are closed first)."""

    @abc.abstractmethod
    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Inside, any error of the backend (a damaged file, a full disk, a lost server) is one
        ``JournalError`` sentence naming the journal and what to do."""

    @abc.abstractmethod
    def close(self) -> None: ...


class RunJournal(abc.ABC):
    """One run's view of the journal: resume look-ups, claims, settled outcomes.

    The rule (``refusal`` with this run's policy) and the batching live here; a backend gives
    the storage steps, run inside one ``_transaction`` per batch. A backend whose commit is a
    network round trip sets ``writers``: its batches are committed on threads of their own, that
    many at once (0: on the event loop's thread, at the end of the tick)."""

    writers = 0

    def __init__(
        self,
        run_id: int,
        app_key: str,
        method: str,
        *,
        resend_unknown: bool = False,
        resend_success: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_id = run_id
        self._clock = clock
        self._key = (app_key, method)
        self._policy = {
            "resend_unknown": resend_unknown,
            "resend_success": resend_success,
            "started": clock(),
        }
        self._claims: list[tuple[str, asyncio.Future[Outcome | None]]] = []
        self._outcomes: list[Settled] = []
        # payload hash -> what the journal held before this run claimed it, until it is settled
        self._claimed: dict[str, PriorCall | None] = {}
        self._minutes: Counter[int] = Counter()  # calls per minute not yet in the journal
        self._resend: set[str] = set()  # payloads a person decided to resend (the check sheet)
        self._flush_scheduled = False
        self._error: Exception | None = None
        # guards what the writers share (``_claimed``, ``_minutes``), never held across I/O
        self._lock = threading.Lock()
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None  # see ``writers``
        self._writing: list[_Batch] = []  # the batches the writers commit now, oldest first

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run_id={self.run_id}, method={self._key[1]!r})"

    def judge(self, prior: PriorCall | None, resend_unknown: bool | None = None) -> Outcome | None:
        """``refusal`` with this run's policy (``resend_unknown`` overriding its own): None when
        it may send a payload held as ``prior`` (a look-up, not a claim)."""
        policy = self._policy
        if resend_unknown is not None:
            policy = {**policy, "resend_unknown": resend_unknown}
        return refusal(prior, **policy)

    def allow_resend(self, row_key: str) -> None:
        """Let this run claim a payload the journal holds as unknown (a person checked the
        platform and decided ``resend``), whatever its ``--resend-unknown``."""
        self._resend.add(row_key)

    def claim(self, row_key: str) -> Outcome | None:
        """Claim a payload before its first call (own commit): None when claimed, else the
        outcome of a row that must not be sent (another run holds or sent the payload)."""
        return self._write([row_key], [])[0]

    def settle(
        self, source_row: int, row_key: str | None, outcome: Outcome, digest: int | None = None
    ) -> None:
        """Commit a row's final outcome (and, for a claimed payload, its call state) at once."""
        self._write([], [(source_row, row_key, outcome, digest)])

    def add_rows(self, rows: Iterable[tuple[int, Outcome] | tuple[int, Outcome, int]]) -> None:
        """Record outcomes of rows that made no call (invalid, duplicate, skipped...) in bulk:
        (source_row, outcome) or (source_row, outcome, the row's digest)."""
        self._write([], [(r[0], None, r[1], r[2] if len(r) > 2 else None) for r in rows])

    def results(self) -> Iterator[tuple[int, Outcome]]:
        """Every recorded row of this run, in source-row order."""
        for source_row, _digest, outcome in self.paired_results():
            yield source_row, outcome

    def calls_per_minute(self) -> list[tuple[float, int]]:
        """(the minute's start, epoch seconds; HTTP calls settled in it) of this run, in order."""
        self._save_minutes()
        return self._minutes_recorded()

    # -- the same writes, coalesced per event-loop tick ------------------------------------------
    #
    # At thousands of calls a second, a commit per claim and per outcome is most of the journal's
    # cost. Claims and outcomes that arise in the same tick of the event loop share one
    # transaction, committed by a callback at the end of that tick: before any further I/O,
    # timer or sleep, so there is no time window in which a known outcome waits. A call starts
    # only once its claim is committed (``claim_soon`` returns the future to await).

    def claim_soon(self, row_key: str) -> asyncio.Future[Outcome | None]:
        future = asyncio.get_running_loop().create_future()
        self._claims.append((row_key, future))
        self._schedule()
        return future

    def settle_soon(
        self, source_row: int, row_key: str | None, outcome: Outcome, digest: int | None = None
    ) -> None:
        self._outcomes.append((source_row, row_key, outcome, digest))
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if self.writers:
            if len(self._writing) < self.writers:  # else the batch gathers until one is done
                self._write_next()
            return
        try:
            self.flush()
        except Exception as exc:  # a callback cannot raise to anyone: keep it for flush()
            self._error = exc

    def _take(self) -> _Batch | None:
        claims, outcomes = self._claims, self._outcomes
        self._claims, self._outcomes = [], []
        return _Batch(claims, outcomes) if claims or outcomes else None

    # -- writers: while they commit, the event loop goes on and the next batch gathers
    #
    # Against a server a commit is a network round trip; on the event loop's thread it would
    # stall every call in flight. Each writer commits one batch at a time on a connection of its
    # own, and the claims and outcomes queued meanwhile form the next batch (a group commit):
    # the busier the run, the larger its batches. A call still starts only once its claim is
    # committed, and a row's outcome is queued only after its claim was (so batches in flight
    # at once never hold the same payload).

    def _write_next(self) -> None:
        batch = self._take()
        if batch is None:
            return
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(self.writers, "journal-writer")
        loop = asyncio.get_running_loop()
        batch.done = self._writer.submit(self._write, batch.keys(), batch.outcomes)
        self._writing.append(batch)

        def written(_done: object) -> None:  # on the writer's thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: flush() took it
                loop.call_soon_threadsafe(self._written, batch)

        batch.done.add_done_callback(written)

    def _written(self, batch: _Batch) -> None:
        if batch not in self._writing:
            return  # flush() delivered it
        self._writing.remove(batch)
        try:
            self._deliver(batch)
        except Exception as exc:  # kept for flush(), as a callback's error is
            if self._error is None:
                self._error = exc
        self._write_next()  # what gathered meanwhile (after an error too: its claims fail)

    def _deliver(self, batch: _Batch) -> None:
        """Settle the batch's claims with what its commit found (or the error it hit)."""
        assert batch.done is not None
        try:
            verdicts = batch.done.result()
        except BaseException as exc:
            self._fail(batch, exc)
            raise
        batch.resolve(verdicts)

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        error = _as_journal_error(exc)
        for _key, future in batch.claims:
            if not future.done():
                future.set_exception(error)

    def close_writer(self) -> None:
        """Commit what is queued and end the writers' threads (a backend with ``writers``)."""
        try:
            if self._writing or self._claims or self._outcomes:
                self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def flush(self) -> None:
        """Commit whatever is queued (after the batches the writers commit now); raise what an
        earlier batch's commit hit."""
        writing, self._writing = self._writing, []
        failed: BaseException | None = None
        for batch in writing:  # every one waited for, whatever the first one hit
            try:
                self._deliver(batch)
            except BaseException as exc:
                failed = failed or exc
        if failed is not None:
            raise _as_journal_error(failed) from None
        batch = self._take()
        if batch is not None:
            try:
                verdicts = self._write(batch.keys(), batch.outcomes)
            except BaseException as exc:
                self._fail(batch, exc)
                raise
            batch.resolve(verdicts)
        if self._error is not None:
            error, self._error = self._error, None
            raise _as_journal_error(error) from None

    def _write(self, claims: list[str], outcomes: list[Settled]) -> list[Outcome | None]:
        """One transaction: claims, then outcomes (call states, usage, results). Returns each
        claim's verdict: None when claimed, else the outcome of a row not to send.

        A payload the journal holds nothing of (the common case) is claimed by the batch's
        first transaction, with the outcomes; one it holds needs the rule, so it is judged and
        claimed by a second one, which reads it again under the lock."""
        now = self._clock()
        calls = 0
        with self._lock:  # claimed, then stopped before the call: what it held before comes back
            given_back = {
                row_key: self._claimed[row_key]
                for _row, row_key, outcome, _digest in outcomes
                if row_key in self._claimed and not outcome.attempts
            }
        # immediate: the claim reads, then writes; no other run may write in between
        self._begin(immediate=bool(claims))
        try:
            held_of = self._claim_new(claims) if claims else list
            states: list[CallState] = []
            for _row, row_key, outcome, _digest in outcomes:
                calls += outcome.calls
                if row_key is None:
                    continue
                if not outcome.attempts:
                    if row_key in given_back:
                        self._release(row_key, given_back[row_key])
                    continue
                state = _CALL_STATE.get(outcome.status, "failed")
                states.append((row_key, state, outcome.request_id, outcome.system_time))
            if states:
                self._settle_calls(states, now)
            if calls:  # every HTTP call counts against the daily quota
                self._count_calls(quota_day(now), calls)
            if outcomes:
                self._add_results(outcomes)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        held = held_of()
        with self._lock:
            if calls:  # kept in memory: written with the report (a chart; not a statement)
                self._minutes[int(now // 60)] += calls
            for _row, row_key, _outcome, _digest in outcomes:
                if row_key is not None:
                    self._claimed.pop(row_key, None)
        verdicts = self._judge_held(held) if held else {}
        with self._lock:
            for row_key in claims:
                if row_key not in held:
                    self._claimed[row_key] = None
        return [verdicts.get(row_key) for row_key in claims]

    def _judge_held(self, held: Sequence[str]) -> dict[str, Outcome | None]:
        """Claim the payloads the journal holds that the rule lets this run send; the verdict
        of each (None: claimed)."""
        verdicts: dict[str, Outcome | None] = {}
        claimed: dict[str, PriorCall | None] = {}
        self._begin(immediate=True)
        try:
            priors = self._priors(held)  # again: it may have changed since, not under the lock
            for row_key in held:
                prior = priors.get(row_key)
                verdict = self.judge(prior, True if row_key in self._resend else None)
                if verdict is None:
                    claimed[row_key] = prior
                verdicts[row_key] = verdict
            if claimed:
                self._claim_all(list(claimed))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        with self._lock:
            self._claimed.update(claimed)
        return verdicts

    def _save_minutes(self) -> None:
        if self._minutes:
            self._add_minutes(sorted(self._minutes.items()))
            self._minutes.clear()

    # -- what a backend provides ------------------------------------------------------------------

    # A batch's steps commit together or not at all (plain calls, not a context manager: this
    # is the hot path, twice per call sent).
    @abc.abstractmethod
    def _begin(self, immediate: bool) -> None:
        """Open the batch's transaction; ``immediate`` takes the write lock at once (a claim
        reads, then writes: no other run may write in between)."""

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None:
        """Roll back what the batch wrote; never raises (the error that made it roll back is
        the one to report)."""

    @abc.abstractmethod
    def prior(self, row_key: str) -> PriorCall | None:
        """What the journal holds for this run's app key and method and ``row_key``."""

    def _priors(self, row_keys: Sequence[str]) -> dict[str, PriorCall | None]:
        """``prior`` of each payload (inside the batch's transaction); a backend whose every
        statement is a network round trip reads them in one."""
        return {row_key: self.prior(row_key) for row_key in row_keys}

    def _claim_all(self, row_keys: Sequence[str]) -> None:
        for row_key in row_keys:
            self._claim(row_key)

    def _claim_new(self, row_keys: Sequence[str]) -> Callable[[], Sequence[str]]:
        """Inside the batch's transaction: claim each payload the journal holds nothing of (a
        new payload may always be sent). Returns what gives, once the batch is committed, the
        payloads it does hold (for ``_judge_held``): a backend that pipelines its statements
        reads the answer after the commit, so the batch is one round trip."""
        priors = self._priors(row_keys)
        new = [row_key for row_key in row_keys if priors.get(row_key) is None]
        if new:
            self._claim_all(new)
        held = [row_key for row_key in row_keys if priors.get(row_key) is not None]
        return lambda: held

    @abc.abstractmethod
    def _claim(self, row_key: str) -> None:
        """Mark a payload ``in_flight`` under this run (a success stays a success)."""

    @abc.abstractmethod
    def _release(self, row_key: str, before: PriorCall | None) -> None:
        """Give a claim back unsent: the journal holds again what it held ``before``."""

    @abc.abstractmethod
    def _settle_calls(self, states: Sequence[CallState], now: float) -> None:
        """Record the answered calls' states (a success stays a success)."""

    @abc.abstractmethod
    def _count_calls(self, day: str, calls: int) -> None:
        """Add HTTP calls to the app key's usage of ``day`` and this run's reservation."""

    @abc.abstractmethod
    def _add_results(self, outcomes: Sequence[Settled]) -> None:
        """Record (or replace) rows' report columns for this run."""

    @abc.abstractmethod
    def _add_minutes(self, minutes: Sequence[tuple[int, int]]) -> None:
        """Add (minute, calls) to this run's calls per minute."""

    @abc.abstractmethod
    def _minutes_recorded(self) -> list[tuple[float, int]]: ...

    @abc.abstractmethod
    def mark_done(
        self, source_row: int, row_key: str, outcome: Outcome, digest: int | None = None
    ) -> None:
        """Record a payload as a success without a call (a person found it on the platform and
        decided ``done``): later runs skip it. A success already recorded is kept as it is."""

    @abc.abstractmethod
    def paired_results(self) -> Iterator[tuple[int, int | None, Outcome]]:
        """(source_row, digest of the row's cells, outcome) of every recorded row, in order."""

    @abc.abstractmethod
    def reserve(self, calls: int, now: float) -> QuotaView:
        """Hold ``calls`` of today's quota for this run (the least its pre-flight found it will
        make) and read, in the same write transaction, what the others hold: two runs started
        together never both count the same quota as left. The reservation shrinks as the run's
        calls are counted (they are used instead) and ends with the run."""

    @abc.abstractmethod
    def share(self, qps: float, now: float) -> tuple[float, int, bool]:
        """Renew this run's lease (taken at the first call) and read the others'.

        ``qps`` is this run's own limit: its ``--qps``, or the rate ``--qps auto`` has learnt.
        Returns (the lowest limit of the other live leases, ``inf`` without any; how many live
        leases share the quota, this one included; whether every other live lease was renewed
        since this one was taken). A lease not renewed for ``LEASE_STALE_S`` is a run that died.
        """

    @abc.abstractmethod
    def peers(self, now: float) -> float | None:
        """The lowest limit of the other runs sending for this app key now (None: none is), read
        before this run's lease is taken: where a joining ``--qps auto`` run starts."""

    @abc.abstractmethod
    def end_share(self) -> None:
        """Give this run's share back (the others take it at their next renewal); a lease left
        by a run that died is ignored once stale and removed by the next run's start."""

    @abc.abstractmethod
    def calls_on(self, day: str) -> int:
        """HTTP calls settled for this app key (any method, any run) on a ``quota_day``."""

    @abc.abstractmethod
    def finish(self, keep_results: bool = False, end: RunEnd | None = None) -> None:
        """Release the lock, stop the heartbeat, and drop this run's per-row results (the
        workbook holds them), or keep them for ``top-import report`` when the workbook could
        not be written; ``end`` (its counts, exit code, workbook) goes to the history."""
