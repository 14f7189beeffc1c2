"""top-import: spreadsheet rows -> signed Taobao Open Platform API calls, one call a row.

From Python::

    import importer

    result = importer.run("tickets.xlsx", simulate=True, qps=50)  # a path, DataFrame or rows
    result.exit_code, result.counts, result.workbook, result.rows(), result.to_pandas()
    importer.validate(df)                                         # no network
    await importer.run_async(df, gateway=..., app_key=..., app_secret=...)  # in Jupyter
    await importer.validate_async(df)
    handle = importer.StopHandle()                                # stop() / abort() from code
    importer.run(path, on_event=print, stop=handle)               # importer.Event values

See ``importer.api`` for the options (the CLI's, in snake_case) and the errors
(``importer.errors``: ``ImporterError`` and its tree, ``AbortedError`` for a stopped run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it from here (a constant costs
# nothing at start-up, where importlib.metadata costs ~40 ms of every command).
__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "Event",
    "EventKind",
    "ImporterError",
    "Result",
    "StopHandle",
    "__version__",
    "run",
    "run_async",
    "validate",
    "validate_async",
]

if TYPE_CHECKING:
    from importer.api import Result, run, run_async, validate, validate_async
    from importer.errors import AbortedError, ImporterError
    from importer.events import Event, EventKind
    from importer.interrupts import StopHandle


def __getattr__(name: str) -> Any:
    """The API is imported when first used, so the CLI's start-up does not pay for it."""
    if name in ("Result", "run", "run_async", "validate", "validate_async"):
        from importer import api

        return getattr(api, name)
    if name in ("AbortedError", "ImporterError"):
        from importer import errors

        return getattr(errors, name)
    if name in ("Event", "EventKind"):
        from importer import events

        return getattr(events, name)
    if name == "StopHandle":
        from importer import interrupts

        return interrupts.StopHandle
    raise AttributeError(f"module 'importer' has no attribute {name!r}")
