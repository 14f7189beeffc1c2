"""The resume journal: every payload ever sent and how it ended, committed as each outcome is
known, shared by the runs (and hosts) that send for one app key.

One interface (``Journal``, ``RunJournal`` in ``_base``: the rule of "never twice", a run's
liveness, the batching) and its backends: ``SQLiteJournal`` (a file, the default) and
``PostgresJournal`` (a database several hosts share: ``postgresql://...``). ``open_journal``
picks the backend for what ``--journal`` names.
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
    PastRun,
    PriorCall,
    QuotaView,
    RunEnd,
    RunJournal,
    quota_day,
    refusal,
    run_alive,
)
from importer.journal._postgres import PostgresJournal, is_url, redacted
from importer.journal._sqlite import SQLiteJournal, sqlite_errors

__all__ = [
    "BEAT_S",
    "BEAT_STALE_S",
    "KEPT_UNKNOWN_NOTE",
    "KILLED",
    "LEASE_STALE_S",
    "UNKNOWN_STATES",
    "Journal",
    "PastRun",
    "PostgresJournal",
    "PriorCall",
    "QuotaView",
    "RunEnd",
    "RunJournal",
    "SQLiteJournal",
    "is_url",
    "open_journal",
    "quota_day",
    "redacted",
    "refusal",
    "run_alive",
    "sqlite_errors",
]


def open_journal(target: Path | str, folder: Path = Path("reports")) -> Journal:
    """The journal ``--journal`` names: a ``postgresql://`` URL is a PostgreSQL journal (the
    snapshots of its inputs go to ``folder``), a file path an SQLite journal."""
    if is_url(target):
        return PostgresJournal(str(target), folder=folder)
    return SQLiteJournal(Path(target))
