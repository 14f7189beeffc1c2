"""One input file through the whole flow: loader -> records -> dispatcher -> journal -> reporter.

``check_file`` (validate, dry run) makes one pass and writes the workbook as it goes.
``run_file`` makes three over a private copy of the input taken at the start (``snapshot``), so
every pass reads the same bytes whatever happens to the file meanwhile:

1. the **pre-flight** (``_preflight``) counts what would be sent (the ``Triage`` of every row:
   validation, duplicates and journal look-ups; nothing recorded) for the ``Plan`` the caller
   approves;
2. the **send** pass (``_send``) streams the rows to send into the dispatcher, which claims each
   payload in the journal before its call and commits every outcome;
3. the **report** pass (``_report``) reads the copy again beside the journal's outcomes (both in
   source-row order, paired by row number and a digest of the cells) and writes the workbook,
   so memory does not grow with the row count.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from importer import __version__, exits, snapshot
from importer.advice import CHECK_ADVICE
from importer.config import Config
from importer.dispatcher import Dispatcher, DispatchSettings
from importer.errors import ImporterError, InputError, JournalError, UsageError
from importer.events import NO_EVENTS, Event, EventKind, Events
from importer.gateway import Gateway
from importer.i18n import N_, _, language
from importer.interrupts import Interrupts
from importer.journal import UNKNOWN_STATES, Journal, QuotaView, RunEnd, RunJournal
from importer.labels import Sheet, is_label, label
from importer.loader import InputTable, check_path, open_input
from importer.pacing import AUTO_START_QPS, paced_rate
from importer.progress import Progress
from importer.protocol import Credentials, RequestBuilder
from importer.reasons import explain
from importer.reporter import ReportWriter
from importer.rows import Decision, Outcome, RequestRecord, Row, Status
from importer.sharing import shared_quota
from importer.spec import ApiSpec
from importer.steps import IN_FLIGHT_AT_THE_END, NEVER_TRIED, StopReason
from importer.summary import Dashboard, FileSummary, Plan
from importer.triage import DONE, SEND, Done, Triage

SNAPSHOT_FOLDER = ".top-import-snapshots"  # beside the journal: the runs' private input copies
_BATCH = 2000  # rows without a call are committed in batches: a crash loses no call state


def report_path(config: Config, input_path: Path) -> Path:
    path = config.out or config.out_dir / f"{input_path.stem}.result.xlsx"
    if path.resolve() == input_path.resolve():
        raise UsageError(
            _("--out {path} is the input file itself; choose another output path.").format(
                path=path
            )
        )
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


def _progress(
    config: Config, path: Path, phase: str, table: InputTable, events: Events = NO_EVENTS
) -> Progress:
    label = f"{path.name}: {phase}"
    return Progress(
        config.progress,
        label,
        total=table.estimate_rows(),
        quiet=config.quiet,
        events=events,
        source=path,
        phase=phase,
    )


def _open(path: Path, config: Config, spec: ApiSpec) -> InputTable:
    return open_input(path, spec, sheet=config.sheet, column_map=config.columns)


def _triage(spec: ApiSpec, table: InputTable, run_journal: RunJournal | None = None) -> Triage:
    reported_run = table.reported_run if table.has_decisions else None
    return Triage(
        spec, table.columns, run_journal, fed_back=table.fed_back, reported_run=reported_run
    )


def _writer(
    out: Path, table: InputTable, spec: ApiSpec, like: Path, call_columns: bool = True
) -> ReportWriter:
    """The report of ``table``: its ID columns (every String field's) formatted as Text; no
    more open than the input ``like`` (the user's file; ``table`` may be the private copy)."""
    text = [
        table.columns[f.name]
        for f in spec.fields
        if f.item_type == "String" and f.name in table.columns
    ]
    numbers = [
        table.columns[f.name] for f in spec.fields if f.type == "Number" and f.name in table.columns
    ]
    return ReportWriter(
        out,
        table.headers,
        call_columns=call_columns,
        text_columns=text,
        number_columns=numbers,
        like=like,
        rows=table.estimate_rows(),
    )


def _sheet_notes(shown: Path, table: InputTable, config: Config, spec: ApiSpec) -> list[str]:
    """A whole result workbook fed back is read from its first sheet, ``results``; when its
    ``failed`` sheet holds edits (a row's cells differ from the same row in ``results``) or its
    ``check`` sheet holds decisions, say which sheet was read and how to send the other."""
    if table.fed_back and is_label(table.sheet, Sheet.CHECK) and not table.has_decisions:
        return [
            _(
                "{path}: its check sheet has no decision column (renamed or deleted?), so every "
                "row stays unknown; name the column decision again and write done or resend in it."
            ).format(path=shown)
        ]
    if config.sheet is not None or not table.fed_back or not is_label(table.sheet, Sheet.RESULTS):
        return []
    notes = []
    failed = _sheet_of(table, label(Sheet.FAILED), config, spec)
    if failed is not None:
        edited = {row.shown_row: row.cells for row in failed.rows()}
        changed = 0
        if edited:
            for row in table.rows():
                if row.shown_row in edited and edited.pop(row.shown_row) != row.cells:
                    changed += 1
        if changed:
            if changed == 1:
                note = _(
                    "{path}: read its results sheet (the first), not its failed sheet, which has "
                    "edits in 1 row; to send the edited rows, run {path} --sheet failed."
                )
            else:
                note = _(
                    "{path}: read its results sheet (the first), not its failed sheet, which has "
                    "edits in {count} rows; to send the edited rows, run {path} --sheet failed."
                )
            notes.append(note.format(path=shown, count=f"{changed:,}"))
    check = _sheet_of(table, label(Sheet.CHECK), config, spec)
    if check is not None:
        decided = sum(1 for row in check.rows() if (row.decision or "").strip())
        if decided:
            if decided == 1:
                note = _(
                    "{path}: read its results sheet (the first), not its check sheet, which has "
                    "1 decision; to apply them, run {path} --sheet check."
                )
            else:
                note = _(
                    "{path}: read its results sheet (the first), not its check sheet, which has "
                    "{count} decisions; to apply them, run {path} --sheet check."
                )
            notes.append(note.format(path=shown, count=f"{decided:,}"))
    return notes


def _sheet_of(table: InputTable, name: str, config: Config, spec: ApiSpec) -> InputTable | None:
    """Another sheet of a result workbook, with the same columns, or None."""
    try:
        other = open_input(table.path, spec, sheet=name, column_map=config.columns)
    except ImporterError:
        return None
    return other if other.headers == table.headers and other.fed_back else None


@contextlib.contextmanager
def _named(path: Path, shown: Path | None) -> Iterator[None]:
    """An error's sentence names the input as the caller knows it (``shown``), not the
    temporary file it was written to."""
    if shown is None:
        yield
        return
    try:
        yield
    except (InputError, JournalError, UsageError) as exc:
        text = str(exc).replace(str(path), str(shown))
        if text == str(exc):
            raise
        raise type(exc)(text) from None


# -- validate and dry run: one pass, no network --------------------------------------------------


def check_file(
    path: Path,
    config: Config,
    spec: ApiSpec,
    builder: RequestBuilder | None = None,
    shown: Path | None = None,
    events: Events = NO_EVENTS,
) -> FileSummary:
    """``validate`` (builder None) or ``--dry-run`` (every valid request built and signed);
    ``shown`` and ``events`` as for ``run_file``."""
    with _named(path, shown), language(config.language):
        name = shown or path
        table = _open(path, config, spec)
        summary = FileSummary(name, "dry-run" if builder else "validate", method=spec.method)
        summary.notes += _sheet_notes(name, table, config, spec)
        summary.limits = _limits(config)
        out = report_path(config, path)
        triage = _triage(spec, table)
        now = datetime.now(timezone.utc)
        progress = _progress(config, name, "checking", table, events)
        with _writer(out, table, spec, path, call_columns=False) as writer:
            for row in table.rows():
                progress.advance()
                decided, _note = triage.decide(row)
                if isinstance(decided, Outcome):
                    outcome = decided
                    if events:
                        events(_problem(name, row, outcome, table))
                else:
                    outcome = Outcome(Status.VALID)
                    if builder is not None and isinstance(decided, RequestRecord):
                        builder.build(decided, now)
                summary.rows_read += 1
                summary.count(outcome, row.shown_row)
                writer.write(row, explain(outcome))
            summary.ended = time.time()
            progress.close()
            summary.workbook = writer.close(_dashboard(summary, out))
        events(Event(EventKind.FINISHED, name, summary=summary))
        return summary


def _problem(name: Path, row: Row, outcome: Outcome, table: InputTable) -> Event:
    """A row a check will not send, for an observer: its number, outcome, field and cell."""
    index = table.columns.get(outcome.field)
    value = row.cells[index] if index is not None and index < len(row.cells) else ""
    return Event(
        EventKind.PROBLEM, name, status=outcome.status, source_row=row.shown_row,
        outcome=outcome, field=outcome.field, value=value,
    )  # fmt: skip


# -- run: pre-flight, send, report ----------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One input's run, as the caller asked for it: what its three passes share."""

    path: Path  # the input as the user named it (the passes read the private copy)
    out: Path  # the result workbook
    config: Config
    spec: ApiSpec
    credentials: Credentials
    builder: RequestBuilder
    gateway_url: str
    stop_at: datetime | None  # a cron window's end: no call starts after it
    # sees the pre-flight's Plan before any call; may raise (not sent) or return an awaitable
    # the run waits for (a person confirming it on serve's page)
    approve: Callable[[Plan], object] | None
    interrupts: Interrupts
    events: Events  # the caller's observer
    exact_plan: bool = False  # the plan's counts, all of them, before the first call (serve's)

    @property
    def resend_unknown(self) -> bool:
        return resends_unknown(self.config, self.spec)


async def run_file(
    path: Path,
    config: Config,
    spec: ApiSpec,
    journal: Journal,
    credentials: Credentials,
    gateway_url: str,
    stop_at: datetime | None = None,
    approve: Callable[[Plan], object] | None = None,
    interrupts: Interrupts | None = None,
    shown: Path | None = None,
    events: Events = NO_EVENTS,
    exact_plan: bool = False,
) -> FileSummary:
    """Send every valid row of one input; the workbook is written whatever stops the run.
    ``shown`` is the name the input goes by in messages, the summary and the journal, when
    ``path`` is a temporary file of the caller's (a DataFrame's workbook).

    The run reads a private copy of the input taken now (``snapshot``), so a file saved while
    it is sending changes nothing about this run; the summary notes it. ``stop_at`` (a cron
    window's end) stops starting calls then; the rest are ``not_sent``. ``approve`` sees the
    pre-flight ``Plan`` before anything is sent; an ``ImporterError`` it raises stops this input
    with nothing sent and no workbook. ``interrupts`` carries a stop asked from outside (the
    CLI's signal handlers, or a caller's ``StopHandle``); without it nothing but the deadline
    stops the run. ``events`` hears of each pass, the plan, each row sent and the end.
    ``exact_plan``: the pre-flight reads every row whatever the input's size (a person reads
    the plan before confirming it), never a plan of a big CSV's line count.
    """
    with _named(path, shown), language(config.language):
        check_path(path)
        job = _Job(
            shown or path,
            report_path(config, path),
            config,
            spec,
            credentials,
            # Before the copy and the lock: a spec that needs a session it lacks stops here.
            RequestBuilder(
                spec, credentials, config.sign_method, partner_id=f"top-import-{__version__}"
            ),
            gateway_url,
            stop_at,
            approve,
            interrupts or Interrupts(),
            events,
            exact_plan,
        )
        copy = snapshot.take(path, journal.folder / SNAPSHOT_FOLDER)
        try:
            with copy.named_as_original(), journal.errors():
                summary = await _run_copy(job, copy, journal)
            if copy.changed():
                summary.input_changed = True
                summary.notes.append(
                    _(
                        "{path} changed while it was being sent; this run sent and reported the "
                        "version it started with. Run it again to send the new content (the "
                        "journal skips what already succeeded)."
                    ).format(path=job.path)
                )
            events(Event(EventKind.FINISHED, job.path, summary=summary))
            return summary
        finally:
            copy.remove()


async def _run_copy(job: _Job, copy: snapshot.Snapshot, journal: Journal) -> FileSummary:
    """The three passes over the private copy: pre-flight, send, report."""
    config = job.config
    table = _open(copy.path, config, job.spec)
    summary = FileSummary(
        job.path,
        "run",
        method=job.spec.method,
        gateway=job.gateway_url,
        app_key=job.credentials.app_key,
        sign_method=config.sign_method,
        limits=_limits(config),
    )
    summary.notes += _sheet_notes(job.path, table, config, job.spec)
    run_journal = journal.start_run(
        input_path=str(job.path),
        input_key=copy.key,
        app_key=job.credentials.app_key,
        method=job.spec.method,
        resend_unknown=job.resend_unknown or not config.resume,
        resend_success=not config.resume,
    )
    summary.run_id = run_journal.run_id
    error: BaseException | None = None
    try:
        plan = _preflight(job, table, run_journal)
        job.events(Event(EventKind.PLAN, job.path, "pre-flight", plan.to_send, plan=plan))
        if job.approve is not None:
            approved = job.approve(plan)
            if inspect.isawaitable(approved):
                await approved
        await _send(job, table, run_journal, summary, plan)
        summary.ended = time.time()
        _report(job, table, run_journal, summary)
        # A signal that came while the workbook was written (the loop was busy) is handled now:
        # it marks this input's exit code, and the caller starts no further input.
        for _tick in range(3):
            await asyncio.sleep(0)
        summary.interrupt_signal = job.interrupts.signal
    except BaseException as exc:
        error = exc
        raise
    finally:
        run_journal.finish(keep_results=summary.workbook is None, end=_run_end(summary, error))
    unknown = summary.counts[Status.UNKNOWN]
    if unknown:
        summary.notes.append(_unknown_note(job.path, unknown, summary.workbook))
    return summary


def _run_end(summary: FileSummary, error: BaseException | None) -> RunEnd:
    """How the run ended, for the journal's history: the exit code its summary (or the error
    that stopped it) gives, its counts and its workbook."""
    if error is None:
        code: int | None = int(exits.for_file(summary))
    else:
        code = int(exits.for_error(error)) if isinstance(error, ImporterError) else None
    workbook = str(summary.workbook.resolve()) if summary.workbook else None
    return RunEnd(code, summary.counts_by_word(), workbook)


def _unknown_note(path: Path, unknown: int, workbook: Path | None) -> str:
    """What to do about the rows whose answer was lost, where they are listed."""
    if unknown == 1:
        if workbook:
            note = _(
                "{path}: 1 row unknown: the call may have reached the platform but no answer "
                "came back. They are listed in the check sheet of {workbook}: {advice}."
            )
        else:
            note = _(
                "{path}: 1 row unknown: the call may have reached the platform but no answer "
                "came back. They are listed in the journal: {advice}."
            )
    elif workbook:
        note = _(
            "{path}: {count} rows unknown: the call may have reached the platform but no answer "
            "came back. They are listed in the check sheet of {workbook}: {advice}."
        )
    else:
        note = _(
            "{path}: {count} rows unknown: the call may have reached the platform but no answer "
            "came back. They are listed in the journal: {advice}."
        )
    # the advice says "check it" of one row; here it is said of each (a translation of it has
    # its own words, which the replace leaves as they are)
    advice = _(CHECK_ADVICE).replace(" it ", " each ", 1)
    return note.format(path=path, count=f"{unknown:,}", workbook=workbook, advice=advice)


def _preflight(job: _Job, table: InputTable, run_journal: RunJournal) -> Plan:
    """Pass one: count what the send pass will send; record nothing. A CSV of more than
    ``QUICK_PLAN_ROWS`` whose every line fits the daily quota is not read here: its plan is
    its line count, and the send pass checks each row as it sends (``Plan.estimated``)."""
    most = None if job.exact_plan else table.most_rows()
    if most is not None and most >= QUICK_PLAN_ROWS:
        # Held at once, even by a run the daily-quota check will stop: it ends with the run.
        quota = run_journal.reserve(most, time.time())
        if _fits(most, job.config.daily_quota, quota):
            return _plan(job, Counter({SEND: most}), run_journal, quota, estimated=True)
    triage = _triage(job.spec, table, run_journal)
    progress = _progress(job.config, job.path, "pre-flight", table, job.events)
    tally: Counter[str] = Counter()
    for row in table.rows():
        progress.advance()
        tally[triage.kind(triage.decide(row)[0])] += 1
    progress.close()
    quota = run_journal.reserve(tally[SEND], time.time())
    return _plan(job, tally, run_journal, quota)


QUICK_PLAN_ROWS = 100_000  # a pre-flight over more rows than this takes seconds


def _fits(calls: int, daily_quota: int | None, quota: QuotaView) -> bool:
    """``calls`` fit what is left of the daily quota (always, without one)."""
    return daily_quota is None or calls <= daily_quota - quota.used - quota.reserved


def _plan(
    job: _Job,
    tally: Counter[str],
    run_journal: RunJournal,
    quota: QuotaView,
    estimated: bool = False,
) -> Plan:
    config = job.config
    others = run_journal.peers(time.time()) if config.qps_auto else None
    rate = None
    if not config.qps_auto:  # the even rate of its share of the app key's limit
        rate = paced_rate(min(config.qps, quota.lowest)) / (quota.sending + 1)
    return Plan(
        job.path,
        to_send=tally[SEND],
        already_sent=tally[Status.SKIPPED.value],
        duplicate=tally[Status.DUPLICATE.value],
        invalid=tally[Status.INVALID.value],
        unknown=tally[Status.UNKNOWN.value],
        done=tally[DONE],
        rate=rate,
        qps_max=config.qps_max,
        auto_start=_auto_start(others, config),
        joins=others is not None,
        daily_quota=config.daily_quota,
        used_today=quota.used,
        reserved=quota.reserved,
        reserving=quota.reserving,
        sharing=0 if config.qps_auto else quota.sending,
        estimated=estimated,
    )


class _Feed:
    """Pass two's rows: the records to send, in file order; a row that needs no call is
    settled in the journal as it is met (in batches). Each record yielded leaves its row's
    digest (and a note, for a row resent after an unknown outcome) in ``pending`` until its
    outcome is settled."""

    def __init__(
        self, table: InputTable, triage: Triage, run_journal: RunJournal, summary: FileSummary
    ) -> None:
        self._table, self._triage, self._run_journal, self._summary = (
            table,
            triage,
            run_journal,
            summary,
        )
        self.pending: dict[int, tuple[int, str]] = {}  # source_row -> (digest, note)
        self.on_settled: Callable[[Status], None] = lambda status: None
        self.on_read: Callable[[], object] = lambda: None  # every row read

    def records(self) -> Iterator[RequestRecord]:
        settled: list[tuple[int, Outcome, int]] = []
        for row in self._table.rows():
            self._summary.rows_read += 1
            decided, note = self._triage.decide(row)
            if isinstance(decided, RequestRecord):
                self.pending[row.source_row] = (row.digest(), note)
                yield decided
                continue
            if isinstance(decided, Done):
                self._run_journal.mark_done(
                    row.source_row, decided.record.row_key, decided.outcome, row.digest()
                )
                self.on_settled(Status.SUCCESS)
                continue
            settled.append((row.source_row, decided, row.digest()))
            self._summary.count_reason(decided, row.shown_row)
            self.on_settled(decided.status)
            if len(settled) >= _BATCH:
                self._run_journal.add_rows(settled)
                settled.clear()
        if settled:
            self._run_journal.add_rows(settled)
        self.on_read()


async def _send(
    job: _Job, table: InputTable, run_journal: RunJournal, summary: FileSummary, plan: Plan
) -> None:
    """Pass two: rows into the dispatcher, every claim and outcome into the journal."""
    config = job.config
    progress = _progress(config, summary.input, "sending", table, job.events)
    feed = _Feed(table, _triage(job.spec, table, run_journal), run_journal, summary)
    feed.on_settled = progress.update
    if plan.estimated:  # the quota held on the line count: what is left to send, once known
        feed.on_read = lambda: run_journal.reserve(len(feed.pending), time.time())

    def claim(record: RequestRecord) -> asyncio.Future[Outcome | None]:
        return run_journal.claim_soon(record.row_key)

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        digest, note = feed.pending.pop(record.source_row, (None, ""))
        if note and outcome.attempts:
            outcome.error = f"{note}; {outcome.error}" if outcome.error else note
        run_journal.settle_soon(record.source_row, record.row_key, outcome, digest)
        progress.update(outcome.status, record.source_row, outcome)

    settings = _dispatch_settings(job, run_journal)
    async with Gateway(
        job.gateway_url, concurrency=config.concurrency, timeout=config.timeout
    ) as gateway:
        dispatcher = Dispatcher(job.builder, gateway, settings, claim=claim, on_outcome=on_outcome)
        job.interrupts.attach(dispatcher)
        with _deadline(dispatcher, job.stop_at):
            started = time.monotonic()
            try:
                async with shared_quota(run_journal, dispatcher.quota):
                    result = await dispatcher.run(feed.records())
            finally:
                summary.send_seconds = time.monotonic() - started
                job.interrupts.attach(None)
                progress.close()
                run_journal.flush()
    summary.stop_reason, summary.message = result.stop_reason, result.message
    if dispatcher.rate_policy is not None:
        # the limit it paced to: its own, or a lower one of the runs it shared the key with
        reached = min(dispatcher.rate_policy.rate, dispatcher.quota.others)
        summary.auto_reached = round(reached, 1)
        summary.auto_throttles = dispatcher.rate_policy.throttles
    if result.stop_reason is StopReason.DEADLINE and job.stop_at is not None:
        summary.message = _deadline_message(job.stop_at, summary.started, config)


def _dispatch_settings(job: _Job, run_journal: RunJournal) -> DispatchSettings:
    config = job.config
    return DispatchSettings(
        qps=_auto_start(run_journal.peers(time.time()), config) if config.qps_auto else config.qps,
        concurrency=config.concurrency,
        retries=config.retries,
        max_ban=config.max_ban,
        canary=config.canary,
        max_failure_rate=config.max_failure_rate,
        qps_auto=config.qps_auto,
        qps_max=config.qps_max,
        resend_uncertain=job.resend_unknown,
    )


def _deadline_message(stop_at: datetime, started: float, config: Config) -> str:
    """What the run says when its window closed: named by the option that set it."""
    start = datetime.fromtimestamp(started).astimezone()
    by_deadline = bool(config.deadline) and (
        dataclasses.replace(config, max_runtime=None).stop_at(start) == stop_at
    )
    option = (
        f"--deadline {config.deadline}" if by_deadline else f"--max-runtime {config.max_runtime}"
    )
    at = f"{stop_at:%Y-%m-%d %H:%M}"
    if stop_at.timestamp() <= started:
        if not by_deadline:
            return _(
                "{option} left no time to send, so nothing was sent; give it more time."
            ).format(option=option)
        return _(
            "{option} had already passed when the run started (at {at}), so nothing was sent: a "
            "deadline that passed within the last 12 hours stops a run at once; run it again "
            "inside the window."
        ).format(option=option, at=at)
    return _(
        "stopped starting calls at {at} ({option}); the rows not sent are in the workbook, and "
        "rerunning the same command resumes with them."
    ).format(option=option, at=at)


def _report(job: _Job, table: InputTable, run_journal: RunJournal, summary: FileSummary) -> None:
    """Pass three: the workbook; if it cannot be written, the journal keeps the results."""
    try:
        summary.workbook = _write_report(
            table, run_journal, job.out, summary, job.config, job.spec, events=job.events
        )
    except UsageError as exc:  # a full disk, a folder gone: the journal keeps the rows
        _count_from_journal(run_journal, summary)
        summary.notes.append(
            _(
                "{error} This run's results are kept in the journal: once that is fixed, "
                "'top-import report {path}' writes the workbook (nothing is sent again)."
            ).format(error=exc, path=job.path)
        )


def _auto_start(others: float | None, config: Config) -> float:
    """Where ``--qps auto`` starts: at ``others``, the limit of the runs already sending for the
    app key, else low enough for almost any app's quota."""
    return min(AUTO_START_QPS if others is None else others, config.qps_max)


def resends_unknown(config: Config, spec: ApiSpec) -> bool:
    """At-least-once for calls whose answer was lost: ``--resend-unknown``, else the spec's
    ``idempotent``."""
    return spec.idempotent if config.resend_unknown is None else config.resend_unknown


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


def _paired(
    row: Row,
    recorded: tuple[int, int | None, Outcome] | None,
    unrecorded: Callable[[Row], Outcome] | None = None,
) -> Outcome:
    """The outcome recorded for this row, if it was recorded for these very cells; a row with
    none is ``unrecorded``'s (the report of a killed run), else ``not_sent``."""
    if recorded is None or recorded[0] != row.source_row:
        if unrecorded is not None:
            return unrecorded(row)
        return Outcome(Status.NOT_SENT, error=N_("no outcome recorded for this row"))
    source_row, digest, outcome = recorded
    if digest is not None and digest != row.digest():
        return Outcome(
            Status.UNKNOWN,
            error=N_(
                "the outcome recorded for row {row} belongs to other cells; check this row on "
                "the platform"
            ).format(row=source_row),
        )
    return outcome


def _decided_resend(row: Row) -> bool:
    try:
        return row.decision is not None and Decision.read(row.decision) is Decision.RESEND
    except ValueError:
        return False


class _Unrecorded:
    """What a row the journal holds no outcome of became in a run that died (killed, or its
    machine stopped): the journal's outcomes are committed as they come in batches, the claims
    before each call. An invalid or duplicate row is judged again from the file; a row whose
    payload this run claimed is ``unknown`` (its call was in flight: the platform may have it),
    or ``success`` if that was committed; a row another run settled is as it would have been
    judged; any other row was never tried: ``not_sent``. Call it for every row, in order."""

    def __init__(self, triage: Triage, run_journal: RunJournal) -> None:
        self._triage, self._run_journal = triage, run_journal
        self._decided: RequestRecord | Outcome | Done | None = None

    def see(self, row: Row) -> None:
        self._decided = self._triage.decide(row)[0]

    def __call__(self, row: Row) -> Outcome:
        decided = self._decided
        if isinstance(decided, Outcome):
            return decided
        run_journal = self._run_journal
        record = decided.record if isinstance(decided, Done) else decided
        prior = run_journal.prior(record.row_key) if record is not None else None
        if prior is not None and prior.run_id == run_journal.run_id:
            if prior.state == "success":
                return Outcome(
                    Status.SUCCESS, request_id=prior.request_id, system_time=prior.system_time
                )
            if prior.state in UNKNOWN_STATES:
                return Outcome(Status.UNKNOWN, error=IN_FLIGHT_AT_THE_END)
        elif prior is not None:
            if prior.state in UNKNOWN_STATES and _decided_resend(row):
                return Outcome(Status.NOT_SENT, error=NEVER_TRIED)  # the decision still stands
            refused = run_journal.judge(prior)
            if refused is not None:
                return refused
        return Outcome(Status.NOT_SENT, error=NEVER_TRIED)


def _count_from_journal(run_journal: RunJournal, summary: FileSummary) -> None:
    counted = FileSummary(summary.input, summary.command)
    for source_row, outcome in run_journal.results():
        counted.count(outcome, source_row)
    summary.take_counts(counted)


def rebuild_report(path: Path, config: Config, spec: ApiSpec, journal: Journal) -> FileSummary:
    """``top-import report``: the workbook of the last run of ``path`` whose results the journal
    kept (its workbook could not be written, or it was killed), from the file as it is now; no
    network. A row whose cells changed since is not paired with the old outcome."""
    check_path(path)
    with journal.errors(), language(config.language):
        return _rebuild_report(path, config, spec, journal)


def _rebuild_report(path: Path, config: Config, spec: ApiSpec, journal: Journal) -> FileSummary:
    run_journal = journal.last_results(path)
    if run_journal is None:
        raise UsageError(
            _(
                "{journal} holds no results of a run of {path} to report: they are kept only "
                "when a run could not write its workbook or was killed, until the next run of it."
            ).format(journal=journal.path, path=path)
        )
    table = _open(path, config, spec)
    summary = FileSummary(path, "report", method=spec.method, limits=_limits(config))
    summary.run_id = run_journal.run_id
    summary.ended = time.time()
    out = report_path(config, path)
    unrecorded = _Unrecorded(_triage(spec, table), run_journal)
    summary.workbook = _write_report(table, run_journal, out, summary, config, spec, unrecorded)
    summary.rows_read = sum(summary.counts.values())
    # The journal keeps the results (``report`` may be asked again) until the next run of it.
    return summary


def _write_report(
    table: InputTable,
    run_journal: RunJournal,
    out: Path,
    summary: FileSummary,
    config: Config,
    spec: ApiSpec,
    unrecorded: _Unrecorded | None = None,
    events: Events = NO_EVENTS,
) -> Path:
    """The report pass: the input again beside the journal's outcomes, both in source-row order,
    each outcome paired with its row by row number and the digest of its cells."""
    outcomes = run_journal.paired_results()
    pending = next(outcomes, None)
    counts_from_journal = FileSummary(summary.input, summary.command)
    progress = _progress(config, summary.input, "writing the workbook", table, events)
    with _writer(out, table, spec, summary.input) as writer:
        for row in table.rows():
            progress.advance()
            while pending is not None and pending[0] < row.source_row:
                pending = next(outcomes, None)
            if unrecorded is not None:
                unrecorded.see(row)
            outcome = _paired(row, pending, unrecorded)
            counts_from_journal.count(outcome, row.shown_row)
            writer.write(row, explain(outcome, summary.stop_reason))
        summary.take_counts(counts_from_journal)
        summary.per_minute = run_journal.calls_per_minute()
        progress.close()
        return writer.close(_dashboard(summary, out))


def _dashboard(summary: FileSummary, out: Path) -> Dashboard:
    """The summary sheet of ``summary``, with the exit code it ends with once ``out`` is
    written."""
    code = exits.for_file(dataclasses.replace(summary, workbook=out))
    return summary.dashboard(code, code.meaning)
