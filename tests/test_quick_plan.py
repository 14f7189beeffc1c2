"""A big CSV's plan from its line count: the first call comes without a pass over every row
before it, yet every row is checked, counted and reported as before; the daily quota is still
checked before the first call (on the line count, or on the exact count when that does not
fit); a caller who reads the plan (serve) gets the exact one. ``QUICK_PLAN_ROWS`` is lowered
here so that small files take the path a million-row file takes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import read_sheet, ticket, write_csv

import importer
from importer import Event, EventKind, pipeline
from importer.journal import QuotaView
from importer.loader import open_input
from importer.rows import Status
from importer.spec import load_spec

FAST = {"qps": 1000, "canary": 0}
HEADER = "corp_id,user_identify,case_id,tenant_id,open_conversation_id"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("TOP_APP_KEY", "TOP_APP_SECRET", "TOP_SESSION", "TOP_GATEWAY", "TOP_JOURNAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pipeline, "QUICK_PLAN_ROWS", 5)
    return tmp_path


def credentials(sim) -> dict[str, str]:
    return {"gateway": sim.url, "app_key": sim.settings.app_key, "app_secret": sim.settings.secret}


def _rows(n: int) -> list[dict[str, str]]:
    """``n`` valid rows, one invalid and a duplicate of the first."""
    return [ticket(i) for i in range(n)] + [dict(ticket(99), tenant_id="abc"), ticket(0)]


def test_a_big_csv_is_sent_in_one_pass_and_every_row_is_still_checked(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", _rows(8))
    seen: list[Event] = []
    result = importer.run("t.csv", **credentials(sim), **FAST, on_event=seen.append)
    phases = [e.phase for e in seen if e.kind is EventKind.PASS_STARTED]
    assert phases == ["sending", "writing the workbook"]  # no pass before the first call
    plan = next(e.plan for e in seen if e.kind is EventKind.PLAN)
    assert plan.estimated and plan.to_send == 10  # the line count: an upper bound
    assert "up to 10 rows to send" in plan.line()
    assert result.exit_code == 1
    assert result.counts == {"success": 8, "invalid": 1, "duplicate": 1}
    assert sim.stats()["accepted"] == 8 and sim.stats()["calls"] == 8
    again = importer.run("t.csv", **credentials(sim), **FAST)  # resumed: nothing sent twice
    assert again.counts == {"skipped": 8, "invalid": 1, "duplicate": 1}
    assert sim.stats()["calls"] == 8
    statuses = Counter(row["status"] for row in read_sheet(again.workbook))
    assert statuses == {"skipped": 8, "invalid": 1, "duplicate": 1}


def test_a_small_csv_and_a_workbook_keep_the_exact_pre_flight(here, simulator, monkeypatch):
    sim = simulator()
    write_csv(here / "t.csv", _rows(2))  # 4 lines: under the (lowered) threshold
    seen: list[Event] = []
    importer.run("t.csv", **credentials(sim), **FAST, on_event=seen.append)
    plan = next(e.plan for e in seen if e.kind is EventKind.PLAN)
    assert not plan.estimated and (plan.to_send, plan.invalid, plan.duplicate) == (2, 1, 1)


def test_a_caller_who_reads_the_plan_gets_the_exact_one(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", _rows(8))
    plans = []
    importer.run("t.csv", **credentials(sim), **FAST, approve=plans.append)
    [plan] = plans
    assert not plan.estimated
    assert (plan.to_send, plan.invalid, plan.duplicate) == (8, 1, 1)


def test_a_line_count_over_the_daily_quota_takes_the_exact_count_before_any_call(here, simulator):
    sim = simulator()
    write_csv(here / "t.csv", _rows(8))  # 10 lines, 8 rows to send
    # 9 left: the line count (10) does not fit, the exact count (8) does: it is sent
    result = importer.run("t.csv", **credentials(sim), **FAST, daily_quota=9)
    assert result.counts["success"] == 8
    # 7 left: neither the line count (10) nor the exact count (9 new rows, one invalid) fits:
    # refused before the first call, on the exact count
    write_csv(
        here / "u.csv", [ticket(i) for i in range(100, 109)] + [dict(ticket(1), tenant_id="x")]
    )
    with pytest.raises(importer.ImporterError, match="sending 9 rows takes at least 9 calls"):
        importer.run("u.csv", **credentials(sim), **FAST, daily_quota=15)
    assert sim.stats()["calls"] == 8


@pytest.mark.parametrize(
    ("calls", "daily_quota", "used", "reserved", "fits"),
    [
        (10, None, 0, 0, True),
        (10, 10, 0, 0, True),
        (10, 10, 1, 0, False),
        (10, 20, 5, 5, True),
        (10, 20, 5, 6, False),
    ],
)
def test_fits_the_daily_quota(calls, daily_quota, used, reserved, fits):
    quota = QuotaView(used=used, reserved=reserved, reserving=1, sending=0, lowest=1e9)
    assert pipeline._fits(calls, daily_quota, quota) is fits


# -- the line count is never below the rows -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        (f"{HEADER}\n", 0),
        (f"{HEADER}\nc,u,1,2,x\nc,u,2,2,x\n", 2),
        (f"{HEADER}\nc,u,1,2,x\nc,u,2,2,x", 2),  # no line break at the end
        (f"{HEADER}\r\nc,u,1,2,x\r\nc,u,2,2,x\r\n", 2),  # Windows
        (f"{HEADER}\rc,u,1,2,x\rc,u,2,2,x", 2),  # old Mac: a lone \r ends a line
        (f"{HEADER}\n\nc,u,1,2,x\n\n", 3),  # blank lines: an overcount
    ],
)
def test_most_rows_of_a_csv(tmp_path, text, rows):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    assert open_input(path, load_spec(None), None, {}).most_rows() == rows


def test_most_rows_is_never_fewer_than_the_rows_read(tmp_path):
    spec = load_spec(None)
    rnd = random.Random(7)
    for case in range(200):
        ends = [rnd.choice(["\n", "\r\n", "\r"]) for _ in range(rnd.randint(0, 12))]
        lines = [HEADER]
        for i, _end in enumerate(ends):
            cell = rnd.choice(["u", '"a\nb"', '"a\r\nb"', "", "u,"])
            lines.append(f"c,{cell},{i},2,x" if rnd.random() < 0.9 else "")
        text = lines[0] + "".join(end + line for end, line in zip(ends, lines[1:], strict=True))
        if rnd.random() < 0.5:
            text += rnd.choice(["\n", "\r\n", "\r"])
        path = tmp_path / f"{case}.csv"
        path.write_bytes(text.encode())
        table = open_input(path, spec, None, {})
        assert table.most_rows() >= sum(1 for _ in table.rows()), repr(text)


def test_a_windows_line_break_across_two_blocks_is_not_an_undercount(tmp_path):
    line = "c,u,1,2,x"
    head = f"{HEADER}\r\n"
    # pad the first row so that its \r is the last byte of the first 1 MiB block
    pad = (1 << 20) - len(head) - len(line) - 1
    text = head + line + "x" * pad + "\r\n" + line + "\r\n"
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    assert path.read_bytes()[(1 << 20) - 1 : (1 << 20) + 1] == b"\r\n"
    assert open_input(path, load_spec(None), None, {}).most_rows() >= 2


def test_a_workbook_has_no_cheap_line_count(tmp_path):
    samples = Path(__file__).resolve().parent.parent / "samples"
    table = open_input(samples / "with_errors.xlsx", load_spec(None), None, {})
    assert table.most_rows() is None


def test_the_quota_held_on_the_line_count_becomes_what_is_left_once_every_row_is_read(
    here, simulator
):
    import sqlite3

    sim = simulator(latency_ms=300)  # every row is read long before the first answer
    write_csv(here / "t.csv", _rows(8))  # 10 lines: 8 to send
    held: dict[str, list[int]] = {"plan": [], "first answer": []}

    def planned() -> list[int]:
        with sqlite3.connect(here / "reports" / "journal.sqlite") as db:
            return [n for (n,) in db.execute("SELECT planned - made FROM reservations")]

    def on_event(event: Event) -> None:
        if event.kind is EventKind.PLAN:
            held["plan"] = planned()
        elif event.status is Status.SUCCESS and not held["first answer"]:
            held["first answer"] = planned()

    result = importer.run("t.csv", **credentials(sim), **FAST, daily_quota=1000, on_event=on_event)
    assert result.counts["success"] == 8
    assert held["plan"] == [10]  # the line count, before any call
    assert held["first answer"] == [8]  # the rows to send, once the send pass read them all
