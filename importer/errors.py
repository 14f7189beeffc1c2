"""What stops a run: one tree rooted in ``ImporterError``.

Each error carries the one sentence the user reads; the CLI maps the classes to exit codes
in one place (``importer.exits``) and the CLI prints them without a traceback::

    ImporterError
     ├── UsageError        bad option, missing credential            (exit 2)
     ├── ConfigError       unreadable or invalid importer.toml       (exit 2)
     ├── SpecError         unknown API or invalid spec file          (exit 2)
     ├── InputError        unreadable input, missing column          (exit 2)
     ├── JournalError      corrupt or foreign journal                (exit 2)
     │    ├── LockedError  the same input is being run already       (exit 2)
     │    └── JournalLost  its server went away mid-run              (exit 3)
     └── AbortedError      the platform or a policy stopped the run  (exit 3; the API)

A bad *row* is never an exception: it is an ``Outcome`` in the report.
"""

from __future__ import annotations

from typing import Any


class ImporterError(Exception):
    """Base class: ``str(error)`` is the sentence shown to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ImporterError):
    """The command line or environment asks for something impossible."""


class ConfigError(ImporterError):
    """The configuration file cannot be read or holds a bad value."""


class SpecError(ImporterError):
    """An API spec is unknown or malformed."""


class InputError(ImporterError):
    """An input file cannot be read, or lacks a required column."""


class JournalError(ImporterError):
    """The resume journal is unusable."""


class JournalLost(JournalError):
    """The journal's server went away mid-run (stopped, a network cut, a failover): nothing
    more is sent, since nothing more can be claimed (exit 3)."""


class LockedError(JournalError):
    """Another live run holds the same input on the same journal."""


class AbortedError(ImporterError):
    """A run the platform or the failure policies stopped (exit 3): a fatal answer, a ban too
    long, the canary, the failure-rate breaker, an unreachable gateway. Raised by the Python API
    (``importer.run``) with the run's ``result`` (its workbook is written); the CLI reports the
    same run with exit code 3 instead."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
