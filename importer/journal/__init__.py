"""The resume journal: every payload ever sent and how it ended, committed as each outcome is
known, shared by the runs (and hosts) that send for one app key.

One interface (``Journal``, ``RunJournal`` in ``_base``: the rule of "never twice", a run's
liveness, the batching) and its backends: ``SQLiteJournal`` (a file, the default).
``open_journal`` picks the backend for what ``--journal`` names.
"""

from __future__ import annotations

from pathlib import Path

from importer.journal._base import (
    BEAT_S,
    BEAT_STALE_S,
    KEPT_UNKNOWN_NOTE,
    KILLED,
    LEASE_STALE_S,
    UNKNOWN_STATES,
    Journal,
    PriorCall,
    QuotaView,
    RunJournal,
    quota_day,
    refusal,
    run_alive,
)
from importer.journal._sqlite import SQLiteJournal, sqlite_errors

__all__ = [
    "BEAT_S",
    "BEAT_STALE_S",
    "KEPT_UNKNOWN_NOTE",
    "KILLED",
    "LEASE_STALE_S",
    "UNKNOWN_STATES",
    "Journal",
    "PriorCall",
    "QuotaView",
    "RunJournal",
    "SQLiteJournal",
    "open_journal",
    "quota_day",
    "refusal",
    "run_alive",
    "sqlite_errors",
]


def open_journal(target: Path | str) -> Journal:
    """The journal ``--journal`` names: a file path is an SQLite journal."""
    return SQLiteJournal(Path(target))
