"""What a run or a check did to one input (summary line, sheet, JSON) and the pre-flight plan.

``FileSummary`` is filled as rows settle; ``Plan`` is what the pre-flight found before sending.
Neither ever holds the app secret or the session key.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from importer import __version__
from importer.advice import sub_code_advice
from importer.i18n import N_, _, ngettext, pgettext
from importer.labels import Item, Sheet, label
from importer.pacing import AUTO_START_QPS
from importer.protocol import platform_stamp
from importer.rows import Outcome, Status
from importer.steps import StopReason


@dataclass
class FileSummary:
    """What happened to one input file; the CLI turns it into lines, JSON and an exit code."""

    input: Path
    command: str
    workbook: Path | None = None
    counts: Counter[Status] = field(default_factory=Counter)  # rows per status
    sub_codes: Counter = field(default_factory=Counter)
    sub_code_rows: dict = field(default_factory=dict)  # sub_code -> the first row that met it
    sub_code_msgs: dict = field(default_factory=dict)  # sub_code -> the platform's first sub_msg
    reasons: Counter = field(default_factory=Counter)  # invalid rows per reason (field and rule)
    reason_rows: dict = field(default_factory=dict)  # reason -> the first row that had it
    shown_reasons: dict = field(default_factory=dict)  # reason -> it in the run's language
    per_minute: list = field(default_factory=list)  # (minute start, calls): the journal's
    rows_read: int = 0
    calls: int = 0  # requests that left the machine (the journal's and the platform's count)
    attempts: int = 0  # ... and tries that never connected (an unreachable gateway)
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    send_seconds: float = 0.0
    stop_reason: StopReason = StopReason.NONE
    message: str = ""
    interrupt_signal: int | None = None
    limits: dict = field(default_factory=dict)  # the run's settings, as the sheet shows them
    auto_reached: float | None = None  # the rate --qps auto ended at
    auto_throttles: int = 0  # ... after this many throttles
    gateway: str = ""
    app_key: str = ""
    method: str = ""
    sign_method: str = ""
    archived: Path | None = None  # where --archive moved the input
    notes: list[str] = field(default_factory=list)  # lines for the user after the summary line
    input_changed: bool = False  # the file was saved while it was being sent
    run_id: int | None = None  # the journal's run: a check sheet's decisions are as of it

    def counts_by_word(self) -> dict[str, int]:
        """Rows per status word (the ``--summary-json`` and API contract), in the order met."""
        return {status.value: n for status, n in self.counts.items()}

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.send_seconds if self.send_seconds > 0 else 0.0

    def count(self, outcome: Outcome, row: int | None = None) -> None:
        """One row's outcome (``row``: its number, kept as the example of its sub_code)."""
        self.counts[outcome.status] += 1
        if outcome.sub_code:
            self.sub_codes[outcome.sub_code] += 1
            if row is not None:
                self.sub_code_rows.setdefault(outcome.sub_code, row)
            self.sub_code_msgs.setdefault(outcome.sub_code, outcome.sub_msg or outcome.msg)
        self.calls += outcome.calls
        self.attempts += outcome.attempts
        self.count_reason(outcome, row)

    def count_reason(self, outcome: Outcome, row: int | None = None) -> None:
        """An invalid row's reason (its field and rule, not its value), with the first row
        as the example; the reasons stay when the counts are taken from the journal (which
        does not keep them)."""
        if outcome.status is Status.INVALID and outcome.reason:
            self.reasons[outcome.reason] += 1
            self.shown_reasons.setdefault(outcome.reason, outcome.shown_reason or outcome.reason)
            if row is not None:
                self.reason_rows.setdefault(outcome.reason, row)

    def top_reasons(self, limit: int = 10) -> list[tuple[str, int, int | None]]:
        """(reason as shown, rows, example row) of the invalid rows, the commonest first."""
        return [
            (self.shown_reasons.get(r, r), n, self.reason_rows.get(r))
            for r, n in self.reasons.most_common(limit)
        ]

    def reason_lines(self, limit: int = 5) -> list[str]:
        """What a person reads under the summary line, before opening the workbook: ``412
        rows invalid: case_id rounded by Excel (e.g. row 8)``, the commonest reasons first."""
        lines = [
            (
                _("  {rows} invalid: {reason} (e.g. row {row})")
                if row is not None
                else _("  {rows} invalid: {reason}")
            ).format(rows=plural(n, "row"), reason=reason, row=row)
            for reason, n, row in self.top_reasons(limit)
        ]
        others = len(self.reasons) - limit
        if others > 0:
            lines.append(
                _("  and {others}: see the {sheet} sheet").format(
                    others=plural(others, "other reason"), sheet=label(Sheet.FAILED)
                )
            )
        return lines

    def sheet(self) -> list[tuple[str, object]]:
        """The ``summary`` sheet: never the secret or the session."""
        item = functools.partial(pgettext, "item")
        pairs: list[tuple[str, object]] = [
            (item("command"), self.command),
            (label(Item.INPUT), str(self.input)),
            (item("api"), self.method),
            (item("gateway host"), urlsplit(self.gateway).netloc if self.gateway else ""),
            (item("app key"), self.app_key),
            (item("sign method"), self.sign_method),
            (item("start"), stamp(self.started)),
            (item("end"), stamp(self.ended)),
            (item("start (platform clock)"), platform_stamp(self.started)),
            (item("duration s"), round(self.ended - self.started, 3)),
            (item("rows read"), self.rows_read),
        ]
        if self.run_id is not None:
            pairs.append((label(Item.JOURNAL_RUN), self.run_id))
        pairs += [
            (item("status {status}").format(status=pgettext("status", s.value)), n)
            for s, n in sorted(self.counts.items())
        ]
        pairs += [
            (item("sub_code {code}").format(code=code), n)
            for code, n in sorted(self.sub_codes.items())
        ]
        pairs += [(item("calls"), self.calls), (item("calls/s"), round(self.calls_per_second, 2))]
        if self.attempts != self.calls:
            pairs.append((item("tries that never connected"), self.attempts - self.calls))
        pairs += [
            (item("limit {name}").format(name=pgettext("limit", k)), v)
            for k, v in self.limits.items()
        ]
        if self.auto_reached is not None:
            pairs.append((item("limit qps auto reached"), self.auto_reached))
            pairs.append((item("limit qps auto throttles"), self.auto_throttles))
        if self.message:
            pairs.append((item("stopped"), self.message))
        pairs.append((item("top-import version"), __version__))
        return pairs

    def take_counts(self, other: FileSummary) -> None:
        """Counts per status and sub_code (with their examples) and calls, from ``other``."""
        self.counts, self.sub_codes = other.counts, other.sub_codes
        self.calls, self.attempts = other.calls, other.attempts
        self.sub_code_rows, self.sub_code_msgs = other.sub_code_rows, other.sub_code_msgs
        if other.reasons:
            self.reasons, self.reason_rows = other.reasons, other.reason_rows
            self.shown_reasons = other.shown_reasons

    def dashboard(self, code: int, meaning: str) -> Dashboard:
        """The ``summary`` sheet, top to bottom, for the exit code this input ends with."""
        rows = sum(self.counts.values())
        done = self.counts[Status.SUCCESS] + self.counts[Status.VALID]
        word = "valid" if self.command in ("validate", "dry-run") else "success"
        headline = (
            _("{input}: {rows}, {done} {status} ({share})")
            if rows
            else _("{input}: {rows}, {done} {status}")
        ).format(
            input=self.input.name,
            rows=plural(rows, "row"),
            done=f"{done:,}",
            status=pgettext("status", word),
            share=f"{done / rows:.1%}" if rows else "",
        )
        headline += f" · {duration_text(self.ended - self.started)}"
        if self.calls:
            headline += _(" · {calls}, {rate} calls/s").format(
                calls=plural(self.calls, "call"), rate=f"{self.calls_per_second:.1f}"
            )
        codes = [
            (
                sub_code,
                n,
                self.sub_code_msgs.get(sub_code, ""),
                self.sub_code_rows.get(sub_code),
                sub_code_advice(sub_code),
            )
            for sub_code, n in self.sub_codes.most_common(10)
        ]
        minutes = [(minute_stamp(start), n) for start, n in self.per_minute]
        return Dashboard(
            headline=headline,
            verdict=_("exit {code}: {meaning}").format(code=code, meaning=meaning),
            statuses=[(s.value, self.counts[s]) for s in Status if self.counts[s]],
            codes=codes,
            per_minute=minutes,
            run=self.sheet(),
            reasons=self.top_reasons(),
        )

    def as_json(self) -> dict:
        return {
            "input": str(self.input),
            "command": self.command,
            "workbook": str(self.workbook) if self.workbook else None,
            "rows_read": self.rows_read,
            "counts": self.counts_by_word(),
            "sub_codes": dict(self.sub_codes),
            "invalid_reasons": dict(self.reasons.most_common()),
            "calls": self.calls,
            "attempts": self.attempts,
            "calls_per_second": round(self.calls_per_second, 2),
            "started": stamp(self.started),
            "ended": stamp(self.ended),
            "stop_reason": self.stop_reason.value,
            "message": self.message,
            "api": self.method,
            "app_key": self.app_key,
            "archived": str(self.archived) if self.archived else None,
            "notes": list(self.notes),
            "input_changed": self.input_changed,
        }


@dataclass(frozen=True)
class Dashboard:
    """What the ``summary`` sheet shows: a headline and its verdict, rows per status, the top
    sub_codes (rows, the platform's message, an example row, what to do), calls per minute, and
    the run's details (``FileSummary.sheet``)."""

    headline: str
    verdict: str
    statuses: list[tuple[str, int]]
    codes: list[tuple[str, int, str, int | None, str]]
    per_minute: list[tuple[str, int]]
    run: list[tuple[str, object]]
    reasons: list[tuple[str, int, int | None]] = field(default_factory=list)


def summary_document(
    summaries: Sequence[FileSummary],
    code: int,
    error: str = "",
    refused: Sequence[tuple[Path, str, int]] = (),
) -> dict:
    """The ``--summary-json`` document (and the generic ``--notify`` webhook's body): ``error``
    is what stopped the command before any input; ``refused`` the inputs stopped before they
    were sent (path, the error sentence, its exit code), listed among the files."""
    files = [s.as_json() for s in summaries]
    files += [
        {"input": str(path), "exit_code": int(exit_code), "error": why, "workbook": None}
        for path, why, exit_code in refused
    ]
    document: dict = {"exit_code": int(code), "files": files}
    if error:
        document["error"] = error
    return document


def stamp(epoch: float) -> str:
    """An epoch time as local ISO 8601 with its offset, to the second."""
    return datetime.fromtimestamp(epoch, timezone.utc).astimezone().isoformat(timespec="seconds")


def minute_stamp(epoch: float) -> str:
    """The local ``HH:MM`` of a minute (with the date when it is not today)."""
    moment = datetime.fromtimestamp(epoch, timezone.utc).astimezone()
    today = datetime.now(timezone.utc).astimezone().date()
    return moment.strftime("%H:%M" if moment.date() == today else "%m-%d %H:%M")


# The nouns the sentences count, as gettext's (singular, plural) message ids: Chinese counts
# them in its one form with the noun's measure word (3 行, 3 次调用, 其他 3 种原因). A noun
# missing here is counted in English in both languages (a test checks every one has Chinese).
_COUNTED: dict[str, tuple[str, str]] = {
    "row": ("{n} row", "{n} rows"),
    "valid row": ("{n} valid row", "{n} valid rows"),
    "call": ("{n} call", "{n} calls"),
    "throttle": ("{n} throttle", "{n} throttles"),
    "other reason": ("{n} other reason", "{n} other reasons"),
    "other run": ("{n} other run", "{n} other runs"),
    "entry": ("{n} entry", "{n} entries"),
    "decision": ("{n} decision", "{n} decisions"),
}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,234 rows`` (Chinese: ``1,234 行``); ``many`` where adding an s
    is wrong (entries)."""
    one, other = _COUNTED.get(word, ("{n} " + _braced(word), "{n} " + _braced(many or word + "s")))
    return ngettext(one, other, n).format(n=f"{n:,}")


def _braced(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def duration_text(seconds: float) -> str:
    """``2h05m09s``, ``2m10s``, ``7s`` (Chinese: ``2小时05分09秒``); a moment is ``1s``, not
    ``0s``."""
    seconds = max(1, round(seconds)) if seconds > 0 else 0
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return _("{h}h{m}m{s}s").format(h=h, m=f"{m:02d}", s=f"{s:02d}")
    if m:
        return _("{m}m{s}s").format(m=m, s=f"{s:02d}")
    return _("{s}s").format(s=s)


def listed(parts: list[str]) -> str:
    """``a, b, c`` with the language's separator (Chinese: ``a，b，c``)."""
    return pgettext("list", ", ").join(parts)


# What the pre-flight holds back, by kind ({n}: how many rows), in Plan.line's order.
HELD = (
    N_("{n} already sent"),
    N_("{n} duplicate"),
    N_("{n} invalid"),
    N_("{n} unknown, not resent"),
    N_("{n} marked done, not sent"),
)


@dataclass(frozen=True)
class Plan:
    """The pre-flight of one input: what the run is about to send, and whether it fits the quota.

    ``rate`` is the pacer's real rate (None with ``--qps auto``, found as the run goes); the
    daily quota counts every HTTP call of this app key since 00:00 GMT+8 (``used_today``).
    One row needs at least one call, so ``to_send`` calls is the least the run will make.
    """

    input: Path
    to_send: int
    already_sent: int = 0
    duplicate: int = 0
    invalid: int = 0
    unknown: int = 0  # kept back by --no-resend-unknown
    done: int = 0  # marked done in a check sheet: recorded as successes, not sent
    rate: float | None = None
    qps_max: float = 0.0
    auto_start: float = AUTO_START_QPS  # where --qps auto starts
    joins: bool = False  # ... at the limit of the runs already sending for the app key
    daily_quota: int | None = None
    used_today: int = 0
    reserved: int = 0  # calls other live runs on the app key still plan to make today
    reserving: int = 0  # ... how many runs those are
    sharing: int = 0  # other runs sending for the app key now: ``rate`` is this run's share
    # ``to_send`` is the rows of the file, not yet checked: a big CSV whose rows fit the daily
    # quota all the same is checked by the send pass as it sends (one pass, not two)
    estimated: bool = False

    @property
    def quota_left(self) -> int | None:
        if self.daily_quota is None:
            return None
        return max(0, self.daily_quota - self.used_today - self.reserved)

    @property
    def fits(self) -> bool:
        left = self.quota_left
        return left is None or self.to_send <= left

    def line(self) -> str:
        """``t.csv: 1,234 rows to send (56 already sent, 3 duplicate); about 2m10s at 9.5 ...``"""
        counts = (self.already_sent, self.duplicate, self.invalid, self.unknown, self.done)
        held = [_(what).format(n=f"{n:,}") for n, what in zip(counts, HELD, strict=True) if n]
        rows = plural(self.to_send, "row")
        if self.estimated:
            text = _("{input}: up to {rows} to send (each row is checked as it is sent)").format(
                input=self.input, rows=rows
            )
        else:
            text = (
                _("{input}: {rows} to send ({held})") if held else _("{input}: {rows} to send")
            ).format(input=self.input, rows=rows, held=listed(held))
        if self.to_send and self.rate is None:
            text += (
                _(
                    "; --qps auto: from {start} calls/s (the limit of the runs already sending "
                    "for this app key) up to the rate the platform allows (at most {most})"
                )
                if self.joins
                else _(
                    "; --qps auto: from {start} calls/s up to the rate the platform allows "
                    "(at most {most})"
                )
            ).format(start=f"{self.auto_start:g}", most=f"{self.qps_max:,g}")
        elif self.to_send and self.rate:
            rate = f"{self.rate:,.0f}" if self.rate >= 100 else f"{self.rate:.3g}"
            text += _("; about {duration} at {rate} calls/s").format(
                duration=duration_text(self.to_send / self.rate), rate=rate
            )
            if self.sharing:
                text += ngettext(
                    " (its share: {others} is sending for this app key)",
                    " (its share: {others} are sending for this app key)",
                    self.sharing,
                ).format(others=plural(self.sharing, "other run"))
        if self.daily_quota is not None:
            text += (
                _(
                    "; daily quota {quota}: {used} used today (GMT+8), {reserved} planned by "
                    "{runs} sending now, {left} left"
                )
                if self.reserved
                else _("; daily quota {quota}: {used} used today (GMT+8), {left} left")
            ).format(
                quota=f"{self.daily_quota:,}",
                used=plural(self.used_today, "call"),
                reserved=f"{self.reserved:,}",
                runs=plural(self.reserving, "other run"),
                left=f"{self.quota_left:,}",
            )
        return text

    def problem(self) -> str | None:
        """Why the run should not start unasked (it does not fit the daily quota), or None."""
        if self.fits:
            return None
        left = self.quota_left or 0
        taken = (
            _("{used} used today, {reserved} planned by the runs sending now")
            if self.reserved
            else _("{used} used today")
        ).format(used=f"{self.used_today:,}", reserved=f"{self.reserved:,}")
        todo = (
            _("rerun with --yes, or after 00:00 GMT+8, or when they have finished")
            if self.reserved
            else _("rerun with --yes, or after 00:00 GMT+8")
        )
        return ngettext(
            "{input}: sending {rows} takes at least {calls}, but only {left} of the daily quota "
            "of {quota} is left ({taken}); {todo}",
            "{input}: sending {rows} takes at least {calls}, but only {left} of the daily quota "
            "of {quota} are left ({taken}); {todo}",
            left,
        ).format(
            input=self.input,
            rows=plural(self.to_send, "row"),
            calls=plural(self.to_send, "call"),
            left=f"{left:,}",
            quota=f"{self.daily_quota:,}",
            taken=taken,
            todo=todo,
        )
