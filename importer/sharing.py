"""One quota per app key, whatever runs at once: the runs sending on one journal share it.

Each sending run holds a lease in the journal (``RunJournal.share``) and renews it every
``RENEW_S``; its pacer runs at the lowest ``--qps`` of the live leases divided by their number,
so the platform sees at most N calls a second from all of them together. A run that joins waits,
before its first call, until every other run has renewed since it joined (and so slowed down)
and their faster starts have left the last second; a run that ends or dies gives its share back
at the others' next renewal (at once, or within ``LEASE_STALE_S``).

``--qps auto`` runs do not share: each finds its own rate from the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from importer.errors import JournalError
from importer.journal import LEASE_STALE_S, RunJournal
from importer.pacing import Pacer, paced_rate

RENEW_S = 0.5
SPAN_S = 1.005  # the pacer's window: starts older than this no longer count anywhere


@contextlib.asynccontextmanager
async def shared_quota(run: RunJournal, pacer: Pacer, qps: float) -> AsyncIterator[None]:
    """Pace ``pacer`` to this run's share of ``qps`` while the block sends."""
    quota, live, seen = run.share(qps, time.time())
    if live > 1:
        deadline = time.monotonic() + LEASE_STALE_S
        while not seen and time.monotonic() < deadline:  # the others learn of this run
            await asyncio.sleep(RENEW_S / 5)
            quota, live, seen = run.share(qps, time.time())
        await asyncio.sleep(SPAN_S)  # ... and their faster starts leave the window
    _pace(pacer, quota, live)
    task = asyncio.create_task(_renew(run, pacer, qps, (quota, live)), name="quota-share")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        run.end_share()


def _pace(pacer: Pacer, quota: float, live: int) -> None:
    """Each of ``live`` runs: at most quota/live starts a second, at its share of the quota's
    paced rate (so together they pace as one run would)."""
    pacer.set_rate(quota / live, rate=paced_rate(quota) / live)


async def _renew(run: RunJournal, pacer: Pacer, qps: float, current: tuple[float, int]) -> None:
    while True:
        await asyncio.sleep(RENEW_S)
        try:
            quota, live, _ = run.share(qps, time.time())
        except JournalError:  # busy for a while: keep the pace, try again next time
            continue
        if (quota, live) != current:
            current = (quota, live)
            _pace(pacer, quota, live)
