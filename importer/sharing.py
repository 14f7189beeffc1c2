"""One quota per app key, whatever runs at once: the runs sending on one journal share it.

Each sending run holds a lease in the journal (``RunJournal.share``) with its own limit (its
``--qps``, or the rate ``--qps auto`` has learnt so far) and renews it every ``RENEW_S``; its
pacer runs at the lowest limit of the live leases divided by their number (``QuotaShare``), so
the platform sees at most N calls a second from all of them together; the ``--qps auto`` runs
thus pace to the lowest rate learnt, and one that joins starts at the others' limit instead of
5 calls/s. A run that joins waits, before its first call, until every
other run has renewed since it joined (and so slowed down) and their faster starts have left the
last second; a run that ends or dies gives its share back at the others' next renewal (at once,
or within ``LEASE_STALE_S``). The clocks and the sleep are a ``Clock``, so tests move a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from importer.errors import JournalError
from importer.journal import LEASE_STALE_S, RunJournal
from importer.pacing import WINDOW_S, QuotaShare

RENEW_S = 0.5


@dataclass(frozen=True, slots=True)
class Clock:
    """What the protocol reads the time from and sleeps on: the real ones, or a test's fake."""

    wall: Callable[[], float] = time.time  # lease times in the journal, shared across hosts
    monotonic: Callable[[], float] = time.monotonic  # how long a joining run has waited
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep


REAL_CLOCK = Clock()


@contextlib.asynccontextmanager
async def shared_quota(
    run: RunJournal, quota: QuotaShare, clock: Clock = REAL_CLOCK
) -> AsyncIterator[None]:
    """Pace ``quota``'s pacer to this run's share of the app key's limit while the block sends."""
    others, live, seen = run.share(quota.limit, clock.wall())
    if live > 1:
        deadline = clock.monotonic() + LEASE_STALE_S
        while not seen and clock.monotonic() < deadline:  # the others learn of this run
            await clock.sleep(RENEW_S / 5)
            others, live, seen = run.share(quota.limit, clock.wall())
        await clock.sleep(WINDOW_S)  # ... and their faster starts leave the window
    quota.shared(others, live)
    task = asyncio.create_task(_renew(run, quota, clock), name="quota-share")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        run.end_share()


async def _renew(run: RunJournal, quota: QuotaShare, clock: Clock) -> None:
    while True:
        await clock.sleep(RENEW_S)
        try:
            others, live, _ = run.share(quota.limit, clock.wall())
        except JournalError:  # busy for a while: keep the pace, try again next time
            continue
        quota.shared(others, live)
