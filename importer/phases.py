"""Which worker is waiting and which is calling, so that a stop cancels exactly those.

``stop()`` cancels the workers that wait (for the pacer, a backoff) and ``abort()`` also those
with a call in flight; a ``CancelledError`` that did not come from here (the run's task itself
being cancelled) still propagates. ``during(phase, awaitable)`` is how a worker enters a phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
WAIT, CALL = "wait", "call"


class Phases:
    def __init__(self) -> None:
        self._phase: dict[asyncio.Task, str] = {}  # worker -> WAIT | CALL while in one
        self._interrupted: set[asyncio.Task] = set()  # workers cancelled from here

    def __repr__(self) -> str:
        return f"<Phases calling={self.count(CALL)} waiting={self.count(WAIT)}>"

    def count(self, phase: str) -> int:
        return sum(1 for current in self._phase.values() if current == phase)

    def interrupt(self, phase: str) -> None:
        """Cancel every worker now in ``phase`` (once each)."""
        for task, current in self._phase.items():
            if current == phase and task not in self._interrupted:
                self._interrupted.add(task)
                task.cancel()

    async def during(self, phase: str, awaitable: Awaitable[T]) -> tuple[bool, T | None]:
        """Await in ``phase``: (True, its result), or (False, None) when ``interrupt`` cut it."""
        task = asyncio.current_task()
        assert task is not None
        self._phase[task] = phase
        try:
            return True, await awaitable
        except asyncio.CancelledError:
            if task not in self._interrupted:
                raise
            self._interrupted.discard(task)
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: ours, consumed here
            if uncancel is not None:
                uncancel()
            return False, None
        finally:
            del self._phase[task]
