"""Progress of every long pass: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

from helpers import FakeClock, cli, ticket, write_csv

from importer.progress import CHECK_EVERY, LOG_EVERY_S, Progress
from importer.rows import Status


def test_without_a_terminal_a_pass_logs_a_line_every_few_seconds(capsys):
    clock = FakeClock()
    progress = Progress(False, "t.csv: pre-flight", total=10_000, clock=clock)
    for _ in range(3):
        for _ in range(CHECK_EVERY):
            progress.advance()
        clock.t += LOG_EVERY_S / 2  # the clock is looked at every CHECK_EVERY rows
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["top-import: t.csv: pre-flight: 3,072 rows, 614 rows/s"]  # at 5 s


def test_the_send_pass_counts_statuses_as_it_goes(capsys):
    clock = FakeClock()
    progress = Progress(False, "t.csv: sending", clock=clock)
    progress.update(Status.SUCCESS)
    clock.t += LOG_EVERY_S
    progress.update(Status.FAILED)
    assert capsys.readouterr().err == (
        "top-import: t.csv: sending: 2 rows settled (1 failed, 1 success), 0.4 rows/s\n"
    )


def test_every_command_that_reads_rows_shows_progress_on_every_pass(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    checked = cli(["validate", "t.csv", "--progress"], tmp_path, sim.env())
    assert "t.csv: checking: 100%" in checked.stderr
    ran = cli(["run", "t.csv", "--progress", "--qps", "1000", "--canary", "0"], tmp_path, sim.env())
    assert ran.returncode == 0, ran.stderr
    for phase in ("pre-flight", "sending", "writing the workbook"):
        assert f"t.csv: {phase}: 100%" in ran.stderr
    quiet = cli(["validate", "t.csv", "--no-progress"], tmp_path, sim.env())
    assert "%|" not in quiet.stderr


def test_quiet_says_nothing_at_all(capsys):
    clock = FakeClock()
    progress = Progress(False, "t.csv: checking", clock=clock, quiet=True)
    for _ in range(3 * CHECK_EVERY):
        progress.advance()
        clock.t += 1
    progress.update(Status.SUCCESS)
    progress.close()
    assert capsys.readouterr().err == ""


def test_the_python_api_prints_nothing_unless_progress_is_asked_for(tmp_path, monkeypatch, capfd):
    import importer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("importer.progress.LOG_EVERY_S", 0.0)  # a log line at every look
    rows = [ticket(i) for i in range(2 * CHECK_EVERY)]
    importer.validate(rows, out=False)
    assert capfd.readouterr().err == ""
    importer.validate(rows, out=False, progress=True)
    assert "rows: checking: 2048row" in capfd.readouterr().err
