"""A backend with ``writers`` (PostgreSQL's) commits its batches on a thread: the event loop goes
on meanwhile, what queues up forms the next batch, a failure reaches the claims and the flush,
and ``flush`` waits for the batch in flight. Played on an in-memory backend whose commit waits
at a gate the test opens."""

from __future__ import annotations

import asyncio
import threading

import pytest

from importer.errors import JournalError
from importer.journal._base import PriorCall, RunJournal
from importer.rows import Outcome, Status

WAIT_S = 10  # a ceiling: each wait returns as soon as the other thread gets there


class GatedRun(RunJournal):
    """Claims, call states and results in dicts; each commit waits until ``gate`` is open."""

    writers = 1

    def __init__(self) -> None:
        super().__init__(1, "app", "method")
        self.calls: dict[str, str] = {}
        self.results: dict[int, Outcome] = {}
        self.commits: list[tuple[list[str], list[int]]] = []  # what each batch held
        self.gate = threading.Event()
        self.entered = threading.Event()  # a commit is waiting at the gate
        self.fail_next = False
        self.delivering = threading.Event()  # flush() waits for a batch in flight
        self.threads: set[str] = set()
        self._staged: tuple[dict, dict, list[str], list[int]] | None = None

    def _begin(self, immediate: bool) -> None:
        self._staged = (dict(self.calls), dict(self.results), [], [])

    def _commit(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        calls, results, claims, rows = self._staged
        self._staged = None
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk I/O error")
        self.calls, self.results = calls, results
        self.commits.append((claims, rows))

    def _rollback(self) -> None:
        self._staged = None

    def _deliver(self, batch) -> None:
        self.delivering.set()
        super()._deliver(batch)

    def prior(self, row_key: str) -> PriorCall | None:
        calls = self._staged[0] if self._staged else self.calls
        state = calls.get(row_key)
        return None if state is None else PriorCall(state, "", "", None, 1)

    def _claim(self, row_key: str) -> None:
        self._staged[0][row_key] = "in_flight"
        self._staged[2].append(row_key)

    def _release(self, row_key: str, before: PriorCall | None) -> None:
        self._staged[0].pop(row_key, None)

    def _settle_calls(self, states, now: float) -> None:
        for row_key, state, _request_id, _system_time in states:
            self._staged[0][row_key] = state

    def _count_calls(self, day: str, calls: int) -> None:
        pass

    def _add_results(self, outcomes) -> None:
        for row, _key, outcome, _digest in outcomes:
            self._staged[1][row] = outcome
            self._staged[3].append(row)

    def _add_minutes(self, minutes) -> None:
        pass

    def _minutes_recorded(self):
        return []

    def mark_done(self, source_row, row_key, outcome, digest=None) -> None:
        raise NotImplementedError

    def paired_results(self):
        return iter(sorted((row, None, o) for row, o in self.results.items()))

    def reserve(self, calls, now):
        raise NotImplementedError

    def share(self, qps, now):
        raise NotImplementedError

    def peers(self, now):
        return None

    def end_share(self) -> None:
        pass

    def calls_on(self, day: str) -> int:
        return 0

    def finish(self, keep_results: bool = False, end=None) -> None:
        self.close_writer()


def success(row_key: str) -> Outcome:
    return Outcome(Status.SUCCESS, request_id=f"r-{row_key}", attempts=1)


async def waited(event: threading.Event) -> None:
    """Until the writer's thread sets ``event``, without holding the event loop."""
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, WAIT_S)


async def test_the_event_loop_goes_on_while_a_batch_commits_and_what_queues_is_the_next_batch():
    run = GatedRun()
    first = run.claim_soon("h1")
    await waited(run.entered)  # the writer holds the first batch at the gate
    ticks = 0
    for _ in range(5):  # the loop is free: other tasks run
        await asyncio.sleep(0)
        ticks += 1
    later = [run.claim_soon("h2"), run.claim_soon("h3")]
    run.settle_soon(7, None, Outcome(Status.INVALID, error="bad"))
    await asyncio.sleep(0)
    assert ticks == 5 and not first.done() and not any(f.done() for f in later)
    run.gate.set()
    assert await first is None
    assert await asyncio.gather(*later) == [None, None]
    run.flush()
    # a group commit: everything queued while the first batch committed went in one more
    assert run.commits == [(["h1"], []), (["h2", "h3"], [7])]
    assert run.threads == {"journal-writer_0"}
    run.finish()


async def test_a_batch_that_fails_fails_its_claims_and_the_next_flush_says_so():
    run = GatedRun()
    run.gate.set()
    run.fail_next = True
    claim = run.claim_soon("h1")
    with pytest.raises(JournalError, match="disk I/O error"):
        await claim
    with pytest.raises(JournalError, match="cannot be written"):
        run.flush()
    assert run.calls == {} and run.commits == []
    # the journal still works for the next batch (the claim was rolled back, not kept)
    assert await run.claim_soon("h1") is None
    run.finish()
    assert run.calls == {"h1": "in_flight"}


async def test_flush_waits_for_the_batch_in_flight_and_commits_what_queued_after_it():
    run = GatedRun()
    assert await _claimed(run, "h1")
    run.gate.clear()
    run.entered.clear()
    run.settle_soon(1, "h1", success("h1"))
    await waited(run.entered)  # the outcome's batch is at the gate, on the writer's thread
    run.settle_soon(2, None, Outcome(Status.INVALID, error="bad"))  # queued behind it
    run.delivering.clear()

    def open_once_flush_waits() -> None:  # flush() holds the loop: the gate opens from aside
        assert run.delivering.wait(WAIT_S)
        run.gate.set()

    opener = threading.Thread(target=open_once_flush_waits)
    opener.start()
    run.flush()
    opener.join()
    # when flush returns, both are in the journal: the one in flight and the one queued
    assert run.calls == {"h1": "success"} and sorted(run.results) == [1, 2]
    run.finish()


async def _claimed(run: GatedRun, row_key: str) -> bool:
    run.gate.set()
    return await run.claim_soon(row_key) is None
