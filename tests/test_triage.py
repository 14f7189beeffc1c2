"""What happens to a row before any call, decided in one place for validate, the pre-flight and
the send pass."""

from __future__ import annotations

import pytest
from helpers import HEADERS, ticket

from importer.journal import SQLiteJournal
from importer.rows import Outcome, RequestRecord, Row, Status
from importer.spec import load_spec
from importer.triage import RESENT_NOTE, SEND, Triage

SPEC = load_spec(None)
COLUMNS = {name: i for i, name in enumerate(HEADERS)}


def row(n: int, i: int, **changes: str) -> Row:
    cells = {**ticket(i), **changes}
    return Row(n, tuple(cells[h] for h in HEADERS))


def test_without_a_journal_a_row_is_invalid_a_duplicate_or_to_send():
    triage = Triage(SPEC, COLUMNS)
    decided = [triage.decide(r)[0] for r in [row(2, 0), row(3, 1, tenant_id="abc"), row(4, 0)]]
    assert [Triage.kind(d) for d in decided] == [SEND, "invalid", "duplicate"]
    assert isinstance(decided[0], RequestRecord)
    assert "tenant_id" in decided[1].error
    assert decided[2].error == "same payload as row 2"


def _journal_with(tmp_path, state: str, **policy: bool):
    """A journal where an earlier run left ticket 0's payload ``state``; this run's triage."""
    payload = Triage(SPEC, COLUMNS).decide(row(2, 0))[0]
    assert isinstance(payload, RequestRecord)
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    old = journal.start_run(input_path="old.csv", input_key="old", app_key="k", method="m")
    assert old.claim(payload.row_key) is None
    if state != "in_flight":
        status = {"success": Status.SUCCESS, "failed": Status.FAILED, "unknown": Status.UNKNOWN}
        old.settle(2, payload.row_key, Outcome(status[state], attempts=1))
    old.finish()
    run = journal.start_run(input_path="t.csv", input_key="t", app_key="k", method="m", **policy)
    return Triage(SPEC, COLUMNS, run)


@pytest.mark.parametrize(
    ("state", "policy", "kind", "note"),
    [
        ("success", {}, "skipped", ""),
        ("success", {"resend_success": True}, SEND, ""),  # --no-resume
        ("failed", {}, SEND, ""),
        ("unknown", {}, "unknown", ""),
        ("unknown", {"resend_unknown": True}, SEND, RESENT_NOTE),
        ("in_flight", {}, "unknown", ""),  # a run that died with the call in flight
        ("in_flight", {"resend_unknown": True}, SEND, RESENT_NOTE),
    ],
)
def test_the_journal_decides_what_earlier_runs_settled(tmp_path, state, policy, kind, note):
    triage = _journal_with(tmp_path, state, **policy)
    decided, said = triage.decide(row(2, 0))
    assert (Triage.kind(decided), said) == (kind, note)
    fresh, said = triage.decide(row(3, 1))  # a payload the journal never saw
    assert (Triage.kind(fresh), said) == (SEND, "")
