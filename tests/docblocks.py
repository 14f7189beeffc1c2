"""The fenced blocks of a document (README.md, docs/zh/使用指南.md), run as written.

A document's ``bash`` and ``cron`` blocks are run line by line through ``bash`` in a scratch
folder (the ``top-import`` console script of this environment on PATH), so the document cannot
drift from what the tool does. Lines that only install (``pip install``) or set credentials
(``export``) are left to the test, which gives the simulator's key and secret in the
environment instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE_ZH = ROOT / "docs" / "zh" / "使用指南.md"
_FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(kind: str, document: Path = README) -> list[list[str]]:
    """The fenced blocks of ``document`` of this kind (``bash``, ``cron``, ``python``), as
    lines."""
    found: list[list[str]] = []
    current: list[str] = []
    inside: str | None = None  # the kind of the block we are in
    for line in document.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line)
        if fence and inside is None:
            inside, current = fence.group(1), []
        elif fence:
            if inside == kind:
                found.append(current)
            inside = None
        elif inside is not None:
            current.append(line)
    return found


def commands(block: list[str]) -> list[str]:
    """The command lines of a block: comments, installs and credential exports left out."""
    out = []
    for line in block:
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("export "):
            continue
        out.append(line.removeprefix("pip install -e . && "))
    return out


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def scratch(tmp_path: Path) -> Path:
    """A fresh folder holding the repository's samples, as a user's clone would."""
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    return tmp_path
