"""The language a person reads: English (the message ids) or Chinese, from gettext catalogues.

The catalogue is ``locale/zh/LC_MESSAGES/top-import.po`` (compiled to ``.mo`` beside it; a
test fails when the two differ, a message has no translation, or a translation changes a
``{placeholder}``). The language is chosen once per command (``--lang``, ``lang`` in
importer.toml, ``importer.run(lang=)``; default: the locale, as gettext reads it) and held in
a context variable for the run (``language``), as Django's ``translation.override`` does, so
the modules that write text need no parameter for it and async tasks inherit it. The machine
contract does not move with it: exit codes, option names, JSON keys, status values and the
journal are the same in both languages.
"""

from __future__ import annotations

import contextlib
import functools
import gettext
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

DOMAIN = "top-import"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGS = ("en", "zh")
_ENV = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")  # gettext's order

_current: ContextVar[str] = ContextVar("top_import_lang", default="en")


def lang_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """``zh`` when the first locale variable set (gettext's order) names Chinese, else ``en``."""
    for name in _ENV:
        value = environ.get(name, "")
        if value:
            first = value.split(":")[0].strip().lower()
            return "zh" if first.startswith("zh") else "en"
    return "en"


@functools.cache
def translation(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()  # the English text is the message id
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang])


@contextlib.contextmanager
def language(lang: str) -> Iterator[None]:
    """Text written inside the block is in ``lang`` (``en`` or ``zh``)."""
    token = _current.set(lang)
    try:
        yield
    finally:
        _current.reset(token)


def choose(lang: str) -> None:
    """From here on in this context, text is in ``lang``: the CLI's language once the command's
    settings (``lang`` in importer.toml) are known, inside the ``language`` block it opened from
    ``--lang`` or the locale for the sentences before that."""
    _current.set(lang)


def current() -> str:
    return _current.get()


def pgettext(context: str, message: str) -> str:
    """``message`` (English, in ``context``) in the current language."""
    return translation(current()).pgettext(context, message)


def in_every_language(context: str, message: str) -> set[str]:
    """What ``message`` is written as in each language: a workbook written in either feeds
    back."""
    return {translation(lang).pgettext(context, message) for lang in LANGS}


def _(message: str) -> str:
    """``message`` (English, the message id) in the current language. A text with values is a
    ``{name}`` template, formatted after translation: the translation may move them."""
    return translation(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """``singular`` or ``plural`` (English, the message ids) as ``n`` asks, in the current
    language: Chinese has one form (``Plural-Forms: nplurals=1``), ``3 行`` as ``1 行``."""
    return translation(current()).ngettext(singular, plural, n)


def N_(message: str) -> str:  # gettext's name for "mark, translate later"
    """Marks a text kept in a constant for the catalogue; ``_`` translates it where it is used."""
    return message


def both(template: str, **values: object) -> tuple[str, str]:
    """``template`` filled in English (a key things are counted by, the same in every language)
    and in the current language (what a person reads)."""
    return template.format(**values), _(template).format(**values)
