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
import re
import string
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


def lang_in_argv(argv: list[str]) -> str | None:
    """The ``--lang`` of a command line, wherever it stands (before or after ``--help``), so
    that the help and click's own errors are in it too; None when not given or not a
    language (click then says so)."""
    for at, arg in enumerate(argv):
        if arg == "--":
            break
        value = argv[at + 1] if arg == "--lang" and at + 1 < len(argv) else None
        if arg.startswith("--lang="):
            value = arg.partition("=")[2]
        if value is not None:
            return value if value in LANGS else None
    return None


@contextlib.contextmanager
def click_speaks(lang: str) -> Iterator[None]:
    """click's own words ("Usage:", "Options", "[default: ...]", its errors) in ``lang`` for
    the block. click translates them with the standard library's gettext (its global domain, in
    the language of the locale variables): for the block that domain is ours and ``LANGUAGE``
    the language chosen, as ``gettext.textdomain`` and gettext's documentation intend."""
    domain, before = gettext.textdomain(), os.environ.get("LANGUAGE")
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)
    os.environ["LANGUAGE"] = lang
    try:
        yield
    finally:
        gettext.textdomain(domain)
        if before is None:
            os.environ.pop("LANGUAGE", None)
        else:
            os.environ["LANGUAGE"] = before


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


def and_then(first: str, then: str) -> str:
    """Two parts of a text kept in English (what happened, then what else or what to do), as
    ``shown`` finds them: joined by "; "."""
    return f"{first}; {then}"


# -- a text kept in English, shown in the run's language -------------------------------------
#
# The journal keeps what happened to a row in English (its texts are data, the same whichever
# language a run spoke), and a report shows them in the language of the run that writes it:
# ``shown`` finds the catalogue's message a text was made from (a message, or a ``{name}``
# template filled with values, or two of them joined by "; ") and gives it in the current
# language, its values shown so too. A text the catalogue does not know stays as it is.


def shown(text: str) -> str:
    """``text`` (English, made from the catalogue's messages) in the current language."""
    lang = current()
    if lang == "en" or not text:
        return text
    return _shown(lang, text) or _partly(lang, text)


@functools.lru_cache(maxsize=8192)  # a report repeats its texts row after row
def _shown(lang: str, text: str) -> str | None:
    """``text`` in ``lang``, or None when the catalogue does not know it whole."""
    translated = translation(lang).gettext(text)
    if translated != text:
        return translated
    at = text.find("; ")
    while at > 0:  # "{first}; {then}": the first split whose halves are both known
        first, then = _shown(lang, text[:at]), _shown(lang, text[at + 2 :])
        if first is not None and then is not None:
            return _joined(lang, first, then)
        at = text.find("; ", at + 2)
    for template in _templates(lang):  # a template with "; " of its own, or none
        values = template.values(text)
        if values is not None:
            return template.translated.format(
                **{name: _shown(lang, value) or value for name, value in values.items()}
            )
    return None


def _partly(lang: str, text: str) -> str:
    """A text the catalogue does not know whole: its known parts (between "; ") shown."""
    parts = text.split("; ")
    shown_parts = [_shown(lang, part) for part in parts]
    if not any(shown_parts):
        return text
    result = shown_parts[0] or parts[0]
    for part, shown_part in zip(parts[1:], shown_parts[1:], strict=True):
        result = _joined(lang, result, shown_part or part)
    return result


def _joined(lang: str, first: str, then: str) -> str:
    return translation(lang).gettext("{first}; {then}").format(first=first, then=then)


class _Template:
    """A catalogue message with ``{name}`` values, and how to find them in a text made of it."""

    def __init__(self, message: str, translated: str) -> None:
        self.translated = translated
        parts, names = [], set()
        for literal, name, _spec, _conversion in string.Formatter().parse(message):
            parts.append(re.escape(literal))
            if name is not None:
                parts.append(f"(?P={name})" if name in names else f"(?P<{name}>.+?)")
                names.add(name)
        self.prefix = message.split("{", 1)[0]
        self.words = sum(len(literal) for literal, *_rest in string.Formatter().parse(message))
        self._pattern = re.compile("".join(parts), re.DOTALL)

    def values(self, text: str) -> dict[str, str] | None:
        if not text.startswith(self.prefix):
            return None
        match = self._pattern.fullmatch(text)
        return match.groupdict() if match else None


@functools.cache
def _templates(lang: str) -> tuple[_Template, ...]:
    """The catalogue's templates that have words of their own (not ``{first}; {then}``), the
    most words first: the most particular match wins."""
    catalogue = _messages(lang)
    found = [
        _Template(message, translated)
        for message, translated in catalogue.items()
        if "{" in message and re.search("[A-Za-z]", re.sub(r"\{\w*\}", "", message))
    ]
    return tuple(sorted(found, key=lambda t: -t.words))


def _messages(lang: str) -> dict[str, str]:
    """The catalogue of ``lang``: English message -> translation (no context, no plural).
    gettext keeps it as ``_catalog``, not a documented name: test_i18n fails loudly if it goes."""
    catalogue = getattr(translation(lang), "_catalog", None)
    if not isinstance(catalogue, dict):
        raise RuntimeError("gettext no longer keeps its catalogue as _catalog")  # pragma: no cover
    return {
        message: translated
        for message, translated in catalogue.items()
        if isinstance(message, str) and message and "\x04" not in message
    }
