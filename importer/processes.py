"""Whether a process of this machine still runs: stale locks, copies and temp files are those
of processes that are gone."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (or exists under another user); False once it is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
