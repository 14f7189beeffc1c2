"""What happens to a row before any call: the one decision of validate, the pre-flight and the
send pass.

A row is **invalid** (the validator's message), a **duplicate** of an earlier row of the same
input (the first row named), settled already by the journal (``skipped``, ``duplicate`` held by
another live run, ``unknown``: ``journal.refusal``), or **to send** — with a note when it goes
again after an unknown outcome (``--resend-unknown``). Without a journal (``validate``,
``--dry-run``) only the first two apply. The journal is only read here: claiming a payload is
the dispatcher's, at its first call.

A row of a ``check`` sheet fed back carries a person's ``decision`` about an ``unknown`` row:
``done`` makes it ``Done`` (recorded as a success, never sent), ``resend`` sends it once more
(this run may claim it although the journal holds it unknown), and a blank decision keeps it
``unknown`` (unless the run resends unknown rows anyway); any other word makes it invalid.
Without a journal (``validate``) only the word is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from importer.advice import CHECK_ADVICE
from importer.i18n import N_, _
from importer.journal import UNKNOWN_STATES, PriorCall, RunJournal
from importer.records import DuplicateFilter, RowValidator
from importer.rows import Decision, Outcome, RequestRecord, Row, RowError, Status
from importer.spec import ApiSpec

# Kept in the journal's results in English, shown in the report's language (i18n.shown).
RESENT_NOTE = N_("an earlier call of this payload got no answer; sent again (--resend-unknown)")
RESENT_BY_DECISION = N_("sent again: the check sheet's decision was resend")
DONE_NOTE = N_("recorded as done (the check sheet's decision): the platform has it; not sent")
UNDECIDED_NOTE = N_("no decision yet: {advice}").format(advice=CHECK_ADVICE)
NOT_THAT_CALL = N_(
    "the decision is about an unknown call of this row's cells, and the journal holds none: the "
    "row was edited (or comes from another journal); put the cells back as the check sheet had "
    "them, or send changed cells from the failed sheet or the original file"
)
NOT_THAT_CALL_RULE = N_("decision on a row that is not unknown")
STALE_DECISION = N_(
    "this payload was tried again after this workbook was written (a resend whose answer was "
    "lost too, or a run stopped with it in flight), so the decision here is out of date: check "
    "it on the platform again and decide in the check sheet of the newest workbook"
)
SEND = "send"  # how the pre-flight counts the rows to send, beside the statuses
DONE = "done"  # ... and the rows a person marked done


@dataclass(frozen=True)
class Done:
    """A row a person marked ``done`` in the check sheet: its payload is recorded as a success
    in the journal (later runs skip it) and it is never sent."""

    record: RequestRecord
    outcome: Outcome


class Triage:
    """Decides, row by row in file order, what each row of one pass becomes (keep one per
    pass: duplicates are judged against the rows before, in that pass)."""

    def __init__(
        self,
        spec: ApiSpec,
        columns: Mapping[str, int],
        journal: RunJournal | None = None,
        *,
        fed_back: bool = False,
        reported_run: int | None = None,
    ) -> None:
        self._validator = RowValidator(spec, columns, fed_back=fed_back)
        self._duplicates = DuplicateFilter()
        self._journal = journal
        self._reported_run = reported_run

    def __repr__(self) -> str:
        return f"<Triage journal={'yes' if self._journal is not None else 'no'}>"

    def decide(self, row: Row) -> tuple[RequestRecord | Outcome | Done, str]:
        """The record to send and a note for its report row, or the outcome of a row that needs
        no call (with an empty note), or ``Done``."""
        result = self._validator.validate(row)
        if isinstance(result, RowError):
            return (
                Outcome(
                    Status.INVALID,
                    error=result.message,
                    reason=result.rule,
                    shown_reason=result.shown_rule or result.rule,
                    field=result.field,
                ),
                "",
            )
        decision = None
        if row.decision is not None:
            try:
                decision = Decision.read(row.decision)
            except ValueError as exc:
                rule = N_("decision is not done or resend")
                invalid = Outcome(Status.INVALID, error=str(exc), reason=rule, shown_reason=_(rule))
                return invalid, ""
        first = self._duplicates.first_row(result)
        if first is not None:
            same = N_("same payload as row {row}").format(row=first)
            return Outcome(Status.DUPLICATE, error=same), ""
        journal = self._journal
        if journal is None:
            return result, ""
        prior = journal.prior(result.row_key)
        if row.decision is None:
            refused = journal.judge(prior)
            if refused is not None:
                return refused, ""
            resent = prior is not None and prior.state in UNKNOWN_STATES
            return result, RESENT_NOTE if resent else ""
        # a check sheet's row: never a success twice, never beside a live run's call
        refused = journal.judge(prior, resend_unknown=True)
        if refused is not None:
            return refused, ""
        if decision is not None and _stale(prior, self._reported_run):
            return Outcome(Status.UNKNOWN, error=STALE_DECISION), ""
        if decision is not None and (prior is None or prior.state not in UNKNOWN_STATES):
            # what a person decided is about an unknown call of these very cells: edited cells,
            # or a row the journal never held as unknown, are not that call
            invalid = Outcome(
                Status.INVALID,
                error=NOT_THAT_CALL,
                reason=NOT_THAT_CALL_RULE,
                shown_reason=_(NOT_THAT_CALL_RULE),
            )
            return invalid, ""
        if decision is Decision.DONE:
            return Done(result, Outcome(Status.SUCCESS, error=DONE_NOTE)), ""
        if decision is Decision.RESEND:
            journal.allow_resend(result.row_key)
            return result, RESENT_BY_DECISION
        refused = journal.judge(prior if prior is not None else _UNDECIDED)
        if refused is not None:
            return Outcome(Status.UNKNOWN, error=UNDECIDED_NOTE), ""
        return result, RESENT_NOTE

    @staticmethod
    def kind(decided: RequestRecord | Outcome | Done) -> str:
        """``send``, ``done``, or the status of a row that needs no call."""
        if isinstance(decided, RequestRecord):
            return SEND
        if isinstance(decided, Done):
            return DONE
        return decided.status.value


# How a check sheet's undecided row is judged when the journal holds nothing of it: as unknown.
_UNDECIDED = PriorCall("unknown", "", "", None, 0)


def _stale(prior: PriorCall | None, reported_run: int | None) -> bool:
    """A decision written in a workbook is about the journal as it was when that workbook's run
    wrote it: a later run that touched the payload (a resend whose answer was lost too, a run
    killed with it in flight) makes it stale. Run ids only grow in a journal."""
    if prior is None or reported_run is None:
        return False
    return prior.run_id > reported_run


__all__ = ["DONE", "DONE_NOTE", "RESENT_NOTE", "SEND", "Done", "Triage"]
