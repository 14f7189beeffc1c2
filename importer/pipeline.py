"""One input file through the whole flow: loader -> records -> dispatcher -> journal -> reporter.

``check_file`` (validate, dry run) makes one pass and writes the workbook as it goes.
``run_file`` makes three over a private copy of the input taken at the start (``snapshot``), so
every pass reads the same bytes whatever happens to the file meanwhile: the pre-flight counts
what would be sent (validation, duplicates and journal look-ups, nothing recorded) for the
``Plan`` the caller approves; the send pass streams rows into the dispatcher, which claims each
payload in the journal before its call and commits every outcome; the report pass reads the copy
again beside the journal's outcomes (both in source-row order, paired by row number and a digest
of the cells) and writes the workbook, so memory does not grow with the row count.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from importer import __version__, snapshot
from importer.config import Config
from importer.dispatcher import Dispatcher, DispatchSettings, StopReason
from importer.errors import UsageError
from importer.gateway import Gateway
from importer.journal import Journal, RunJournal, quota_day
from importer.loader import InputTable, check_path, open_input
from importer.pacing import AUTO_START_QPS, paced_rate
from importer.progress import Progress
from importer.protocol import Credentials, RequestBuilder
from importer.records import (
    DuplicateFilter,
    Outcome,
    RequestRecord,
    Row,
    RowError,
    RowValidator,
    Status,
)
from importer.reporter import ReportWriter
from importer.sharing import shared_quota
from importer.specs import ApiSpec
from importer.summary import FileSummary, Plan, plural

RESENT_NOTE = "an earlier call of this payload got no answer; sent again (--resend-unknown)"
SNAPSHOT_FOLDER = ".top-import-snapshots"  # beside the journal: the runs' private input copies
_BATCH = 2000  # rows without a call are committed in batches: a crash loses no call state


def report_path(config: Config, input_path: Path) -> Path:
    path = config.out or config.out_dir / f"{input_path.stem}.result.xlsx"
    if path.resolve() == input_path.resolve():
        raise UsageError(f"--out {path} is the input file itself; choose another output path.")
    return path


def _limits(config: Config) -> dict:
    limits: dict[str, object] = {"qps": "auto" if config.qps_auto else config.qps}
    if config.qps_auto:
        limits["qps max"] = config.qps_max
    limits.update(
        {
            "concurrency": config.concurrency,
            "retries": config.retries,
            "timeout s": config.timeout,
            "max ban s": config.max_ban,
            "canary rows": config.canary,
            "max failure rate": config.max_failure_rate,
        }
    )
    if config.daily_quota is not None:
        limits["daily quota"] = config.daily_quota
    return limits


def _open(path: Path, config: Config, spec: ApiSpec) -> InputTable:
    return open_input(path, spec, sheet=config.sheet, column_map=config.columns)


def check_row(
    row: Row, validator: RowValidator, duplicates: DuplicateFilter
) -> RequestRecord | Outcome:
    """The row's request record, or its outcome when it is invalid or a duplicate."""
    result = validator.validate(row)
    if isinstance(result, RowError):
        return Outcome(Status.INVALID, error=result.message)
    first = duplicates.first_row(result)
    if first is not None:
        return Outcome(Status.DUPLICATE, error=f"same payload as row {first}")
    return result


# -- validate and dry run: one pass, no network --------------------------------------------------


def check_file(
    path: Path, config: Config, spec: ApiSpec, builder: RequestBuilder | None = None
) -> FileSummary:
    """``validate`` (builder None) or ``--dry-run`` (every valid request built and signed)."""
    table = _open(path, config, spec)
    summary = FileSummary(path, "dry-run" if builder else "validate", method=spec.method)
    summary.limits = _limits(config)
    out = report_path(config, path)
    validator = RowValidator(spec, table.columns)
    duplicates = DuplicateFilter()
    now = datetime.now(timezone.utc)
    with ReportWriter(out, table.headers, call_columns=False) as writer:
        for row in table.rows():
            checked = check_row(row, validator, duplicates)
            if isinstance(checked, Outcome):
                outcome = checked
            else:
                outcome = Outcome(Status.VALID)
                if builder is not None:
                    builder.build(checked, now)
            summary.rows_read += 1
            summary.count(outcome)
            writer.write(row, outcome)
        summary.ended = time.time()
        summary.workbook = writer.close(summary.sheet())
    return summary


# -- run: send, journal, report -------------------------------------------------------------------


class _Feed:
    """Rows -> records to send; rows that need no call are settled in the journal.

    ``count`` is the pre-flight (what every row would become, nothing recorded); ``records`` is
    the send pass. Each record yielded leaves its row's digest (and a note, for a row resent
    after an unknown outcome) in ``pending`` until its outcome is settled.
    """

    def __init__(
        self,
        table: InputTable,
        spec: ApiSpec,
        run: RunJournal,
        summary: FileSummary,
        on_settled: Callable[[Status], None],
    ) -> None:
        self._table = table
        self._validator = RowValidator(spec, table.columns)
        self._duplicates = DuplicateFilter()
        self._run = run
        self._summary = summary
        self._on_settled = on_settled
        self.pending: dict[int, tuple[int, str]] = {}  # source_row -> (digest, note)

    def count(self) -> Counter[str]:
        """The pre-flight: what every row would become (``send`` or a status), nothing recorded."""
        tally: Counter[str] = Counter()
        for row in self._table.rows():
            decided, _ = self._decide(row)
            tally["send" if isinstance(decided, RequestRecord) else decided.status.value] += 1
        return tally

    def records(self) -> Iterator[RequestRecord]:
        pending: list[tuple[int, Outcome, int]] = []
        for row in self._table.rows():
            self._summary.rows_read += 1
            decided, note = self._decide(row)
            if isinstance(decided, RequestRecord):
                self.pending[row.source_row] = (row.digest(), note)
                yield decided
                continue
            pending.append((row.source_row, decided, row.digest()))
            self._on_settled(decided.status)
            if len(pending) >= _BATCH:
                self._run.add_rows(pending)
                pending.clear()
        if pending:
            self._run.add_rows(pending)

    def _decide(self, row: Row) -> tuple[RequestRecord | Outcome, str]:
        """The record to send (and a note for its report row), or the outcome of a row that
        needs no call: invalid, duplicate, or what the journal holds (``journal.refusal``)."""
        checked = check_row(row, self._validator, self._duplicates)
        if isinstance(checked, Outcome):
            return checked, ""
        prior = self._run.prior(checked.payload_hash)
        refused = self._run.judge(prior)
        if refused is not None:
            return refused, ""
        resent = prior is not None and prior.state in ("in_flight", "unknown")
        return checked, RESENT_NOTE if resent else ""


async def run_file(
    path: Path,
    config: Config,
    spec: ApiSpec,
    journal: Journal,
    credentials: Credentials,
    gateway_url: str,
    stop_at: datetime | None = None,
    approve: Callable[[Plan], None] | None = None,
    interrupts: Interrupts | None = None,
) -> FileSummary:
    """Send every valid row of one input; the workbook is written whatever stops the run.

    The run reads a private copy of the input taken now (``snapshot``), so a file saved while
    it is sending changes nothing about this run; the summary notes it. ``stop_at`` (a cron
    window's end) stops starting calls then; the rest are ``not_sent``. ``approve`` sees the
    pre-flight ``Plan`` before anything is sent; an ``ImporterError`` it raises stops this input
    with nothing sent and no workbook. ``interrupts`` carries a stop asked from outside (the
    CLI's signal handlers); without it nothing but the deadline stops the run.
    """
    check_path(path)
    out = report_path(config, path)
    # Before the copy and the lock: a spec that needs a session it lacks stops here.
    builder = RequestBuilder(
        spec, credentials, config.sign_method, partner_id=f"top-import-{__version__}"
    )
    copy = snapshot.take(path, journal.path.parent / SNAPSHOT_FOLDER)
    try:
        with copy.named_as_original():
            summary = await _run_copy(
                path,
                copy,
                out,
                config,
                spec,
                journal,
                credentials,
                builder,
                gateway_url,
                stop_at,
                approve,
                interrupts or Interrupts(),
            )
        if copy.changed():
            summary.input_changed = True
            summary.notes.append(
                f"{path} changed while it was being sent; this run sent and reported the "
                "version it started with. Run it again to send the new content (the journal "
                "skips what already succeeded)."
            )
        return summary
    finally:
        copy.remove()


async def _run_copy(
    path: Path,
    copy: snapshot.Snapshot,
    out: Path,
    config: Config,
    spec: ApiSpec,
    journal: Journal,
    credentials: Credentials,
    builder: RequestBuilder,
    gateway_url: str,
    stop_at: datetime | None,
    approve: Callable[[Plan], None] | None,
    interrupts: Interrupts,
) -> FileSummary:
    """The three passes over the private copy: pre-flight, send, report."""
    table = _open(copy.path, config, spec)
    summary = FileSummary(
        path,
        "run",
        method=spec.method,
        gateway=gateway_url,
        app_key=credentials.app_key,
        sign_method=config.sign_method,
        limits=_limits(config),
    )
    resend_unknown = resends_unknown(config, spec)
    run = journal.start_run(
        input_path=str(path),
        input_key=copy.key,
        app_key=credentials.app_key,
        method=spec.method,
        resend_unknown=resend_unknown or not config.resume,
        resend_success=not config.resume,
    )
    try:
        plan = _plan(path, table, spec, run, config)
        if approve is not None:
            approve(plan)
        settings = DispatchSettings(
            qps=_auto_start(run, config) if config.qps_auto else config.qps,
            concurrency=config.concurrency,
            retries=config.retries,
            max_ban=config.max_ban,
            canary=config.canary,
            max_failure_rate=config.max_failure_rate,
            qps_auto=config.qps_auto,
            qps_max=config.qps_max,
            resend_uncertain=resend_unknown,
        )
        await _send(
            table, spec, run, builder, settings, config, gateway_url, stop_at, interrupts, summary
        )
        summary.ended = time.time()
        try:
            summary.workbook = _write_report(table, run, out, summary)
        except UsageError as exc:  # a full disk, a folder gone: the journal keeps the rows
            _count_from_journal(run, summary)
            summary.notes.append(
                f"{exc} This run's results are kept in the journal: once that is fixed, "
                f"'top-import report {path}' writes the workbook (nothing is sent again)."
            )
        # A signal that came while the workbook was written (the loop was busy) is handled now:
        # it marks this input's exit code, and the caller starts no further input.
        for _ in range(3):
            await asyncio.sleep(0)
        summary.interrupt_signal = interrupts.signal
    finally:
        run.finish(keep_results=summary.workbook is None)
    unknown = summary.counts.get(Status.UNKNOWN.value, 0)
    if unknown:
        summary.notes.append(
            f"{path}: {plural(unknown, 'row')} unknown: the call may have "
            "reached the platform but no answer came back. They are the rows with status "
            f"unknown in {summary.workbook}: check them on the platform, then rerun with "
            "--resend-unknown to send them again."
        )
    return summary


async def _send(
    table: InputTable,
    spec: ApiSpec,
    run: RunJournal,
    builder: RequestBuilder,
    settings: DispatchSettings,
    config: Config,
    gateway_url: str,
    stop_at: datetime | None,
    interrupts: Interrupts,
    summary: FileSummary,
) -> None:
    """The send pass: rows into the dispatcher, every claim and outcome into the journal."""
    progress = Progress(config.progress, label=summary.input.name, total=table.estimate_rows())
    feed = _Feed(table, spec, run, summary, progress.update)

    def on_start(record: RequestRecord) -> asyncio.Future[Outcome | None]:
        return run.in_flight_soon(record.payload_hash)

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        digest, note = feed.pending.pop(record.source_row, (None, ""))
        if note and outcome.attempts:
            outcome.error = f"{note}; {outcome.error}" if outcome.error else note
        run.settle_soon(record.source_row, record.payload_hash, outcome, digest)
        progress.update(outcome.status)

    async with Gateway(gateway_url, concurrency=config.concurrency, timeout=config.timeout) as gw:
        dispatcher = Dispatcher(builder, gw, settings, on_start=on_start, on_outcome=on_outcome)
        interrupts.attach(dispatcher)
        with _deadline(dispatcher, stop_at):
            started = time.monotonic()
            try:
                async with shared_quota(run, dispatcher.quota):
                    result = await dispatcher.run(feed.records())
            finally:
                summary.send_seconds = time.monotonic() - started
                interrupts.attach(None)
                progress.close()
                run.flush()
            summary.stop_reason, summary.message = result.stop_reason, result.message
            if dispatcher.rate_policy is not None:
                summary.limits["qps auto reached"] = round(dispatcher.rate_policy.rate, 1)
                summary.limits["qps auto throttles"] = dispatcher.rate_policy.throttles
            if result.stop_reason is StopReason.DEADLINE and stop_at is not None:
                if stop_at.timestamp() <= summary.started:
                    summary.message = (
                        f"--deadline / --max-runtime had already passed when the run started "
                        f"(at {stop_at:%Y-%m-%d %H:%M}); nothing was sent. A deadline that "
                        "passed within the last 12 hours stops a run at once"
                    )
                    return
                summary.message = (
                    f"stopped starting calls at {stop_at:%Y-%m-%d %H:%M} (--deadline / "
                    "--max-runtime); the rows not sent are in the workbook, and rerunning "
                    "the same command resumes with them"
                )


def _auto_start(run: RunJournal, config: Config) -> float:
    """Where ``--qps auto`` starts: at the limit of the runs already sending for the app key,
    else low enough for almost any app's quota."""
    others = run.peers(time.time())
    return min(AUTO_START_QPS if others is None else others, config.qps_max)


def resends_unknown(config: Config, spec: ApiSpec) -> bool:
    """At-least-once for calls whose answer was lost: ``--resend-unknown``, else the spec's
    ``idempotent``."""
    return spec.idempotent if config.resend_unknown is None else config.resend_unknown


def _plan(path: Path, table: InputTable, spec: ApiSpec, run: RunJournal, config: Config) -> Plan:
    """The pre-flight pass: count what the send pass will send; record nothing."""
    tally = _Feed(table, spec, run, FileSummary(path, "run"), lambda _: None).count()
    used = run.calls_on(quota_day(time.time())) if config.daily_quota is not None else 0
    return Plan(
        path,
        to_send=tally["send"],
        already_sent=tally[Status.SKIPPED.value],
        duplicate=tally[Status.DUPLICATE.value],
        invalid=tally[Status.INVALID.value],
        unknown=tally[Status.UNKNOWN.value],
        rate=None if config.qps_auto else paced_rate(config.qps),
        qps_max=config.qps_max,
        daily_quota=config.daily_quota,
        used_today=used,
    )


class Interrupts:
    """A stop asked from outside the run (SIGINT, SIGTERM, SIGHUP), shared by the inputs of one
    command: the first stops starting calls (calls in flight finish, the workbook is written,
    no further input starts); a second SIGINT also cancels the calls in flight.

    ``handle_signals`` installs the handlers (the CLI does; a library caller decides).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher | None) -> None:
        """The dispatcher of the send pass now running (None between send passes)."""
        self._dispatcher = dispatcher
        if dispatcher is not None and self.signal is not None:
            dispatcher.stop(StopReason.INTERRUPTED)  # asked before this input started sending

    def handle(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            print(
                "top-import: stopping — letting calls in flight finish and writing the "
                "workbook (Ctrl-C again to stop the calls at once)",
                file=sys.stderr,
            )
            if self._dispatcher is not None:
                self._dispatcher.stop(StopReason.INTERRUPTED)
        elif signum == signal.SIGINT and self._dispatcher is not None:
            self._dispatcher.abort()


@contextlib.contextmanager
def handle_signals(interrupts: Interrupts) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) go to ``interrupts`` while
    the block runs in the event loop; under ``nohup`` (SIGHUP ignored) a hang-up stays
    ignored and the run goes on."""
    loop = asyncio.get_running_loop()
    wanted = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    installed = []
    for signum in wanted:
        try:
            loop.add_signal_handler(signum, interrupts.handle, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _deadline(dispatcher: Dispatcher, stop_at: datetime | None):
    if stop_at is None:
        yield
        return
    delay = (stop_at - datetime.now(stop_at.tzinfo)).total_seconds()
    if delay <= 0:  # already past (--max-runtime 0): not one call
        dispatcher.stop(StopReason.DEADLINE)
    handle = asyncio.get_running_loop().call_later(
        max(delay, 0.0), dispatcher.stop, StopReason.DEADLINE
    )
    try:
        yield
    finally:
        handle.cancel()


def _paired(row: Row, recorded: tuple[int, int | None, Outcome] | None) -> Outcome:
    """The outcome recorded for this row, if it was recorded for these very cells."""
    if recorded is None or recorded[0] != row.source_row:
        return Outcome(Status.NOT_SENT, error="no outcome recorded for this row")
    source_row, digest, outcome = recorded
    if digest is not None and digest != row.digest():
        return Outcome(
            Status.UNKNOWN,
            error=f"the outcome recorded for row {source_row} belongs to other cells; "
            "check this row on the platform",
        )
    return outcome


def _count_from_journal(run: RunJournal, summary: FileSummary) -> None:
    counted = FileSummary(summary.input, summary.command)
    for _, outcome in run.results():
        counted.count(outcome)
    summary.counts, summary.sub_codes, summary.calls = (
        counted.counts,
        counted.sub_codes,
        counted.calls,
    )


def rebuild_report(path: Path, config: Config, spec: ApiSpec, journal: Journal) -> FileSummary:
    """``top-import report``: the workbook of the last run of ``path`` whose results the journal
    kept (its workbook could not be written, or it was killed), from the file as it is now; no
    network. A row whose cells changed since is not paired with the old outcome."""
    check_path(path)
    run = journal.last_results(path)
    if run is None:
        raise UsageError(
            f"{journal.path} holds no results of a run of {path} to report: they are kept only "
            "when a run could not write its workbook or was killed, until the next run of it."
        )
    table = _open(path, config, spec)
    summary = FileSummary(path, "report", method=spec.method, limits=_limits(config))
    summary.ended = time.time()
    summary.workbook = _write_report(table, run, report_path(config, path), summary)
    summary.rows_read = sum(summary.counts.values())
    run.finish()  # the workbook holds the results now
    return summary


def _write_report(table: InputTable, run: RunJournal, out: Path, summary: FileSummary) -> Path:
    """The report pass: the input again beside the journal's outcomes, both in source-row order,
    each outcome paired with its row by row number and the digest of its cells."""
    outcomes = run.paired_results()
    pending = next(outcomes, None)
    counts_from_journal = FileSummary(summary.input, summary.command)
    with ReportWriter(out, table.headers) as writer:
        for row in table.rows():
            while pending is not None and pending[0] < row.source_row:
                pending = next(outcomes, None)
            outcome = _paired(row, pending)
            counts_from_journal.count(outcome)
            writer.write(row, outcome)
        summary.counts = counts_from_journal.counts
        summary.sub_codes = counts_from_journal.sub_codes
        summary.calls = counts_from_journal.calls
        return writer.close(summary.sheet())
