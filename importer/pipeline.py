"""One input file through the whole flow: loader -> records -> dispatcher -> journal -> reporter.

``check_file`` (validate, dry run) makes one pass and writes the workbook as it goes.
``run_file`` makes three: the pre-flight counts what would be sent (validation, duplicates and
journal look-ups, nothing recorded) for the ``Plan`` the caller approves; the second streams rows
into the dispatcher and commits every outcome to the journal; the third reads the input again
beside the journal's outcomes (both in source-row order) and writes the workbook, so memory does
not grow with the row count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from importer import __version__
from importer.config import Config
from importer.dispatcher import Dispatcher, DispatchSettings, StopReason
from importer.errors import UsageError
from importer.gateway import Gateway
from importer.journal import Journal, PriorCall, RunJournal, quota_day
from importer.loader import InputTable, open_input
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
from importer.specs import ApiSpec
from importer.summary import FileSummary, Plan, stamp

RESENT_NOTE = "outcome of an earlier interrupted call unknown; sent again"
KEPT_UNKNOWN_NOTE = (
    "outcome of an earlier interrupted call unknown; not sent again (--no-resend-unknown)"
)
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


def input_key(path: Path) -> str:
    """The lock key of an input: a hash of its content (a renamed copy is the same input)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Feed:
    """Pass one: rows -> records to send; rows that need no call are settled in the journal."""

    def __init__(
        self,
        table: InputTable,
        spec: ApiSpec,
        run: RunJournal,
        config: Config,
        summary: FileSummary,
        on_settled: Callable[[Status], None],
    ) -> None:
        self._table = table
        self._validator = RowValidator(spec, table.columns)
        self._duplicates = DuplicateFilter()
        self._run = run
        self._config = config
        self._summary = summary
        self._on_settled = on_settled
        self.notes: dict[int, str] = {}  # rows resent after an unknown earlier outcome

    def count(self) -> Counter[str]:
        """The pre-flight: what every row would become (``send`` or a status), nothing recorded."""
        tally: Counter[str] = Counter()
        for row in self._table.rows():
            decided = self._decide(row)
            tally["send" if isinstance(decided, RequestRecord) else decided.status.value] += 1
        return tally

    def records(self) -> Iterator[RequestRecord]:
        pending: list[tuple[int, Outcome]] = []
        for row in self._table.rows():
            self._summary.rows_read += 1
            outcome = self._decide(row)
            if isinstance(outcome, RequestRecord):
                yield outcome
                continue
            pending.append((row.source_row, outcome))
            self._on_settled(outcome.status)
            if len(pending) >= _BATCH:
                self._run.add_rows(pending)
                pending.clear()
        if pending:
            self._run.add_rows(pending)

    def _decide(self, row: Row) -> RequestRecord | Outcome:
        """The record to send, or the outcome of a row that needs no call."""
        checked = check_row(row, self._validator, self._duplicates)
        if isinstance(checked, Outcome):
            return checked
        outcome = self._resume(checked)
        return checked if outcome is None else outcome

    def _resume(self, record: RequestRecord) -> Outcome | None:
        """None to send the record; else the outcome that an earlier run decided."""
        if not self._config.resume:
            return None
        prior = self._run.prior(record.payload_hash)
        if prior is None or prior.state == "failed":
            return None
        if prior.state == "success":
            return _skipped(prior)
        if not self._config.resend_unknown:
            return Outcome(Status.UNKNOWN, error=KEPT_UNKNOWN_NOTE)
        self.notes[record.source_row] = RESENT_NOTE
        return None


def _skipped(prior: PriorCall) -> Outcome:
    when = stamp(prior.finished_at) if prior.finished_at else "an earlier run"
    return Outcome(
        Status.SKIPPED,
        request_id=prior.request_id,
        system_time=prior.system_time,
        error=f"already sent successfully at {when}",
    )


async def run_file(
    path: Path,
    config: Config,
    spec: ApiSpec,
    journal: Journal,
    credentials: Credentials,
    gateway_url: str,
    stop_at: datetime | None = None,
    approve: Callable[[Plan], None] | None = None,
) -> FileSummary:
    """Send every valid row of one input; the workbook is written whatever stops the run.

    ``stop_at`` (a cron window's end) stops starting calls then; the rest are ``not_sent``.
    ``approve`` sees the pre-flight ``Plan`` before anything is sent; an ``ImporterError`` it
    raises stops this input with nothing sent and no workbook.
    """
    table = _open(path, config, spec)
    out = report_path(config, path)
    summary = FileSummary(
        path,
        "run",
        method=spec.method,
        gateway=gateway_url,
        app_key=credentials.app_key,
        sign_method=config.sign_method,
        limits=_limits(config),
    )
    run = journal.start_run(
        input_path=str(path),
        input_key=input_key(path),
        app_key=credentials.app_key,
        method=spec.method,
    )
    try:
        plan = _plan(path, table, spec, run, config)
        if approve is not None:
            approve(plan)
    except BaseException:
        run.finish()
        raise
    builder = RequestBuilder(
        spec, credentials, config.sign_method, partner_id=f"top-import-{__version__}"
    )
    progress = Progress(config.progress, label=path.name, total=table.estimate_rows())
    feed = _Feed(table, spec, run, config, summary, progress.update)

    def on_start(record: RequestRecord) -> asyncio.Future[None]:
        return run.in_flight_soon(record.payload_hash)

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        note = feed.notes.pop(record.source_row, None)
        if note:
            outcome.error = f"{note}; {outcome.error}" if outcome.error else note
        run.settle_soon(record.source_row, record.payload_hash, outcome)
        progress.update(outcome.status)

    settings = DispatchSettings(
        qps=min(AUTO_START_QPS, config.qps_max) if config.qps_auto else config.qps,
        concurrency=config.concurrency,
        retries=config.retries,
        max_ban=config.max_ban,
        canary=config.canary,
        max_failure_rate=config.max_failure_rate,
        qps_auto=config.qps_auto,
        qps_max=config.qps_max,
    )
    try:
        async with Gateway(
            gateway_url, concurrency=config.concurrency, timeout=config.timeout
        ) as gateway:
            dispatcher = Dispatcher(
                builder, gateway, settings, on_start=on_start, on_outcome=on_outcome
            )
            # Installed until the workbook is written: a signal then only marks the exit code.
            with _signals(dispatcher, summary), _deadline(dispatcher, stop_at):
                started = time.monotonic()
                try:
                    result = await dispatcher.run(feed.records())
                finally:
                    summary.send_seconds = time.monotonic() - started
                    progress.close()
                    run.flush()
                summary.stop_reason, summary.message = result.stop_reason, result.message
                if dispatcher.rate_policy is not None:
                    summary.limits["qps auto reached"] = round(dispatcher.pacer.qps, 1)
                    summary.limits["qps auto throttles"] = dispatcher.rate_policy.throttles
                if result.stop_reason is StopReason.DEADLINE and stop_at is not None:
                    summary.message = (
                        f"stopped starting calls at {stop_at:%Y-%m-%d %H:%M} (--deadline / "
                        "--max-runtime); the rows not sent are in the workbook, and rerunning "
                        "the same command resumes with them"
                    )
                summary.ended = time.time()
                summary.workbook = _write_report(table, run, out, summary)
    finally:
        run.finish()
    return summary


def _plan(path: Path, table: InputTable, spec: ApiSpec, run: RunJournal, config: Config) -> Plan:
    """Pass one, the pre-flight: count what pass two will send; record nothing."""
    tally = _Feed(table, spec, run, config, FileSummary(path, "run"), lambda _: None).count()
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


@contextlib.contextmanager
def _signals(dispatcher: Dispatcher, summary: FileSummary):
    """SIGINT/SIGTERM: stop starting calls; a second SIGINT also cancels the calls in flight."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        if summary.interrupt_signal is None:
            summary.interrupt_signal = signum
            print(
                "top-import: stopping — letting calls in flight finish "
                "(Ctrl-C again to stop at once)",
                file=sys.stderr,
            )
            dispatcher.stop(StopReason.INTERRUPTED)
        elif signum == signal.SIGINT:
            dispatcher.abort()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handle, signum)
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
    delay = max(0.0, (stop_at - datetime.now(stop_at.tzinfo)).total_seconds())
    handle = asyncio.get_running_loop().call_later(delay, dispatcher.stop, StopReason.DEADLINE)
    try:
        yield
    finally:
        handle.cancel()


def _write_report(table: InputTable, run: RunJournal, out: Path, summary: FileSummary) -> Path:
    """Pass two: the input again beside the journal's outcomes, both in source-row order."""
    outcomes = run.results()
    pending = next(outcomes, None)
    counts_from_journal = FileSummary(summary.input, summary.command)
    with ReportWriter(out, table.headers) as writer:
        for row in table.rows():
            while pending is not None and pending[0] < row.source_row:
                pending = next(outcomes, None)
            if pending is not None and pending[0] == row.source_row:
                outcome = pending[1]
            else:  # cannot happen unless the file changed between the passes
                outcome = Outcome(Status.NOT_SENT, error="no outcome recorded for this row")
            counts_from_journal.count(outcome)
            writer.write(row, outcome)
        summary.counts = counts_from_journal.counts
        summary.sub_codes = counts_from_journal.sub_codes
        summary.calls = counts_from_journal.calls
        return writer.close(summary.sheet())
