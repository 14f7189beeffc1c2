"""The ``top-import`` command: options -> Config -> one call into the pipeline.

This is the one place where errors become messages and exit codes (decided in ``exits``);
nothing below it prints a traceback or exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from importer import __version__, api, exits, notify
from importer.config import (
    Config,
    config_file_in_use,
    exposed_secret,
    given,
    load_config,
)
from importer.errors import ImporterError, UsageError
from importer.exits import ExitCode
from importer.i18n import (
    LANGS,
    _,
    choose,
    click_speaks,
    lang_from_env,
    lang_in_argv,
    language,
    pgettext,
)
from importer.inputs import archive_input, check_outputs, expand_inputs, per_input_configs
from importer.interrupts import Interrupts, handle_signals
from importer.journal import is_url, open_journal
from importer.loader import CSV_SUFFIXES
from importer.pipeline import check_file, rebuild_report
from importer.protocol import Credentials, RequestBuilder
from importer.rows import Status
from importer.spec import ApiSpec, builtin_methods, load_spec
from importer.summary import FileSummary, Plan, duration_text, listed, plural, summary_document
from importer.target import (
    SIMULATED_FOLDER,
    scratch_folder,
    wants_own_journal,
    with_own_journal,
)

RATE_AFTER_CALLS = 10  # fewer calls than this get no calls/s in the end line


def fail(message: str) -> None:
    """A line on stderr (``top-import: ...``)."""
    _echo(f"top-import: {message}", err=True)


def warn(message: str) -> None:
    """A warning on stderr (``top-import: warning: ...``; Chinese ``top-import: 警告：...``)."""
    fail(_("warning: {warning}").format(warning=message))


def say(line: str) -> None:
    """A line on stdout."""
    _echo(line, err=False)


def _echo(line: str, err: bool) -> None:
    """Once the reader of the stream has gone (``top-import run a b c | head -1``), the rest
    of its output is dropped and the command goes on: every input and the summary get done,
    and the exit code is the import's, not the pipe's."""
    try:
        click.echo(line, err=err)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (sys.stderr if err else sys.stdout).fileno())
        os.close(devnull)


def guarded(func: Callable[..., int]) -> Callable[..., None]:
    """Run a command body; an ImporterError becomes one line on stderr and its exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        _settings.clear()  # (a command run in-process after another must not tell its robots)
        # The language of every sentence, the errors in the settings themselves included:
        # --lang, else the locale; build_config moves to importer.toml's lang once it is read.
        with language(kwargs.get("lang") or lang_from_env()):
            try:
                code = func(*args, **kwargs)
            except ImporterError as exc:
                fail(str(exc))
                code = exits.for_error(exc)
                _tell(func.__name__, code, str(exc), kwargs.get("summary_json"))
            except KeyboardInterrupt:
                fail(_("interrupted."))
                code = ExitCode.SIGINT
        sys.exit(code)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


_settings: list[Config] = []  # the command's config once built: who to tell if it fails


def _tell(command: str, code: int, error: str, summary_json: str | None) -> None:
    """A command an error stopped before any input ended still writes its --summary-json (with
    the exit code and the error: last night's must not stay in place) and tells its --notify
    receivers (in cron, a missing credential is the likeliest failure of all). An error in the
    options themselves leaves no config: the --summary-json given is written all the same."""
    if _settings:
        config = _settings[-1]
        if config.notify or config.summary_json is not None:
            for warning in asyncio.run(api.command_ended(config, command, [], code, error)):
                fail(warning)
    elif summary_json:
        document = summary_document([], code, error)
        problem = api.write_summary_json(Path(summary_json), document)
        if problem:
            fail(problem)


def build_config(flags: dict[str, Any], config_file: str | None) -> Config:
    path = Path(config_file) if config_file else None
    given = {k: v for k, v in flags.items() if v is not None and v != ()}  # () a repeatable unset
    config = load_config(given, os.environ, path)
    choose(config.language)
    in_use = config_file_in_use(path)
    warning = exposed_secret(in_use) if in_use is not None else None
    if warning:
        warn(warning)
    _settings.append(config)
    return config


def summary_line(summary: FileSummary) -> str:
    """``t.csv: 5 rows: 3 success, 2 failed; 5 calls; workbook reports/t.result.xlsx``
    (Chinese: ``3 行成功，2 行失败``: the status in words, as the dashboard shows it)."""
    counts = listed(
        [
            _("{count} {status}").format(count=n, status=pgettext("status", s.value))
            for s, n in sorted(summary.counts.items())
        ]
    )
    line = _("{input}: {rows}: {counts}").format(
        input=summary.input, rows=plural(summary.rows_read, "row"), counts=counts or _("no rows")
    )
    if summary.command == "run":
        calls = plural(summary.calls, "call")
        if summary.calls >= RATE_AFTER_CALLS:  # over a handful, the rate is the first latency
            rate = f"{summary.calls_per_second:.1f}"
            line += _("; {calls}, {rate} calls/s").format(calls=calls, rate=rate)
        else:
            line += _("; {calls}").format(calls=calls)
    if summary.workbook is not None:
        line += _("; workbook {path}").format(path=summary.workbook)
    else:  # it could not be written: the line below says why and what to do
        line += _("; no workbook")
    if summary.archived is not None:
        line += _("; archived to {path}").format(path=summary.archived)
    return line


def finish(
    config: Config,
    command: str,
    summaries: list[FileSummary],
    code: int,
    refused: Sequence[tuple[Path, str, int]] = (),
) -> int:
    """A command's end: the ``--summary-json`` document, then the ``--notify`` messages (a
    receiver that fails is a warning; the exit code stays); ``refused`` are the inputs an
    error stopped before they were sent."""
    problems = asyncio.run(api.command_ended(config, command, summaries, code, refused=refused))
    for warning in problems:
        fail(warning)
    return code


# -- help in the chosen language ----------------------------------------------------------------


@contextlib.contextmanager
def _translated(things: Sequence[Any], attribute: str = "help"):
    """Each thing's ``attribute`` (an English help text: the catalogue's message id) in the
    current language for the block: click reads it there to format the help."""
    kept = [getattr(thing, attribute, None) for thing in things]
    for thing, text in zip(things, kept, strict=True):
        if text:  # a docstring's message id is as click shows it: without its indentation
            setattr(thing, attribute, _(inspect.cleandoc(text)))
    try:
        yield
    finally:
        for thing, text in zip(things, kept, strict=True):
            setattr(thing, attribute, text)


class _Command(click.Command):
    """A command whose ``--help`` is in the chosen language (``--lang``, else the locale)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated([self]):
            super().format_help_text(ctx, formatter)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated(self.get_params(ctx)):
            super().format_options(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        with _translated([self]):
            return super().get_short_help_str(limit)


class _Group(_Command, click.Group):
    command_class = _Command


LANG_OPTION = click.option(
    "--lang",
    type=click.Choice(LANGS),
    help="The language of everything a person reads (messages, --help, the workbook's sheet "
    "names, result columns, dashboard and row errors): zh (中文) or en. Default: from the "
    "locale (LANG=zh_CN.UTF-8 is Chinese). Exit codes, statuses and the --summary-json keys "
    "are the same in both.",
)

# -- shared options ------------------------------------------------------------------------------

_FILE_OPTIONS = [
    click.option("--api", help="Built-in API method, or a SPEC.toml file. Default: the built-in."),
    click.option(
        "--sheet",
        help="Sheet of a workbook to read. Default: the first visible sheet. Of a result "
        "workbook fed back: 'failed' (the rows you fixed) or 'check' (your done/resend "
        "decisions on the unknown rows).",
    ),
    click.option(
        "--out",
        type=click.Path(dir_okay=False),
        help="Result workbook (.xlsx; .csv writes CSV). Only with one input.",
    ),
    click.option(
        "--out-dir",
        type=click.Path(file_okay=False),
        help="Folder of per-input result workbooks. Default: reports/.",
    ),
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="TOML settings file (same names as the options). Default: importer.toml if present.",
    ),
    LANG_OPTION,
    click.option(
        "--progress/--no-progress",
        default=None,
        help="A progress bar on stderr for every pass (checking, pre-flight, sending, writing "
        "the workbook); --no-progress: a log line every few seconds. Default: a bar when "
        "stderr is a terminal.",
    ),
    click.option(
        "--notify",
        multiple=True,
        metavar="URL",
        help="Post a summary when the command ends (repeatable): a DingTalk, Feishu/Lark or "
        "WeCom group robot by its host, else the --summary-json document. TOP_NOTIFY_SECRET "
        "signs DingTalk and Feishu messages.",
    ),
    click.option(
        "--notify-format",
        type=click.Choice(notify.FORMATS),
        help="The receivers' format, whatever their host. Default: by the URL's host.",
    ),
    click.option(
        "--notify-on",
        type=click.Choice(notify.WHEN),
        help="failure: only when the exit code is not 0. Default: always.",
    ),
    click.option(
        "--qps",
        metavar="N|auto",
        help="Never more than N calls in one clock second (validate: for the time estimate); "
        "auto: start low and find the app's limit from the answers (up to --qps-max). "
        "Runs on one journal share the app key's limit. "
        "N: more than 0, at most 10000. Default: 10.",
    ),
]


def file_options(func):
    for option in reversed(_FILE_OPTIONS):
        func = option(func)
    return func


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="top-import")
@click.option(
    "--lang",
    type=click.Choice(LANGS),
    expose_value=False,  # read before click parses (main), so --help is in it too
    help="The language of everything a person reads: zh (中文) or en. Default: the locale.",
)
def cli() -> None:
    """top-import: turn spreadsheet rows (CSV, XLSX, XLS, ODS) into signed Taobao Open Platform
    API calls, one call a row, and report what happened to every row in a result workbook.

    \b
    Credentials come from the environment (never from the command line):
      TOP_APP_KEY, TOP_APP_SECRET, TOP_SESSION, TOP_GATEWAY, TOP_NOTIFY_SECRET
    or from importer.toml (app_key, app_secret, session, gateway, [columns]).

    \b
    Exit codes: 0 all rows success/skipped (validate: all valid) · 1 some rows failed, invalid,
    duplicate, unknown or not sent · 2 usage, configuration or unreadable input, or a run that
    would not fit the daily quota; nothing sent · 3 aborted by a fatal platform error, a
    redirect or an unreachable gateway, or stopped because too many rows failed (canary,
    failure rate) · 130 SIGINT · 143 SIGTERM · 129 SIGHUP (each after writing the workbook).
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@file_options
@click.option("--gateway", help="Gateway URL (env TOP_GATEWAY). Default: the production gateway.")
@click.option(
    "--simulate",
    is_flag=True,
    default=None,
    help="Start the built-in simulator on a free loopback port and send there (TOP_APP_* "
    "ignored), with a temporary journal of its own unless --journal is given.",
)
@click.option("--app-key", help="The app key (env TOP_APP_KEY). The secret is never a flag.")
@click.option(
    "--session",
    metavar="KEY",
    help="Refused: a session key on the command line is readable by other users; "
    "set TOP_SESSION (or session in importer.toml).",
)
# Never taken either; declared so that they get the same explanation, not "No such option".
@click.option("--app-secret", metavar="SECRET", hidden=True)
@click.option("--notify-secret", metavar="SECRET", hidden=True)
@click.option(
    "--sign-method",
    type=click.Choice(["md5", "hmac", "hmac-sha256"]),
    help="Signature method. Default: hmac-sha256.",
)
@click.option(
    "--qps-max",
    type=float,
    help="With --qps auto: never pace above N calls per second. Default: 1000.",
)
@click.option("--concurrency", type=int, help="Ceiling on calls in flight, 1-1000. Default: 8.")
@click.option(
    "--retries", type=int, help="Retries of a transient failure, per row, 0-100. Default: 5."
)
@click.option("--timeout", type=float, help="Seconds per call, up to 3600. Default: 15.")
@click.option(
    "--max-ban",
    type=float,
    help="A throttle ban longer than this many seconds stops the run (exit 3). Default: 300.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False),
    help="The resume journal: a file (SQLite), or postgresql://user@host:5432/db, which "
    "several hosts share (the password from PGPASSWORD, ~/.pgpass or importer.toml, never "
    "here). Env TOP_JOURNAL. Default: reports/journal.sqlite.",
)
@click.option(
    "--no-resume",
    "resume",
    flag_value=False,
    default=None,
    help="Send rows even where the journal says they already succeeded (in runs that ended "
    "before this one started; never beside a run sending the same rows).",
)
@click.option(
    "--resend-unknown/--no-resend-unknown",
    "resend_unknown",
    default=None,
    help="At-least-once: retry a call whose answer was lost (a timeout after sending, a "
    "dropped connection, an unreadable answer), and send again rows an earlier run left "
    "unknown. Off by default (such rows become 'unknown', exit 1, and are never sent twice); "
    "on by default for a spec with idempotent = true.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=None,
    help="Validate, build and sign every request; send nothing.",
)
@click.option(
    "--deadline",
    metavar="HH:MM",
    help="Stop starting calls at this local time (a cron window); the rest are not_sent, exit 1.",
)
@click.option(
    "--max-runtime",
    metavar="DURATION",
    help="Stop starting calls after this long (3600, 90s, 45m, 2h30m; at most 30 days; 0 sends "
    "nothing); exit 1, a rerun resumes.",
)
@click.option(
    "--canary",
    type=int,
    metavar="N",
    help="Send the first N rows at 2 in flight and wait for their answers; if more than "
    "--max-failure-rate of them fail with business errors, stop before the rest (exit 3). "
    "0: off. Default: 20.",
)
@click.option(
    "--max-failure-rate",
    type=float,
    metavar="R",
    help="Business-failure share (isv.*, result.success false) that stops the run (exit 3): "
    "in the canary, and over the last 200 answers. Throttles and transient errors do not "
    "count. 1: never stop. Default: 0.2.",
)
@click.option(
    "--daily-quota",
    type=int,
    metavar="N",
    help="The app's calls per day: before sending, check the run fits what is left of it today "
    "(calls in the journal for this app key since 00:00 GMT+8).",
)
@click.option(
    "--yes",
    is_flag=True,
    default=None,
    help="Send although the pre-flight says the run does not fit the daily quota "
    "(without it: ask on a terminal, else exit 2).",
)
@click.option(
    "--archive",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Move each input whose run ended with exit 0 into DIR (created; an existing name "
    "gets -1, -2, ...). For a cron inbox: run 'inbox/*.xlsx' --archive done/.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Write a machine-readable summary here.",
)
@guarded
def run(inputs: tuple[str, ...], config_file: str | None, **flags: Any) -> int:
    """Send every valid row of INPUT... and write a result workbook per input.

    INPUT may be a quoted glob ('inbox/*.xlsx'): files go one after another, in sorted order.

    \b
    The fix-and-refeed loop, on the result workbook:
      run reports/t.result.xlsx --sheet failed   the rows you fixed in its failed sheet
      run reports/t.result.xlsx --sheet check    your done/resend (已完成/重发) decisions
    Each round writes the next workbook (t-2, t-3, ...), never over one that exists.
    """
    config = build_config(flags, config_file)
    spec, credentials = api.load_for(config)
    if config.dry_run and config.archive is not None:
        raise UsageError(
            _("--archive moves inputs after a real run; it does nothing with --dry-run.")
        )
    with contextlib.ExitStack() as stack:
        if wants_own_journal(config, given("journal", flags, config_file)):
            folder = stack.enter_context(scratch_folder(SIMULATED_FOLDER))
            config = with_own_journal(config, Path(folder))
        return _run_inputs(inputs, flags, config, spec, credentials)


def _run_inputs(
    inputs: tuple[str, ...],
    flags: dict[str, Any],
    config: Config,
    spec: ApiSpec,
    credentials: Credentials | None,
) -> int:
    paths = expand_inputs(inputs, config, say)
    if not paths:
        return finish(config, "run", [], ExitCode.OK)
    configs = per_input_configs(paths, config, "dry-run" if config.dry_run else "result")
    check_outputs(config, configs)
    _warn_idle_options(flags, config, paths)
    if config.dry_run:
        builder = RequestBuilder(spec, credentials or Credentials("", ""), config.sign_method)
        return _per_file(
            paths, config, "dry-run", lambda p: check_file(p, configs[p], spec, builder)
        )
    summaries, code, refused = asyncio.run(_run_all(paths, configs, config, spec, credentials))
    return finish(config, "run", summaries, code, refused)


async def _run_all(
    paths: list[Path],
    configs: dict[Path, Config],
    config: Config,
    spec: ApiSpec,
    credentials: Credentials | None,
) -> tuple[list[FileSummary], int, list[tuple[Path, str, int]]]:
    """The API's ``send_files``, with the signals handled and each input printed (and archived)
    as it ends; also the inputs an error stopped before they were sent."""
    summaries: list[FileSummary] = []
    codes: list[int] = []
    refused: list[tuple[Path, str, int]] = []

    def ended(path: Path, outcome: FileSummary | ImporterError) -> None:
        if isinstance(outcome, ImporterError):
            fail(str(outcome))
            codes.append(exits.for_error(outcome))
            refused.append((path, str(outcome), codes[-1]))
            return
        summary, code = _print_and_archive(path, outcome, config)
        summaries.append(summary)
        codes.append(code)

    interrupts = Interrupts()
    with handle_signals(interrupts):
        await api.send_files(
            paths,
            config,
            configs=configs,
            approve=_preflight(config),
            interrupts=interrupts,
            on_file=ended,
            say=fail,
            loaded=(spec, credentials),
        )
    if interrupts.signal is not None:
        codes.append(exits.for_signal(interrupts.signal))
    return summaries, exits.worst(codes), refused


def _print_and_archive(path: Path, summary: FileSummary, config: Config) -> tuple[FileSummary, int]:
    """One input's end: archived if it ended with exit 0 and ``--archive``; its lines printed.
    Returns its summary (with where it was archived) and its exit code."""
    code = exits.for_file(summary)
    if code == ExitCode.OK and config.archive is not None and summary.input_changed:
        fail(_("{path}: not archived: it changed while it was being sent").format(path=path))
    elif code == ExitCode.OK and config.archive is not None:
        try:
            summary = replace(summary, archived=archive_input(path, config.archive))
        except OSError as exc:
            fail(
                _("{path}: sent, but cannot be moved to {folder}: {why}").format(
                    path=path, folder=config.archive, why=exc
                )
            )
            code = ExitCode.USAGE
    say(summary_line(summary))
    for line in summary.reason_lines():
        say(line)
    if summary.auto_reached is not None:
        fail(
            _("{path}: --qps auto ended at {rate} calls/s after {throttles}").format(
                path=path,
                rate=f"{summary.auto_reached:g}",
                throttles=plural(summary.auto_throttles, "throttle"),
            )
        )
    if summary.message:
        fail(summary.message)
    for note in summary.notes:
        fail(note)
    return summary, code


def _warn_idle_options(flags: dict[str, Any], config: Config, paths: list[Path]) -> None:
    """An option that does nothing here is said once, not silently ignored."""
    if config.sheet:
        for path in paths:
            if path.suffix.lower() in CSV_SUFFIXES:
                warn(
                    _("--sheet {sheet} does nothing for {path} (a CSV file)").format(
                        sheet=config.sheet, path=path
                    )
                )
    if flags.get("qps_max") is not None and not config.qps_auto:
        warn(_("--qps-max does nothing without --qps auto"))


def _preflight(config: Config) -> Callable[[Plan], None]:
    """Print each input's pre-flight line; a run that would not fit the daily quota needs --yes,
    a "yes" on a terminal, or it stops with exit 2 before anything is sent."""

    def approve(plan: Plan) -> None:
        fail(plan.line())
        problem = plan.problem()
        if problem is None:
            return
        if config.yes:
            fail(
                _("{input}: does not fit the daily quota; sending anyway (--yes)").format(
                    input=plan.input
                )
            )
            return
        if sys.stdin.isatty() and sys.stderr.isatty():
            question = _("{problem}. Send anyway?").format(problem=problem)
            if click.confirm(f"top-import: {question}", default=False, err=True):
                return
            raise UsageError(
                _("{input}: not sent (the daily quota check was declined).").format(
                    input=plan.input
                )
            )
        raise UsageError(problem)

    return approve


def _per_file(
    paths: list[Path], config: Config, command: str, job: Callable[[Path], FileSummary]
) -> int:
    codes, summaries, refused = [], [], []
    for path in paths:
        try:
            summary = job(path)
        except ImporterError as exc:
            fail(str(exc))
            codes.append(exits.for_error(exc))
            refused.append((path, str(exc), codes[-1]))
            continue
        summaries.append(summary)
        codes.append(exits.for_file(summary))
        say(summary_line(summary))
        for line in summary.reason_lines():
            say(line)
        for note in summary.notes:
            fail(note)
        valid = summary.counts[Status.VALID]
        if valid and config.qps_auto:
            say(
                _("  sending {rows} with --qps auto takes as long as the app's limit says").format(
                    rows=plural(valid, "valid row")
                )
            )
        elif valid:
            say(
                _("  sending {rows} at --qps {qps} would take about {duration}").format(
                    rows=plural(valid, "valid row"),
                    qps=f"{config.qps:g}",
                    duration=duration_text(valid / config.qps),
                )
            )
    return finish(config, command, summaries, exits.worst(codes), refused)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@file_options
@click.option("--summary-json", type=click.Path(dir_okay=False), help="Machine-readable summary.")
@guarded
def validate(inputs: tuple[str, ...], config_file: str | None, **flags: Any) -> int:
    """Check every row of INPUT... against the API spec; sign and send nothing.

    Writes the same result workbook as `run`, with statuses valid, invalid and duplicate.
    Exit 0 when every row is valid, 1 otherwise, 2 when a file cannot be read.
    """
    config = build_config(flags, config_file)
    spec = load_spec(config.api)
    paths = expand_inputs(inputs, config, say)
    configs = per_input_configs(paths, config, "validate")
    check_outputs(config, configs)
    _warn_idle_options(flags, config, paths)
    return _per_file(paths, config, "validate", lambda p: check_file(p, configs[p], spec))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@file_options
@click.option(
    "--journal",
    type=click.Path(dir_okay=False),
    help="The resume journal: a file (SQLite), or postgresql://user@host:5432/db, which "
    "several hosts share (the password from PGPASSWORD, ~/.pgpass or importer.toml, never "
    "here). Env TOP_JOURNAL. Default: reports/journal.sqlite.",
)
@guarded
def report(inputs: tuple[str, ...], config_file: str | None, **flags: Any) -> int:
    """Write the result workbook of the last run of INPUT... again, from the journal.

    For a run whose workbook could not be written (a full disk) or that was killed: the
    journal keeps its per-row results until the next run of that input. Right after kill -9
    the report finds the run's process gone: rows in flight then are unknown (see the check
    sheet), rows never tried not_sent. No network; nothing is sent. Exit codes as for `run`.
    """
    config = build_config(flags, config_file)
    spec = load_spec(config.api)
    if not is_url(config.journal) and not Path(config.journal).is_file():
        raise UsageError(
            _("There is no journal at {path}; give the run's --journal.").format(
                path=config.journal
            )
        )
    paths = expand_inputs(inputs, config, say)
    configs = per_input_configs(paths, config, rebuild=True)
    check_outputs(config, configs)
    journal = open_journal(config.journal, config.out_dir)
    try:
        return _per_file(
            paths, config, "report", lambda p: rebuild_report(p, configs[p], spec, journal)
        )
    finally:
        journal.close()


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; another than this machine's is warned about (the token is "
    "still asked of every request).",
)
@click.option("--port", default=8700, show_default=True, type=int, help="Port to listen on.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option(
    "--max-upload",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="The largest file the page accepts, in MB.",
)
@click.option("--journal", type=click.Path(dir_okay=False), help="As for run. Env TOP_JOURNAL.")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    help="The runs' workbooks go to its serve/ folder, kept when serve stops (the page's "
    "history offers them). Default: reports.",
)
@click.option("--api", help="As for run: a built-in method or a spec file.")
@click.option(
    "--specs",
    type=click.Path(file_okay=False, exists=True),
    help="A folder of spec files (*.toml) the page offers beside the built-in APIs.",
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="importer.toml.")
@LANG_OPTION
@guarded
def serve(
    host: str,
    port: int,
    open_browser: bool,
    max_upload: int,
    specs: str | None,
    config_file: str | None,
    lang: str | None = None,
    **flags: Any,
) -> int:
    """Start the web page: choose a file, see it checked, send it, watch it, download the result.

    For people who do not use a terminal: prints the page's address with its access token
    (http://127.0.0.1:8700/?token=...). The credentials are the server's (TOP_APP_KEY,
    TOP_APP_SECRET or importer.toml): the page never asks for or shows a secret. Ctrl-C stops
    the runs as Ctrl-C stops one (rows in flight settle, the rest not_sent) and the server.
    """
    from importer.serve import Serve, private_folder, serve_forever

    config = build_config({"lang": lang, **flags}, config_file)
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(
            _(
                "serve listens on {host}: other machines can reach the page; the token is "
                "asked of every request, but anyone with the address can send."
            ).format(host=host)
        )
    options = {k: v for k, v in flags.items() if v is not None}
    server = Serve(
        private_folder(),
        max_upload=max_upload * 1024 * 1024,
        options=options,
        config_file=config_file,
        lang=lang or config.language,
        specs=Path(specs) if specs else None,
        results=config.out_dir / "serve",
    )

    def ready(url: str) -> None:
        click.echo(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        _in_the_foreground(serve_forever(server, host, port, ready), host, port)
    finally:
        server.remove()
    return ExitCode.OK


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=int, help="Port to listen on.")
@click.option("--qps", type=int, help="Calls per clock second per app key before code 7.")
@click.option("--ban-seconds", type=int, default=1, show_default=True, help="Ban announced.")
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Fixed latency.")
@click.option("--jitter-ms", type=float, default=0.0, show_default=True, help="+ random latency.")
@click.option(
    "--fail-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="isp.* errors: transient, so the client retries them (a row fails only when its "
    "--retries run out); for failed rows use --decline-rate.",
)
@click.option(
    "--decline-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Calls declined as a business error (isv.invalid-parameter): failed rows, not retried.",
)
@click.option("--http502-rate", type=float, default=0.0, show_default=True, help="HTTP 502s.")
@click.option("--drop-rate", type=float, default=0.0, show_default=True, help="Dropped calls.")
@click.option(
    "--lost-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Calls accepted whose answer is then lost.",
)
@click.option(
    "--garbled-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Calls accepted, then answered HTTP 200 with an HTML page.",
)
@click.option(
    "--huge-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Calls accepted, then answered with an 8 MiB body.",
)
@click.option("--bad-tenant", type=int, multiple=True, help="tenant_id answered isv.* (repeat).")
@click.option("--seed", type=int, help="Seed of the fault injection.")
@LANG_OPTION
@guarded
def simulate(host: str, port: int, lang: str | None = None, **knobs: Any) -> int:
    """Run the built-in TOP gateway simulator in the foreground (Ctrl-C stops it)."""
    from importer.simulator import SimulatorSettings, serve_forever

    settings = SimulatorSettings(
        qps=knobs["qps"],
        ban_seconds=knobs["ban_seconds"],
        latency_ms=knobs["latency_ms"],
        jitter_ms=knobs["jitter_ms"],
        isp_rate=knobs["fail_rate"],
        http502_rate=knobs["http502_rate"],
        drop_rate=knobs["drop_rate"],
        lost_response_rate=knobs["lost_rate"],
        garbled_rate=knobs["garbled_rate"],
        huge_rate=knobs["huge_rate"],
        bad_tenants=frozenset(knobs["bad_tenant"]),
        decline_rate=knobs["decline_rate"],
        seed=knobs["seed"],
    )

    def ready(url: str) -> None:
        click.echo(f"{url} app_key={settings.app_key} secret={settings.secret}")
        # to paste into the shell that runs top-import: without TOP_GATEWAY it would send to
        # the production gateway
        click.echo(
            f"export TOP_GATEWAY={url} TOP_APP_KEY={settings.app_key} "
            f"TOP_APP_SECRET={settings.secret}"
        )

    _in_the_foreground(serve_forever(settings, host=host, port=port, on_ready=ready), host, port)
    return ExitCode.OK


def _in_the_foreground(server: Coroutine[Any, Any, None], host: str, port: int) -> None:
    """Run a server (``serve``'s page, the simulator) until Ctrl-C; an address it cannot take
    is one sentence."""
    try:
        asyncio.run(server)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UsageError(
            _("cannot listen on {host}:{port} ({why}); try --port.").format(
                host=host, port=port, why=exc.strerror
            )
        ) from None


@cli.command()
@click.argument("spec_file", required=False, type=click.Path())
@LANG_OPTION
@guarded
def apis(spec_file: str | None, lang: str | None = None) -> int:
    """List the built-in API specs: fields, types, required flags and accepted column headers.

    With SPEC_FILE, check that spec file and describe it.
    """
    specs = [load_spec(spec_file)] if spec_file else [load_spec(m) for m in builtin_methods()]
    for spec in specs:
        say(spec.describe())
    return ExitCode.OK


def main() -> None:
    # The language is known before click parses, so that --help and click's own errors
    # ("No such option") are in it: --lang anywhere on the line, else the locale.
    lang = lang_in_argv(sys.argv[1:]) or lang_from_env()
    with language(lang), click_speaks(lang):
        cli(prog_name="top-import")
