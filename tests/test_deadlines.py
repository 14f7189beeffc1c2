"""--deadline and --max-runtime as the README promises them (the README is a contract): the
wall-clock time a run stops at, and the sentence when no time is left."""

from __future__ import annotations

from helpers import cli, statuses, ticket, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def test_a_deadline_that_passed_within_12_hours_stops_at_once(tmp_path, simulator):
    from datetime import datetime, timedelta

    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    past = (datetime.now() - timedelta(hours=1)).strftime("%H:%M")
    done = cli(["run", "t.csv", *FAST, "--deadline", past], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert "had already passed when the run started" in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"not_sent": 3}
    assert sim.stats()["calls"] == 0
    later = (datetime.now() + timedelta(hours=2)).strftime("%H:%M")
    assert cli(["run", "t.csv", *FAST, "--deadline", later], tmp_path, sim.env()).returncode == 0


def test_deadline_table():
    from datetime import datetime

    from importer.config import Config

    def at(deadline: str, now: str) -> str:
        moment = datetime.fromisoformat(f"2026-11-30 {now}")
        return f"{Config(deadline=deadline).stop_at(moment):%d %H:%M}"

    assert at("03:00", "04:41") == "30 03:00"  # passed 1h41 ago: at once
    assert at("06:30", "22:00") == "01 06:30"  # tonight's window: tomorrow morning
    assert at("23:00", "01:00") == "29 23:00"  # passed 2 h ago (yesterday): at once
    assert at("06:30", "02:00") == "30 06:30"  # later today


def test_deadline_is_wall_clock_time_across_a_daylight_saving_change(monkeypatch):
    """The night Berlin's clocks go from 02:00 to 03:00 (2026-03-29): a run started at 00:30
    (+01:00) with --deadline 06:30 stops at 06:30 on the clock, +02:00, not an hour later."""
    import time
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from importer.config import Config

    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=berlin)
    at = Config(deadline="06:30").stop_at(start, berlin)
    assert at.astimezone(timezone.utc) == datetime(2026, 3, 29, 4, 30, tzinfo=timezone.utc)
    autumn = datetime(2026, 10, 24, 23, 0, tzinfo=berlin)  # clocks go back on the 25th
    at = Config(deadline="06:30").stop_at(autumn, berlin)
    assert at.astimezone(timezone.utc) == datetime(2026, 10, 25, 5, 30, tzinfo=timezone.utc)
    # this machine's own local time, as the CLI uses it (the C library's rules)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        local = start.astimezone()  # what datetime.now().astimezone() gives: a fixed offset
        at = Config(deadline="06:30").stop_at(local)
        assert at.astimezone(timezone.utc) == datetime(2026, 3, 29, 4, 30, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_max_runtime_0_says_so_in_one_finished_sentence(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST, "--max-runtime", "0"], tmp_path, sim.env())
    assert done.returncode == 1
    assert "--max-runtime 0 left no time to send, so nothing was sent; give it more time." in (
        done.stderr
    )
    assert "--deadline" not in done.stderr
    one = cli(["validate", "t.csv"], tmp_path)
    assert "  sending 1 valid row at --qps" in one.stdout
