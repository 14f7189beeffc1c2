"""What a person reads in a workbook, apart from what the code means by it.

Each key (a sheet, a result column, an item of the run's details) has the label the reporter
writes now (``label``) and is recognised on the way back by any label it has had (``key_of``,
``sheet_in``): that one, the key itself, and ``_ALIASES`` (a translation, an older name). So a
label can change, or be translated, and a workbook written before still feeds back. Status
words are cell values, not labels: they stay the keys (``rows.Status``) for now.

A label is written in the run's language (``i18n``: the English label is the message id, in
the context of its kind: ``sheet``, ``item`` or ``column``) and recognised in every language.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from importer.i18n import in_every_language, pgettext


class Sheet(str, Enum):
    RESULTS = "results"  # every row (and results_2, results_3... past a sheet's limit)
    FAILED = "failed"  # the rows to fix and feed back
    CHECK = "check"  # the unknown rows and their decision
    SUMMARY = "summary"  # the dashboard and the run's details


class Item(str, Enum):
    """Items of the summary sheet's run details that are read back."""

    INPUT = "input"
    JOURNAL_RUN = "journal run"


SOURCE_ROW = "source_row"
ERROR = "error"
DECISION = "decision"  # the check sheet's: what a person found about an unknown row

# key -> the label written now, where it is not the key itself
_SHOWN: dict[str, str] = {}
# key -> other labels it is recognised by (translations, earlier names)
_ALIASES: Mapping[str, tuple[str, ...]] = {}


def _context(key: str) -> str:
    return "sheet" if isinstance(key, Sheet) else "item" if isinstance(key, Item) else "column"


def _english(key: str) -> str:
    shown = _SHOWN.get(key)
    if shown is not None:
        return shown
    return key.value if isinstance(key, Enum) else key


def label(key: str) -> str:
    """The text a key is written as in the run's language (a plain ``str``, also for an enum
    member)."""
    return pgettext(_context(key), _english(key))


def _known(key: str) -> set[str]:
    every = in_every_language(_context(key), _english(key))  # the English label among them
    return {t.strip().casefold() for t in (key, *every, *_ALIASES.get(key, ()))}


def key_of(text: object, keys: Iterable[str]) -> str | None:
    """The one of ``keys`` that ``text`` (a header cell, a sheet or item name) is a label of."""
    if not isinstance(text, str):
        return None
    folded = text.strip().casefold()
    return next((key for key in keys if folded in _known(key)), None)


def is_label(text: object, key: str) -> bool:
    return key_of(text, (key,)) is not None


def shown_status(word: str) -> str:
    """A status word as the dashboard shows it: the word in English, ``成功 (success)`` in
    Chinese. A status *cell* stays the word itself (what is filtered, fed back and compared)."""
    shown = pgettext("status", word)
    return word if shown == word else f"{shown} ({word})"


def sheet_in(names: Iterable[str], key: str) -> str | None:
    """The name a workbook gives the sheet ``key`` (its label now, or one it had), or None."""
    return next((name for name in names if is_label(name, key)), None)
