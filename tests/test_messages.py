"""Sentences that hold (the README is a contract): the end line, warnings said once, every
mistake of a spec named, counts in good grammar."""

from __future__ import annotations

from pathlib import Path

from helpers import cli, ticket, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def test_the_end_line_gives_no_rate_for_a_handful_of_calls(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert "t.csv: 1 row: 1 success; 1 call; workbook" in done.stdout, done.stdout
    assert "calls/s" not in done.stdout


def test_options_that_do_nothing_here_are_said_once(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", *FAST, "--sheet", "Sheet2", "--qps-max", "50"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    assert "warning: --sheet Sheet2 does nothing for t.csv (a CSV file)" in done.stderr
    assert "warning: --qps-max does nothing without --qps auto" in done.stderr


def test_a_field_without_a_name_does_not_hide_its_other_mistakes(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'method = "example.thing.save"\n'
        '[[fields]]\ntype = "Strin"\nrequired = "yes"\nmax_length = 0\n'
        '[[fields]]\nname = "ok_field"\ntype = "Number"\n'
    )
    done = cli(["apis", "s.toml"], tmp_path)
    assert done.returncode == 2
    for words in (
        "field #1 has no name",
        "field #1 has type 'Strin'",
        "field #1: required must be true or false",
        "field #1: max_length must be a whole number of at least 1",
    ):
        assert words in done.stderr, done.stderr


def test_messages_count_in_good_grammar():
    from importer.config import Config
    from importer.errors import UsageError
    from importer.summary import Plan, plural

    assert (plural(1, "row"), plural(2, "row"), plural(1234, "call")) == (
        "1 row",
        "2 rows",
        "1,234 calls",
    )
    assert Plan(Path("t.csv"), to_send=1, rate=9.5).line().startswith("t.csv: 1 row to send;")
    one_left = Plan(Path("t.csv"), to_send=3, daily_quota=10, used_today=9).problem()
    assert "sending 3 rows takes at least 3 calls, but only 1 of the daily quota of 10 is left" in (
        one_left or ""
    )
    try:
        Config(app_key="k").credentials()
    except UsageError as exc:
        assert "Missing app secret (TOP_APP_SECRET): set it in" in str(exc)
