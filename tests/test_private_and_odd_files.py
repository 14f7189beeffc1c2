"""Files that hold users' rows are not left readable by others: the private copy, the journal,
the result workbook (no more open than the input); an input that is not a regular file is
refused before anything opens it."""

from __future__ import annotations

import os
import stat

from helpers import cli, killed_9_when, ticket, write_csv


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_private_input_gives_private_files_and_a_shared_one_a_shared_workbook(
    tmp_path, simulator
):
    sim = simulator()
    old = os.umask(0o022)
    try:
        secret = write_csv(tmp_path / "secret.csv", [ticket(i) for i in range(3)])
        secret.chmod(0o600)
        shared = write_csv(tmp_path / "shared.csv", [ticket(i) for i in range(3, 6)])
        shared.chmod(0o644)
        for name in ("secret.csv", "shared.csv"):
            done = cli(["run", name, "--out-dir", "reports"], tmp_path, sim.env())
            assert done.returncode == 0, done.stderr
    finally:
        os.umask(old)
    reports = tmp_path / "reports"
    assert mode(reports / "secret.result.xlsx") == 0o600
    assert mode(reports / "shared.result.xlsx") == 0o644  # as the umask makes it
    assert mode(reports / "journal.sqlite") == 0o600
    assert mode(reports / ".top-import-snapshots") == 0o700
    for side in ("journal.sqlite-wal", "journal.sqlite-shm", "journal.sqlite.lock"):
        if (reports / side).exists():
            assert mode(reports / side) == 0o600, side


def test_a_journal_left_readable_by_an_earlier_version_is_made_private(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    assert cli(["run", "t.csv"], tmp_path, sim.env()).returncode == 0
    journal = tmp_path / "reports" / "journal.sqlite"
    journal.chmod(0o644)
    (tmp_path / "reports" / ".top-import-snapshots").chmod(0o755)
    write_csv(tmp_path / "u.csv", [ticket(1)])
    assert cli(["run", "u.csv"], tmp_path, sim.env()).returncode == 0
    assert mode(journal) == 0o600
    assert mode(tmp_path / "reports" / ".top-import-snapshots") == 0o700


def test_a_killed_runs_private_copy_is_0600_and_removed_by_the_next_run(tmp_path, simulator):
    sim = simulator(latency_ms=3000)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    (tmp_path / "t.csv").chmod(0o644)
    killed_9_when(["run", "t.csv"], tmp_path, sim.env(), lambda: sim.stats()["accepted"] >= 1)
    folder = tmp_path / "reports" / ".top-import-snapshots"
    copies = list(folder.iterdir())
    assert len(copies) == 1 and mode(copies[0]) == 0o600 and mode(folder) == 0o700
    write_csv(tmp_path / "other.csv", [ticket(9)])  # another input on the same journal folder
    assert cli(["run", "other.csv"], tmp_path, sim.env()).returncode == 0
    assert list(folder.iterdir()) == []


def test_a_fifo_or_a_link_to_a_device_is_refused_before_it_is_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    for name in ("pipe.csv", "zero.csv"):
        done = cli(["validate", name], tmp_path, timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"{name} is not a regular file (a pipe, a device or a socket)" in done.stderr
    write_csv(tmp_path / "good.csv", [ticket(0)])
    done = cli(["validate", "*.csv"], tmp_path, timeout=30)  # a cron glob: the rest still go
    assert done.returncode == 0, done.stderr
    assert "*.csv: skipped 2 entries that are not a regular file" in done.stdout
    assert "good.csv: 1 row: 1 valid" in done.stdout
