"""The inputs of one command: quoted globs expanded, a DataFrame or rows written as an input
file, a workbook path each, the archive.

A cron inbox is ``top-import run 'inbox/*.xlsx' --archive done/``: files go one after another,
each gets its own result workbook, and a file moves to the archive only when its run ended with
exit 0.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import xlsxwriter

from importer.config import Config
from importer.errors import UsageError
from importer.i18n import N_, _
from importer.labels import Item
from importer.loader import EXCEL_CELL_LIMIT, summary_item
from importer.protocol import GMT8
from importer.reporter import EXCEL_MAX_DATA_ROWS

_GLOB_CHARS = frozenset("*?[")
_CUT = -2  # xlsxwriter's status for a string longer than a cell holds
EXCEL_COLUMNS = 16_384  # columns a workbook sheet holds


def expand_inputs(inputs: Sequence[str], config: Config, say: Callable[[str], None]) -> list[Path]:
    """The inputs, quoted globs (``'inbox/*.xlsx'``) expanded in sorted order, each file once.

    A glob that matches nothing is a line, not an error (a cron inbox is often empty); a plain
    path that does not exist stays an unreadable input (exit 2) when its turn comes.
    """
    paths: list[Path] = []
    for text in inputs:
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            found = [Path(m) for m in sorted(glob.glob(text))]
            matches = [m for m in found if m.is_file()]
            odd = [m for m in found if not m.is_file() and not m.is_dir()]
            if odd:
                if len(odd) == 1:
                    skipped = _(
                        "{pattern}: skipped 1 entry that is not a regular file (a pipe, a device, "
                        "a broken link): {entries}"
                    )
                else:
                    skipped = _(
                        "{pattern}: skipped {count} entries that are not a regular file (a pipe, "
                        "a device, a broken link): {entries}"
                    )
                entries = ", ".join(str(m) for m in odd[:3]) + (", ..." if len(odd) > 3 else "")
                say(skipped.format(pattern=text, count=f"{len(odd):,}", entries=entries))
            if not matches:
                say(_("{pattern}: no file matches; nothing to do").format(pattern=text))
            paths += matches
        else:
            paths.append(Path(text))
    paths = list(dict.fromkeys(paths))
    if config.out is not None and len(paths) > 1:
        raise UsageError(_("--out takes one input; with several inputs use --out-dir."))
    return paths


def as_input_file(source: Any, input_name: str | None, folder: Path) -> Path:
    """``source`` as an input file: a path as it is; a pandas DataFrame or an iterable of dicts
    written to ``folder/<input_name>.xlsx`` (default ``dataframe`` / ``rows``), one sheet
    ``rows`` whose cells are what a spreadsheet would hold (``_write_value``), so that the
    loader reads and judges it exactly as a file. A ``UsageError`` for anything else, or for
    more columns, rows or characters than a workbook holds (nothing is cut)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if hasattr(source, "itertuples") and hasattr(source, "columns"):  # a pandas DataFrame
        headers = [str(c) for c in source.columns]
        rows: Iterable[Iterable[object]] = source.itertuples(index=False, name=None)
        name = input_name or "dataframe"
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        dicts = list(source)
        if not all(isinstance(d, Mapping) for d in dicts):
            raise UsageError(_("Rows must be dicts of column -> value (or give a path)."))
        headers = list(dict.fromkeys(str(k) for d in dicts for k in d))
        rows = ([d.get(h) for h in headers] for d in dicts)
        name = input_name or "rows"
    else:
        raise UsageError(
            _(
                "Cannot read a {type}: give a path, a pandas DataFrame or an iterable of dicts."
            ).format(type=type(source).__name__)
        )
    if len(headers) > EXCEL_COLUMNS:
        raise UsageError(
            _(
                "{count} columns are more than a workbook sheet holds ({most}); keep the columns "
                "the API needs, or write a CSV file and give its path."
            ).format(count=f"{len(headers):,}", most=f"{EXCEL_COLUMNS:,}")
        )
    path = folder / f"{name}.xlsx"
    options = {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    book = xlsxwriter.Workbook(str(path), options)
    sheet = book.add_worksheet("rows")
    try:
        for col, header in enumerate(headers):
            sheet.write_string(0, col, header)
        for r, values in enumerate(rows, start=1):
            if r > EXCEL_MAX_DATA_ROWS:
                raise UsageError(
                    _(
                        "The {name} has more than {most} rows, the most a workbook sheet holds; "
                        "nothing was sent. Write it to a CSV file (df.to_csv) and give its path, "
                        "or send it in parts."
                    ).format(name=name, most=f"{EXCEL_MAX_DATA_ROWS:,}")
                )
            for col, value in enumerate(values):
                if _write_value(sheet, r, col, value) == _CUT:
                    raise UsageError(
                        _(
                            "The {name}'s row {row}, column {column}, holds more than {most} "
                            "characters, more than a workbook cell holds; nothing was sent. Write "
                            "it to a CSV file and give its path."
                        ).format(
                            name=name,
                            row=r + 1,
                            column=repr(headers[col]),
                            most=f"{EXCEL_CELL_LIMIT:,}",
                        )
                    )
    finally:
        book.close()
    return path


def _write_value(sheet: Any, row: int, col: int, value: object) -> int:
    """A Python value as the cell a spreadsheet would hold, so the loader judges it the same;
    xlsxwriter's status (``_CUT``: the text was longer than a cell holds)."""
    if _missing(value):  # None, pandas' NA and NaT: empty
        return 0
    if isinstance(value, bool):
        return sheet.write_boolean(row, col, value)
    np = _numpy_of(value)
    if isinstance(value, float) or (
        np is not None and isinstance(value, np.floating)
    ):  # a number cell
        number = float(value)  # type: ignore[arg-type]
        if math.isnan(number):
            return 0
        if math.isinf(number):  # no number cell holds it: the text, which a Number field refuses
            return sheet.write_string(row, col, "inf" if number > 0 else "-inf")
        return sheet.write_number(row, col, number)
    if isinstance(value, int) or (
        np is not None and isinstance(value, np.integer) and not isinstance(value, np.timedelta64)
    ):
        return sheet.write_string(row, col, str(int(value)))  # type: ignore[call-overload]
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # the platform's times are GMT+8 wall time
            value = value.astimezone(GMT8)
        return sheet.write_string(row, col, value.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, date):
        return sheet.write_string(row, col, value.strftime("%Y-%m-%d"))
    return sheet.write_string(row, col, str(value))  # text stays text, "nan" included


def _missing(value: object) -> bool:
    """None, or pandas' ``NA`` or ``NaT`` (both singletons). pandas is never imported here: a
    value can only be one of them when pandas is loaded already."""
    if value is None:
        return True
    pd = sys.modules.get("pandas")
    return pd is not None and (value is pd.NA or value is pd.NaT)


def _numpy_of(value: object) -> Any:
    """numpy when ``value`` is a numpy scalar (``np.float32``, ``np.int64``...), else None;
    never imported here, as for pandas above."""
    np = sys.modules.get("numpy")
    return np if np is not None and isinstance(value, np.generic) else None


def per_input_configs(
    paths: list[Path], config: Config, kind: str = "result", *, rebuild: bool = False
) -> dict[Path, Config]:
    """Each input's config, with ``out`` set so that no two inputs write the same workbook.

    The default is ``<out_dir>/<stem>.<kind>.xlsx`` (``result`` for a run; a check —
    ``validate``, ``dry-run`` — has its own, so it never overwrites a run's workbook, with the
    fixes typed into its failed sheet); inputs sharing a stem (``t.csv`` and
    ``t.xlsx``, or ``a/t.csv`` and ``b/t.csv``) get ``<stem>-<ext>`` and then a number.

    A workbook of the loop fed back (``t.result.xlsx``, ``t-2.result.xlsx``) is the next round,
    ``t-2``, ``t-3``, ..., and never a workbook that exists: it may be the one being edited.
    ``rebuild`` (``report``: the run's workbook written again) takes the round's name as is.
    """
    if config.out is not None:
        return dict.fromkeys(paths, config)
    stems = Counter(_round(p)[0] for p in paths)
    taken: set[Path] = set()
    configs = {}
    for path in paths:
        name, number = _round(path)
        if stems[name] > 1 and path.suffix:
            name = f"{name}-{path.suffix.lstrip('.').lower()}"
        n = number + 1 if number else 1
        out = _named(config.out_dir, name, n, kind)
        while (
            out in taken
            or out.resolve() == path.resolve()
            or (not rebuild and out.exists() and (number or _of_another_input(out, path)))
        ):
            n += 1
            out = _named(config.out_dir, name, n, kind)
        taken.add(out)
        configs[path] = replace(config, out=out)
    return configs


def _of_another_input(workbook: Path, path: Path) -> bool:
    """``workbook`` was written for another input than ``path`` (by its summary's ``input``):
    ``t-2.xlsx`` must not write over ``t-2.result.xlsx`` of ``t.xlsx``'s loop. A rerun of the
    same input writes over its own workbook, as a nightly import does."""
    if workbook.suffix.lower() != ".xlsx":
        return False
    recorded = summary_item(workbook, Item.INPUT)
    return isinstance(recorded, str) and Path(recorded).name != path.name


def next_name(input_name: str, kind: str = "result") -> str:
    """The loop's name of the workbook of an input called ``input_name`` (no folder looked
    at): ``t.result.xlsx`` for ``t.csv``, ``t-2.result.xlsx`` for ``t.result.xlsx`` fed back."""
    name, number = _round(Path(input_name))
    return _named(Path(), name, number + 1 if number else 1, kind).name


def _named(folder: Path, name: str, n: int, kind: str) -> Path:
    return folder / (f"{name}.{kind}.xlsx" if n == 1 else f"{name}-{n}.{kind}.xlsx")


def check_outputs(config: Config, configs: dict[Path, Config]) -> None:
    """Every file and folder the command will write is writable, checked before the first call
    (a ``UsageError`` naming it otherwise): each result workbook, --summary-json, --archive."""
    for input_config in configs.values():
        if input_config.out is not None:
            _check_file(input_config.out, _RESULT_FILE, "--out / --out-dir")
    if config.summary_json is not None:
        _check_file(config.summary_json, _SUMMARY_FILE, "--summary-json")
    if config.archive is not None:
        _check_folder(config.archive, "--archive")


# what a file checked by check_outputs is, named with its path in the sentence that refuses it
_RESULT_FILE = N_("the result file {path}")
_SUMMARY_FILE = N_("the summary {path}")


def _check_file(path: Path, what: str, option: str) -> None:
    named = _(what).format(path=path)
    if path.is_dir():
        raise UsageError(
            _("Cannot write {what}: it is a folder; give a file in {option}.").format(
                what=named, option=option
            )
        )
    _check_folder(path.parent, option, named)


def _check_folder(folder: Path, option: str, what: str = "") -> None:
    """Create ``folder`` if needed and prove a file can be made there (then removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".top-import-probe-"):
            pass
    except OSError as exc:
        target = what or _("into {folder}").format(folder=folder)
        reason = exc.strerror or str(exc)
        raise UsageError(
            _(
                "Cannot write {what} ({why}); fix the folder's permissions or choose another with "
                "{option}. Nothing was sent."
            ).format(what=target, why=reason, option=option)
        ) from None


_KINDS = (".result", ".validate", ".dry-run")
_ROUND = re.compile(r"(.+)-([0-9]{1,3})")  # t-2: a round of the loop (t-2024 is a name)


def _round(path: Path) -> tuple[str, int]:
    """The name a workbook is named after and the loop's round the input is: a report fed back
    (``t.result.xlsx``, its failed sheet fixed) keeps its original input's name, ``t``, round 1;
    ``t-3.result.xlsx`` is round 3; any other input is round 0."""
    stem = path.stem
    for kind in _KINDS:
        if stem.endswith(kind) and len(stem) > len(kind):
            name = stem[: -len(kind)]
            numbered = _ROUND.fullmatch(name)
            if numbered is not None and int(numbered[2]) >= 2:
                return numbered[1], int(numbered[2])
            return name, 1
    return stem, 0


def archive_input(path: Path, folder: Path) -> Path:
    """Move an input into ``folder`` (created); never over a file there: ``a-1.xlsx``, ... ."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(100_000):
        target = folder / (path.name if n == 0 else f"{path.stem}-{n}{path.suffix}")
        try:
            os.link(path, target)  # refuses an existing target, unlike a rename
        except FileExistsError:
            continue
        except OSError:  # another filesystem, or no hard links there: copy, then delete
            if target.exists():
                continue
            shutil.copy2(path, target)
        path.unlink()
        return target
    raise FileExistsError(f"{folder} holds too many copies of {path.name}")
