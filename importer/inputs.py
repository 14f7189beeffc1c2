"""The inputs of one command: quoted globs expanded, a workbook path each, the archive.

A cron inbox is ``top-import run 'inbox/*.xlsx' --archive done/``: files go one after another,
each gets its own result workbook, and a file moves to the archive only when its run ended with
exit 0.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from importer.config import Config
from importer.errors import UsageError
from importer.labels import Item
from importer.loader import summary_item
from importer.summary import plural

_GLOB_CHARS = frozenset("*?[")


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
                say(
                    f"{text}: skipped {plural(len(odd), 'entry', 'entries')} that "
                    f"{'is' if len(odd) == 1 else 'are'} not a regular file (a pipe, a device, a "
                    f"broken link): {', '.join(str(m) for m in odd[:3])}"
                    + (", ..." if len(odd) > 3 else "")
                )
            if not matches:
                say(f"{text}: no file matches; nothing to do")
            paths += matches
        else:
            paths.append(Path(text))
    paths = list(dict.fromkeys(paths))
    if config.out is not None and len(paths) > 1:
        raise UsageError("--out takes one input; with several inputs use --out-dir.")
    return paths


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


def _named(folder: Path, name: str, n: int, kind: str) -> Path:
    return folder / (f"{name}.{kind}.xlsx" if n == 1 else f"{name}-{n}.{kind}.xlsx")


def check_outputs(config: Config, configs: dict[Path, Config]) -> None:
    """Every file and folder the command will write is writable, checked before the first call
    (a ``UsageError`` naming it otherwise): each result workbook, --summary-json, --archive."""
    for input_config in configs.values():
        if input_config.out is not None:
            _check_file(input_config.out, "the result file", "--out / --out-dir")
    if config.summary_json is not None:
        _check_file(config.summary_json, "the summary", "--summary-json")
    if config.archive is not None:
        _check_folder(config.archive, "--archive")


def _check_file(path: Path, what: str, option: str) -> None:
    if path.is_dir():
        raise UsageError(f"Cannot write {what} {path}: it is a folder; give a file in {option}.")
    _check_folder(path.parent, option, f"{what} {path}")


def _check_folder(folder: Path, option: str, what: str = "") -> None:
    """Create ``folder`` if needed and prove a file can be made there (then removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".top-import-probe-"):
            pass
    except OSError as exc:
        target = what or f"into {folder}"
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"Cannot write {target} ({reason}); fix the folder's permissions or choose another "
            f"with {option}. Nothing was sent."
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
