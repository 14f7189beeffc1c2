"""Events and the stop handle: a caller that is not a terminal hears what the progress bar shows
and stops a run as SIGINT would, asserted on what the simulator saw."""

from __future__ import annotations

import threading
import warnings
from collections import Counter

import pytest
from helpers import ticket, write_csv

import importer
from importer import Event, EventKind, StopHandle
from importer.rows import Status

FAST = {"qps": 1000, "canary": 0}


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("TOP_APP_KEY", "TOP_APP_SECRET", "TOP_SESSION", "TOP_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def credentials(sim) -> dict[str, str]:
    return {"gateway": sim.url, "app_key": sim.settings.app_key, "app_secret": sim.settings.secret}


def test_a_run_tells_each_pass_the_plan_each_row_and_the_end(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", [ticket(i) for i in range(6)] + [dict(ticket(9), tenant_id="abc")])
    seen: list[Event] = []
    result = importer.run("t.csv", **credentials(sim), **FAST, on_event=seen.append)
    assert result.exit_code == 1  # the invalid row
    outline = [(e.kind, e.phase) for e in seen if e.kind is not EventKind.ROW]
    assert outline == [
        (EventKind.PASS_STARTED, "pre-flight"),
        (EventKind.PASS_ENDED, "pre-flight"),
        (EventKind.PLAN, "pre-flight"),
        (EventKind.PASS_STARTED, "sending"),
        (EventKind.PASS_ENDED, "sending"),
        (EventKind.PASS_STARTED, "writing the workbook"),
        (EventKind.PASS_ENDED, "writing the workbook"),
        (EventKind.FINISHED, ""),
    ]
    plan = next(e.plan for e in seen if e.kind is EventKind.PLAN)
    assert (plan.to_send, plan.invalid) == (6, 1)
    rows = [e for e in seen if e.kind is EventKind.ROW]
    assert Counter(e.status for e in rows) == {Status.SUCCESS: 6, Status.INVALID: 1}
    assert [e.rows for e in rows] == list(range(1, 8))  # rows settled so far, in order
    finished = seen[-1].summary
    assert finished is not None and finished.workbook == result.workbook
    assert all(e.input.name == "t.csv" for e in seen)
    assert sim.stats()["accepted"] == 6


def test_validate_tells_its_pass_and_the_end(here):
    write_csv(here / "t.csv", [ticket(i) for i in range(3)])
    seen: list[Event] = []
    result = importer.validate("t.csv", on_event=seen.append)
    assert result.exit_code == 0
    assert [(e.kind, e.phase, e.rows) for e in seen] == [
        (EventKind.PASS_STARTED, "checking", 0),
        (EventKind.PASS_ENDED, "checking", 3),
        (EventKind.FINISHED, "", 0),
    ]


def test_an_observer_that_raises_is_a_warning_and_never_stops_the_run(here, simulator):
    sim = simulator()
    calls = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise ValueError("display gone")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = importer.run(
            [ticket(i) for i in range(4)], **credentials(sim), **FAST, on_event=broken
        )
    assert result.counts == {"success": 4}
    assert len(calls) == 1  # not called again once it failed
    said = [str(w.message) for w in caught if "on_event" in str(w.message)]
    assert said == [
        "the on_event observer raised ValueError: display gone; it is not called again for "
        "this run, which goes on"
    ]
    assert sim.stats()["accepted"] == 4


def test_stop_does_what_sigint_does_without_a_signal(here, simulator):
    sim = simulator()
    handle = StopHandle()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.ROW and event.rows == 5:
            handle.stop()

    rows = [ticket(i) for i in range(200)]
    result = importer.run(
        rows, **credentials(sim), qps=20, concurrency=2, canary=0, on_event=on_event, stop=handle
    )
    assert result.exit_code == 1  # the rows' code: not_sent rows, no signal
    counts = result.counts
    assert counts["success"] >= 5 and counts["not_sent"] > 150, counts
    assert sum(counts.values()) == 200
    assert sim.stats()["accepted"] == counts["success"]  # the calls in flight finished
    assert max(sim.accepted().values()) == 1
    assert result.summary.interrupt_signal is None


def test_a_stop_from_another_thread_reaches_the_run(here, simulator):
    sim = simulator()
    handle = StopHandle()
    started = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.ROW:
            started.set()

    done: list[importer.Result] = []
    worker = threading.Thread(
        target=lambda: done.append(
            importer.run(
                [ticket(i) for i in range(500)],
                **credentials(sim),
                qps=20,
                concurrency=2,
                canary=0,
                on_event=on_event,
                stop=handle,
                out=False,
            )
        )
    )
    worker.start()
    assert started.wait(60)
    handle.stop()
    worker.join(60)
    (result,) = done
    assert result.counts["not_sent"] > 400, result.counts
    assert sim.stats()["accepted"] == result.counts["success"]


def test_abort_cancels_the_calls_in_flight_and_they_are_unknown(here, simulator):
    sim = simulator(latency_ms=300)
    handle = StopHandle()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.ROW:
            handle.abort()

    result = importer.run(
        [ticket(i) for i in range(40)],
        **credentials(sim),
        qps=100,
        concurrency=4,
        canary=0,
        on_event=on_event,
        stop=handle,
    )
    assert result.exit_code == 1
    counts = result.counts
    assert counts.get("unknown", 0) >= 1, counts  # cancelled in flight: may have landed
    assert counts["not_sent"] >= 30, counts
    assert sim.stats()["calls"] <= 8


def test_a_stop_before_the_run_starts_sends_nothing(here, simulator):
    from importer.errors import UsageError

    sim = simulator()
    handle = StopHandle()
    handle.stop()
    with pytest.raises(UsageError, match=r"stopped .* before it began"):
        importer.run([ticket(i) for i in range(5)], **credentials(sim), **FAST, stop=handle)
    assert sim.stats()["calls"] == 0
