"""A disk that fills up while the workbook is written: exit 1, one sentence naming
`top-import report INPUT`, no temporary file left, the next input still runs, the summary
written; then `report` writes the workbook once there is room. A real full disk: a small tmpfs
(root only; skipped where mounting is not allowed)."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
from helpers import cli, read_sheet, ticket, write_csv


@contextlib.contextmanager
def small_tmpfs(folder, size: str):
    """A real disk of ``size`` mounted at ``folder`` for the block (skipped where mounting is
    not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", "96k") as folder:
        yield folder


@pytest.fixture
def journal_disk(tmp_path):
    """Room for the private copy of 3,000 rows and part of their journal."""
    with small_tmpfs(tmp_path / "jdisk", "640k") as folder:
        yield folder


def test_a_full_disk_while_the_workbook_is_written(tmp_path, simulator, small_disk):
    sim = simulator()
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(3000)])
    write_csv(tmp_path / "b.csv", [ticket(i) for i in range(3000, 3010)])
    args = ["run", "a.csv", "b.csv", "--qps", "5000", "--out-dir", str(small_disk)]
    done = cli([*args, "--summary-json", "s.json"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert f"Cannot write the result file {small_disk}/a.result.xlsx (No space left" in done.stderr
    assert "'top-import report a.csv' writes the workbook (nothing is sent again)" in done.stderr
    assert "a.csv: 3,000 rows: 3000 success; 3,000 calls" in done.stdout
    assert "; no workbook" in done.stdout
    # the next input still ran (its small workbook fits)
    assert f"calls/s; workbook {small_disk}/b.result.xlsx" in done.stdout
    assert sorted(p.name for p in small_disk.iterdir()) == ["b.result.xlsx"]  # no temp left
    files = json.loads((tmp_path / "s.json").read_text())["files"]
    assert [f["workbook"] for f in files] == [None, f"{small_disk}/b.result.xlsx"]
    assert sim.stats()["accepted"] == 3010

    (small_disk / "b.result.xlsx").unlink()
    report = cli(["report", "a.csv", "--out-dir", "reports"], tmp_path, sim.env())
    assert report.returncode == 0, report.stderr
    rows = read_sheet(tmp_path / "reports" / "a.result.xlsx")
    assert len(rows) == 3000 and {r["status"] for r in rows} == {"success"}
    assert sim.stats()["accepted"] == 3010  # nothing sent again


def test_a_full_disk_under_the_journal_stops_with_one_sentence_and_never_twice(
    tmp_path, simulator, journal_disk
):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3000)])
    journal = journal_disk / "j.sqlite"
    args = ["run", "t.csv", "--qps", "5000", "--journal", str(journal)]
    done = cli([*args, "--summary-json", "s.json"], tmp_path, sim.env())
    assert done.returncode == 2, done.stderr
    assert f"Journal {journal}: the disk is full" in done.stderr
    assert "rows in flight are unknown" in done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["exit_code"] == 2
    sent = sim.stats()["accepted"]
    assert 0 < sent < 3000
    # Moved to a disk with room, the journal resumes: nothing accepted twice.
    roomy = tmp_path / "j.sqlite"
    for side in ("", "-wal", "-shm"):
        source = journal_disk / f"j.sqlite{side}"
        if source.exists():
            (tmp_path / f"j.sqlite{side}").write_bytes(source.read_bytes())
    again = cli(["run", "t.csv", "--qps", "5000", "--journal", str(roomy)], tmp_path, sim.env())
    assert again.returncode in (0, 1), again.stderr  # 1: rows in flight at the stop, unknown
    stats = sim.stats()
    assert stats["duplicate_accepts"] == 0
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}}
    assert len(rows) == 3000 and set(counts) <= {"success", "skipped", "unknown"}
    done_rows = counts.get("success", 0) + counts.get("skipped", 0)
    # every row the journal says is done was accepted once; an unknown one maybe
    assert done_rows <= stats["accepted_payloads"] <= done_rows + counts.get("unknown", 0)
