"""Trial runs as the README promises them (the README is a contract): --simulate demands what
the platform demands, and a check (validate, --dry-run) never overwrites a run's workbook."""

from __future__ import annotations

from helpers import clean_env, cli, read_sheet, ticket, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def test_simulate_demands_a_session_where_the_platform_does(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'method = "example.thing.save"\nneeds_session = true\n'
        '[[fields]]\nname = "thing_id"\ntype = "String"\nrequired = true\n'
    )
    (tmp_path / "t.csv").write_text("thing_id\na1\na2\n")
    args = ["run", "t.csv", "--api", "s.toml", "--simulate", *FAST]
    refused = cli(args, tmp_path, clean_env())
    assert refused.returncode == 2 and "set TOP_SESSION" in refused.stderr, refused.stderr
    assert not (tmp_path / "reports" / "journal.sqlite").exists()
    done = cli(args, tmp_path, clean_env(TOP_SESSION="sess-for-the-trial"))
    assert done.returncode == 0, done.stderr


def test_a_check_never_overwrites_a_runs_workbook(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    assert cli(["run", "t.csv", *FAST], tmp_path, sim.env()).returncode == 0
    workbook = tmp_path / "reports" / "t.result.xlsx"
    before = workbook.read_bytes()
    assert cli(["validate", "t.csv"], tmp_path).returncode == 0
    assert cli(["run", "t.csv", "--dry-run", "--no-progress"], tmp_path, sim.env()).returncode == 0
    assert workbook.read_bytes() == before
    assert [r["status"] for r in read_sheet(tmp_path / "reports" / "t.validate.xlsx")] == [
        "valid"
    ] * 3
    assert (tmp_path / "reports" / "t.dry-run.xlsx").exists()
