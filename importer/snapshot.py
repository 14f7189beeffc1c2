"""A private copy of an input, so that every pass of a run reads the bytes it started with.

A run reads its input three times (pre-flight, send, report). A file saved while the run is
sending (open in Excel, a cron file still being copied in) would otherwise give the report other
rows than the ones sent. So a run copies the input once, hashing it on the way (the hash is the
input's lock key), reads only the copy, and removes it at the end. Copies of runs that were
killed are removed by the next run that uses the same folder. The folder is 0700 and each copy
0600: they hold the user's rows.

The copy keeps the input's suffix (the loader reads by suffix); messages about it name the input.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from importer.errors import InputError
from importer.i18n import _
from importer.processes import pid_alive

BLOCK = 1 << 20
ATTEMPTS = 3  # a file that changes under three copies in a row is still being written
_PREFIX = "snapshot-"
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # the copy's side


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    original: Path
    path: Path  # the private copy
    key: str  # SHA-256 of the content
    _seen: tuple[int, int, int]  # the original's inode, size and mtime when it was copied

    def changed(self) -> bool:
        """Whether the original is no longer the file that was copied (saved, replaced, gone),
        by its inode, size and time, else by its content (an in-place rewrite of the same size
        with its time put back)."""
        try:
            if _identity(self.original.stat()) != self._seen:
                return True
            return sha256_of(self.original) != self.key
        except OSError:
            return True

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def named_as_original(self) -> Iterator[None]:
        """Messages about the copy name the input the user gave."""
        try:
            yield
        except InputError as exc:
            text = str(exc).replace(str(self.path), str(self.original))
            raise InputError(text) from None


def take(original: Path, folder: Path) -> Snapshot:
    """Copy ``original`` into ``folder`` (created), hashing it; an ``InputError`` if it cannot be
    read or keeps changing while it is copied (check it with ``loader.check_path`` first)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # another user's folder: as it is
            if stat.S_IMODE(folder.stat().st_mode) & 0o077:
                folder.chmod(0o700)  # made by an earlier version, 0755
    except OSError as exc:
        raise InputError(
            _("Cannot create {folder} for the private copy of {path}: {why}.").format(
                folder=folder, path=original, why=exc.strerror or exc
            )
        ) from None
    _remove_stale(folder)
    copy = folder / f"{_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{original.suffix}"
    try:
        for _attempt in range(ATTEMPTS):
            before = _identity(original.stat())
            key = _copy(original, copy)
            if _identity(original.stat()) == before:
                return Snapshot(original, copy, key, before)
    except OSError as exc:
        with contextlib.suppress(OSError):
            copy.unlink()
        if exc.errno in _NO_ROOM:
            raise InputError(
                _(
                    "Cannot make the private copy of {path} in {folder} ({why}); free some space "
                    "there (it is beside the journal) or give a --journal on a disk with room. "
                    "Nothing was sent."
                ).format(path=original, folder=folder, why=exc.strerror or exc)
            ) from None
        raise InputError(
            _("{path} cannot be read ({why}).").format(path=original, why=exc.strerror or exc)
        ) from None
    copy.unlink()
    raise InputError(
        _(
            "{path} kept changing while it was read (still being copied or saved?); run again "
            "once it is complete."
        ).format(path=original)
    )


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content, read in blocks (the lock key of an input)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    # 0600 from the start: the copy holds the user's rows, whatever the input's mode
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as src, open(fd, "wb") as dst:
        for block in iter(lambda: src.read(BLOCK), b""):
            digest.update(block)
            dst.write(block)
    return digest.hexdigest()


def _remove_stale(folder: Path) -> None:
    """Remove the copies of runs whose process is gone (killed before they cleaned up)."""
    for path in folder.glob(f"{_PREFIX}*"):
        pid_text = path.name[len(_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                path.unlink()
