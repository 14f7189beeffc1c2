"""Use top-import from Python: ``run`` a file, a pandas DataFrame or rows; ``validate`` them.

    import importer

    result = importer.run("tickets.xlsx", simulate=True, qps=50)
    result.exit_code, result.counts, result.workbook
    for row in result.rows(): ...          # the results sheet, one dict per input row
    result.to_pandas()                     # the same, as a DataFrame ('top-import[pandas]')

Every option of the CLI is a keyword argument of the same name in snake_case (``qps`` — a number
or ``"auto"`` —, ``concurrency``, ``journal``, ``resend_unknown``, ``api`` — a method or a spec
path —, ``out``, ``deadline``, ...), with the same defaults, environment variables
(``TOP_APP_KEY``...) and ``importer.toml``; ``out=False`` keeps no workbook. Credentials may also
be keyword arguments (``app_key``, ``app_secret``, ``session``): never logged or stored, as on
the CLI. ``progress`` is off unless asked for.

A DataFrame or rows are an input like any other: written to a private workbook — text as text,
an int as exact text, a float as a number cell, ``None``/``NaN`` as an empty cell — and then
read, checked and sent exactly as a file is, so a float column of 16+ digit IDs has lost
digits exactly as an Excel number cell has, and its rows are invalid, each saying so.

Errors are the ``ImporterError`` tree, never ``SystemExit``: an input that cannot be sent raises
it (``UsageError``, ``InputError``, ``LockedError``...), and a run the platform or the failure
policies stopped (exit code 3) raises ``AbortedError``, whose ``result`` holds the workbook and
whose message quotes the digest. No signal handler is installed unless ``handle_signals=True``;
nothing global is left behind, so calls may follow each other, and ``run_async`` runs inside a
caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from importer import exits, notify
from importer.config import SECRET_KEYS, Config, given, load_config
from importer.errors import AbortedError, ImporterError, UsageError
from importer.events import NO_EVENTS, Events, Observer
from importer.exits import ExitCode
from importer.i18n import LANGS, _, choose, lang_from_env, language
from importer.inputs import as_input_file, check_outputs, per_input_configs
from importer.interrupts import Interrupts, StopHandle
from importer.interrupts import handle_signals as install_handlers
from importer.journal import open_journal
from importer.labels import SOURCE_ROW
from importer.pipeline import check_file, run_file
from importer.protocol import Credentials, RequestBuilder
from importer.report_reader import pandas_column, result_rows
from importer.spec import ApiSpec, load_spec
from importer.summary import FileSummary, Plan, summary_document
from importer.target import (
    API_FOLDER,
    SendTarget,
    scratch_folder,
    wants_own_journal,
    with_own_journal,
)

_OPTIONS = frozenset(f.name for f in fields(Config)) - {"qps_auto"}


@dataclass
class Result:
    """What happened to one input: the CLI's exit code, the counts per status, the workbook."""

    exit_code: int
    counts: dict[str, int]
    workbook: Path | None  # None with out=False
    summary: FileSummary = field(repr=False)
    _report: Path | None = field(default=None, repr=False)  # where rows() reads
    _scratch: Any = field(default=None, repr=False)  # keeps an out=False workbook until dropped
    _numbers: frozenset[str] = field(default=frozenset(), repr=False)  # the spec's Number fields
    _index: Any = field(default=None, repr=False)  # a DataFrame input's index, by position

    def rows(self) -> Iterator[dict[str, object]]:
        """One dict per input row, in input order: ``source_row``, the input's cells, then
        ``status``, ``code``, ``msg``, ``sub_code``, ``sub_msg``, ``request_id``,
        ``system_time``, ``attempts``, ``elapsed_ms``, ``error``."""
        if self._report is None:
            return
        # a generator of the result's own, so that an out=False copy lives while it is read
        yield from result_rows(self._report)

    def to_pandas(self) -> Any:
        """``rows()`` as a pandas DataFrame (pandas is the optional extra ``[pandas]``)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError(
                _(
                    "to_pandas() needs pandas: pip install 'top-import[pandas]'; rows() needs "
                    "nothing."
                )
            ) from None
        frame = pd.DataFrame(list(self.rows()))
        for column in frame.columns:
            frame[column] = pandas_column(pd, frame[column], column in self._numbers)
        if self._index is not None and SOURCE_ROW in frame.columns and len(frame):
            # source_row is the DataFrame's position + 2 (as if its header were row 1)
            frame.index = self._index.take(frame[SOURCE_ROW].astype("int64").to_numpy() - 2)
        return frame


def run(source: Any, **options: Any) -> Result:
    """Send every valid row of ``source`` (a path, a pandas DataFrame or an iterable of dicts);
    see the module's docstring for the options. Not inside a running event loop: there, await
    ``run_async``."""
    with _language_of(options):
        _no_running_loop("run")
    return asyncio.run(run_async(source, **options))


@contextlib.contextmanager
def _language_of(options: Mapping[str, Any]) -> Iterator[None]:
    """The call's sentences (its errors, its warnings) in ``lang=``, else in the locale's
    language, as the CLI's are: until its settings are read, when ``_prepared`` moves to theirs
    (``lang`` in importer.toml counts too)."""
    lang = options.get("lang")
    with language(lang if lang in LANGS else lang_from_env()):
        yield


def _no_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running: the usual case
        return
    raise UsageError(
        _(
            "importer.{name}() was called inside a running event loop (a Jupyter notebook?); "
            "there, await importer.{name}_async(...) instead."
        ).format(name=name)
    )


async def run_async(
    source: Any,
    *,
    input_name: str | None = None,
    config_file: str | os.PathLike | None = None,
    handle_signals: bool = False,
    on_event: Observer | None = None,
    stop: StopHandle | None = None,
    approve: Callable[[Plan], object] | None = None,
    **options: Any,
) -> Result:
    """``run`` as a coroutine, for a caller that has an event loop already. ``input_name``
    names the input in messages, the summary and the journal (default: its path, or
    ``dataframe`` / ``rows``); ``on_event``
    hears of each pass, the plan, each row sent and the end (``importer.Event``); ``stop`` is a
    ``StopHandle`` whose ``stop()``/``abort()`` does what SIGINT / a second Ctrl-C does;
    ``approve`` sees the pre-flight's ``Plan`` before the first call (after the daily-quota
    check): it may raise an ``ImporterError`` (nothing is sent) or return an awaitable the run
    waits for (a person confirming the plan)."""
    with _language_of(options):
        prepared = _prepared(source, input_name, config_file, options, "result")
        async with prepared as (path, config, keep, shown):
            configs = per_input_configs([path], config, "result")
            check_outputs(config, configs)
            interrupts = stop.bind(asyncio.get_running_loop()) if stop else Interrupts()
            if handle_signals and threading.current_thread() is not threading.main_thread():
                raise UsageError(
                    _(
                        "handle_signals=True works only in the main thread (Python delivers "
                        "signals there); in another thread, pass handle_signals=False and stop "
                        "the run from your code, or run it in the main thread."
                    )
                )
            with install_handlers(interrupts) if handle_signals else contextlib.nullcontext():
                sent = await send_files(
                    [path],
                    config,
                    configs=configs,
                    approve=_then(_approve(config), approve),
                    interrupts=interrupts,
                    shown={path: shown} if shown else None,
                    events=Events(on_event),
                    exact_plan=approve is not None,  # the caller reads the plan's counts
                )
            if not sent:  # stopped before it began
                raise UsageError(
                    _(
                        "{path}: not sent: the run was stopped (its StopHandle) before it began."
                    ).format(path=shown or path)
                )
            [ended] = sent
            if isinstance(ended, ImporterError):
                summaries, code = [], exits.for_error(ended)
            else:
                summaries, code = [ended], exits.for_file(ended)
            for warning in await command_ended(config, "run", summaries, code):
                warnings.warn(warning, RuntimeWarning, stacklevel=2)
            if isinstance(ended, ImporterError):
                raise ended
            result = _result(ended, keep, source, config.api)
        if result.exit_code == ExitCode.ABORTED:
            raise AbortedError(result.summary.message or ExitCode.ABORTED.meaning, result)
        return result


def validate(
    source: Any,
    *,
    input_name: str | None = None,
    config_file: str | os.PathLike | None = None,
    on_event: Observer | None = None,
    **options: Any,
) -> Result:
    """Check every row of ``source`` against the API spec; nothing is signed or sent. Inside
    a running event loop (a Jupyter notebook), await ``validate_async`` instead."""
    with _language_of(options):
        _no_running_loop("validate")
    return asyncio.run(
        validate_async(
            source, input_name=input_name, config_file=config_file, on_event=on_event, **options
        )
    )


async def validate_async(
    source: Any,
    *,
    input_name: str | None = None,
    config_file: str | os.PathLike | None = None,
    on_event: Observer | None = None,
    **options: Any,
) -> Result:
    """``validate`` as a coroutine, for a caller with an event loop already (Jupyter). The
    check itself is CPU work: it runs in a thread, so the loop stays responsive (and
    ``on_event`` is called in that thread)."""
    with _language_of(options):
        prepared = _prepared(source, input_name, config_file, options, "validate")
        async with prepared as (path, config, keep, shown):
            configs = per_input_configs([path], config, "validate")
            check_outputs(config, configs)
            spec = load_spec(config.api)
            summary = await asyncio.to_thread(
                check_file, path, configs[path], spec, None, shown, Events(on_event)
            )
            code = exits.for_file(summary)
            for warning in await command_ended(config, "validate", [summary], code):
                warnings.warn(warning, RuntimeWarning, stacklevel=2)
            return _result(summary, keep, source, config.api)


async def send_files(
    paths: Sequence[Path],
    config: Config,
    *,
    configs: Mapping[Path, Config] | None = None,
    approve: Callable[[Plan], None] | None = None,
    interrupts: Interrupts | None = None,
    on_file: Callable[[Path, FileSummary | ImporterError], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
    shown: Mapping[Path, Path] | None = None,
    events: Events = NO_EVENTS,
    loaded: tuple[ApiSpec, Credentials | None] | None = None,
    exact_plan: bool = False,
) -> list[FileSummary | ImporterError]:
    """Send ``paths`` one after another on one journal and one gateway (or simulator): what the
    CLI's ``run`` and ``run_async`` both do. Each input's summary, or the ``ImporterError`` that
    stopped it before anything was sent, goes to ``on_file`` as soon as it ends (the CLI prints
    it and archives the input there) and into the list returned. A stop in ``interrupts``
    starts no further input. ``configs``: each input's own (its workbook), default ``config``.
    ``loaded``: the spec and credentials when the caller has loaded them already (the CLI, to
    refuse early), so they are read once. ``exact_plan``: as for ``run_file``.
    """
    spec, credentials = loaded or load_for(config)
    interrupts = interrupts or Interrupts()
    stop_at = config.stop_at(datetime.now().astimezone())
    ended: list[FileSummary | ImporterError] = []
    async with SendTarget(config, credentials, spec, say) as (url, creds):
        RequestBuilder(spec, creds, config.sign_method)  # a session it needs: before the journal
        journal = open_journal(config.journal, config.out_dir)
        try:
            for path in paths:
                if interrupts.stopped:
                    break  # a stop asked from outside starts no further input
                try:
                    outcome: FileSummary | ImporterError = await run_file(
                        path,
                        (configs or {}).get(path, config),
                        spec,
                        journal,
                        creds,
                        url,
                        stop_at,
                        approve or _approve(config),
                        interrupts,
                        (shown or {}).get(path),
                        events,
                        exact_plan,
                    )
                except ImporterError as exc:
                    outcome = exc
                ended.append(outcome)
                if on_file is not None:
                    on_file(path, outcome)
        finally:
            journal.close()
    return ended


def load_for(config: Config) -> tuple[ApiSpec, Credentials | None]:
    """The API's spec and, unless the platform is simulated, the credentials to sign with."""
    credentials = None if config.simulate else config.credentials()  # first, as before
    return load_spec(config.api), credentials


async def command_ended(
    config: Config,
    command: str,
    summaries: Sequence[FileSummary],
    code: int,
    error: str = "",
    refused: Sequence[tuple[Path, str, int]] = (),
) -> list[str]:
    """What every command does as it ends: the ``summary_json`` document, then the ``notify``
    messages (``error``: what stopped it before any input; ``refused``: the inputs stopped
    before they were sent). Returns the warnings (a receiver that failed, a summary that could
    not be written); the exit code stays."""
    problems = []
    if config.summary_json is not None:
        problem = write_summary_json(
            config.summary_json, summary_document(summaries, code, error, refused)
        )
        problems += [problem] if problem else []
    if not config.notify or (config.notify_on == "failure" and code == ExitCode.OK):
        return []
    return problems + await notify.send(
        config.notify, config.notify_format, command, summaries, code, config.notify_secret, error
    )


def write_summary_json(path: Path, document: dict) -> str:
    """Write the ``--summary-json`` document whole (a temporary file renamed over it, so a
    scheduler never reads half of one, nor last night's after a failure); returns the warning
    when it cannot be written, else ""."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return _("warning: cannot write the summary {path}: {why}").format(
            path=path, why=exc.strerror or exc
        )
    return ""


@contextlib.asynccontextmanager
async def _prepared(
    source: Any,
    input_name: str | None,
    config_file: str | os.PathLike | None,
    options: dict[str, Any],
    kind: str,
) -> AsyncIterator[tuple[Path, Config, bool, Path | None]]:
    """The input as a file, the run's ``Config``, whether its workbook is kept (not with
    ``out=False``), and the name a DataFrame or rows go by (None for a path); what they need
    lives until the block ends."""
    no_workbook = options.get("out") is False
    if no_workbook:
        options = {k: v for k, v in options.items() if k != "out"}
    config = _config(options, config_file)
    choose(config.language)  # lang in importer.toml too, now that the settings are read
    with scratch_folder(API_FOLDER) as scratch:
        folder = Path(scratch)
        if no_workbook:
            config = replace(config, out=None, out_dir=folder / "reports")
        settings = Path(config_file) if config_file else None
        if kind == "result" and wants_own_journal(config, given("journal", options, settings)):
            config = with_own_journal(config, folder)
        path = as_input_file(source, input_name, folder)
        if input_name:  # a file of the caller's (an upload of serve's) goes by its own name
            shown: Path | None = Path(input_name)
        else:
            shown = None if isinstance(source, (str, os.PathLike)) else Path(path.stem)
        yield path, config, not no_workbook, shown


def _config(options: Mapping[str, Any], config_file: str | os.PathLike | None) -> Config:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise UsageError(
            _("Unknown option {names}; the options are the CLI's, in snake_case.").format(
                names=", ".join(unknown)
            )
        )
    if options.get("archive") is not None:
        raise UsageError(_("archive is the CLI's inbox; move the file yourself after the result."))
    secrets = {k: options[k] for k in SECRET_KEYS if options.get(k) is not None}
    for key, value in secrets.items():
        if not isinstance(value, str):
            raise UsageError(
                _("{key} must be text (a str), not a {type}.").format(
                    key=key, type=type(value).__name__
                )
            )
    flags = {k: v for k, v in options.items() if v is not None and k not in SECRET_KEYS}
    if not flags.get("progress"):
        flags.setdefault("quiet", True)  # no bar and no log line unless progress=True
    config = load_config(flags, os.environ, Path(config_file) if config_file else None)
    return replace(config, **secrets)


def _then(first: Callable[[Plan], None], then: Callable[[Plan], object] | None):
    """``first`` (the daily-quota check), then the caller's ``approve``."""
    if then is None:
        return first

    def approve(plan: Plan) -> object:
        first(plan)
        return then(plan)

    return approve


def _approve(config: Config):
    """The daily-quota check without a terminal: send only with ``yes=True``."""

    def approve(plan: Plan) -> None:
        problem = plan.problem()
        if problem is not None and not config.yes:
            raise UsageError(_("{problem} (yes=True sends anyway)").format(problem=problem))

    return approve


def _result(summary: FileSummary, keep: bool, source: Any = None, api: str | None = None) -> Result:
    code = int(exits.for_file(summary))
    counts = summary.counts_by_word()
    workbook = summary.workbook
    numbers = frozenset(f.name for f in load_spec(api).fields if f.item_type == "Number")
    index = source.index if hasattr(source, "itertuples") and hasattr(source, "index") else None
    extra = {"_numbers": numbers, "_index": index}
    if keep or workbook is None:
        return Result(code, counts, workbook, summary, workbook, **extra)
    # out=False: the workbook was written to the scratch folder, which goes at the end of the
    # call; rows() reads a copy that lives as long as the result.
    scratch = tempfile.TemporaryDirectory(prefix="top-import-result-")
    copy = Path(scratch.name) / workbook.name
    copy.write_bytes(workbook.read_bytes())
    summary = replace(summary, workbook=None)  # it went with the scratch folder
    return Result(code, counts, None, summary, copy, scratch, **extra)


__all__ = ["Result", "run", "run_async", "send_files", "validate", "validate_async"]
