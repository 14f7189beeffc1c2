"""What happens to a row before any call: the one decision of validate, the pre-flight and the
send pass.

A row is **invalid** (the validator's message), a **duplicate** of an earlier row of the same
input (the first row named), settled already by the journal (``skipped``, ``duplicate`` held by
another live run, ``unknown``: ``journal.refusal``), or **to send** — with a note when it goes
again after an unknown outcome (``--resend-unknown``). Without a journal (``validate``,
``--dry-run``) only the first two apply. The journal is only read here: claiming a payload is
the dispatcher's, at its first call.
"""

from __future__ import annotations

from collections.abc import Mapping

from importer.journal import RunJournal
from importer.records import DuplicateFilter, RowValidator
from importer.rows import Outcome, RequestRecord, Row, RowError, Status
from importer.spec import ApiSpec

RESENT_NOTE = "an earlier call of this payload got no answer; sent again (--resend-unknown)"
SEND = "send"  # how the pre-flight counts the rows to send, beside the statuses


class Triage:
    """Decides, row by row in file order, what each row of one pass becomes (keep one per
    pass: duplicates are judged against the rows before, in that pass)."""

    def __init__(
        self, spec: ApiSpec, columns: Mapping[str, int], journal: RunJournal | None = None
    ) -> None:
        self._validator = RowValidator(spec, columns)
        self._duplicates = DuplicateFilter()
        self._journal = journal

    def __repr__(self) -> str:
        return f"<Triage journal={'yes' if self._journal is not None else 'no'}>"

    def decide(self, row: Row) -> tuple[RequestRecord | Outcome, str]:
        """The record to send and a note for its report row, or the outcome of a row that needs
        no call (with an empty note)."""
        result = self._validator.validate(row)
        if isinstance(result, RowError):
            return Outcome(Status.INVALID, error=result.message), ""
        first = self._duplicates.first_row(result)
        if first is not None:
            return Outcome(Status.DUPLICATE, error=f"same payload as row {first}"), ""
        if self._journal is None:
            return result, ""
        prior = self._journal.prior(result.payload_hash)
        refused = self._journal.judge(prior)
        if refused is not None:
            return refused, ""
        resent = prior is not None and prior.state in ("in_flight", "unknown")
        return result, RESENT_NOTE if resent else ""

    @staticmethod
    def kind(decided: RequestRecord | Outcome) -> str:
        """``send``, or the status of a row that needs no call."""
        return SEND if isinstance(decided, RequestRecord) else decided.status.value


__all__ = ["RESENT_NOTE", "SEND", "Triage"]
