"""A big workbook written by a child process while this one reads the rows (``_ForkedSink``):
the same workbook as written here, cell for cell; a full disk, a child killed, a Ctrl-C and a
parent killed each leave one sentence or nothing, and never a temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import openpyxl
import pytest
from helpers import cli, ticket, wait_for, write_csv

from importer import reporter
from importer.errors import UsageError
from importer.reporter import ReportWriter
from importer.rows import Outcome, Row, Status

HEADERS = ("case_id", "name")


def _rows(n: int):
    statuses = [Status.SUCCESS, Status.FAILED, Status.UNKNOWN, Status.INVALID, Status.NOT_SENT]
    for i in range(n):
        status = statuses[i % len(statuses)]
        numeric = frozenset({0}) if i % 7 == 0 else frozenset()  # a number cell Excel rounded
        case = "3.96743391396743E+17" if numeric else f"39674339139674{i:04d}"
        row = Row(i + 2, (case, f"名字 {i}" if i % 3 else "<r>odd</r>"), numeric)
        outcome = Outcome(status, code="15" if status is Status.FAILED else "", error=f"why {i}",
                          request_id=f"r{i}", attempts=1, elapsed_ms=i)  # fmt: skip
        yield row, outcome


def _write(path, rows: int | None, n: int = 250):
    with ReportWriter(path, HEADERS, rows=rows, text_columns=[0]) as writer:
        for row, outcome in _rows(n):
            writer.write(row, outcome)
        writer.close([("rows", n), ("app key", "k")])


def _cells(path) -> dict[str, list[tuple]]:
    book = openpyxl.load_workbook(path)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book}


@pytest.fixture
def forked(monkeypatch):
    monkeypatch.setattr(reporter, "FORKED_ROWS", 10)
    monkeypatch.setattr(reporter, "_FORKED_BATCH", 16)  # many batches of a small file


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_the_workbook_a_child_writes_is_the_one_written_here(tmp_path, forked):
    _write(tmp_path / "here.xlsx", rows=None)
    _write(tmp_path / "child.xlsx", rows=250)
    assert _cells(tmp_path / "child.xlsx") == _cells(tmp_path / "here.xlsx")
    assert _left(tmp_path) == []


def test_leaving_the_block_with_an_error_leaves_no_temporary_file_and_no_child(tmp_path, forked):
    writer = ReportWriter(tmp_path / "t.xlsx", HEADERS, rows=100)
    child = writer._sink._child
    with pytest.raises(KeyboardInterrupt), writer:
        for row, outcome in _rows(100):
            writer.write(row, outcome)
        raise KeyboardInterrupt  # a Ctrl-C mid-write
    assert not child.is_alive()
    assert _left(tmp_path) == [] and not (tmp_path / "t.xlsx").exists()


def test_a_child_killed_mid_write_is_one_sentence_and_no_temporary_file(tmp_path, forked):
    writer = ReportWriter(tmp_path / "t.xlsx", HEADERS, rows=100)
    rows = list(_rows(100))
    for row, outcome in rows[:40]:
        writer.write(row, outcome)
    os.kill(writer._sink._child.pid, signal.SIGKILL)
    writer._sink._child.join()
    with pytest.raises(UsageError, match="Cannot write the result file"):
        for row, outcome in rows[40:]:
            writer.write(row, outcome)
        writer.close([])
    assert _left(tmp_path) == [] and not (tmp_path / "t.xlsx").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_group_is_the_parents_the_child_writes_on(tmp_path, forked, sig):
    writer = ReportWriter(tmp_path / "t.xlsx", HEADERS, rows=100)
    rows = list(_rows(100))
    for row, outcome in rows[:50]:
        writer.write(row, outcome)
    # Ctrl-C, timeout's or systemd's SIGTERM, a hang-up: the whole process group gets it, and
    # the parent (which finishes the workbook on each) decides
    os.kill(writer._sink._child.pid, sig)
    for row, outcome in rows[50:]:
        writer.write(row, outcome)
    writer.close([])
    assert len(_cells(tmp_path / "t.xlsx")["results"]) == 101


def test_a_parent_killed_mid_write_leaves_the_child_to_remove_its_files(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from importer import reporter
        from importer.reporter import ReportWriter
        from importer.rows import Outcome, Row, Status
        reporter.FORKED_ROWS = 1
        writer = ReportWriter({str(tmp_path / "t.xlsx")!r}, ("a",), rows=10)
        for i in range(5000):
            writer.write(Row(i + 2, (str(i),)), Outcome(Status.SUCCESS))
        print(writer._sink._child.pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, timeout=60
    )
    child = int(done.stdout.split()[0])
    wait_for(lambda: not os.path.exists(f"/proc/{child}") or _zombie(child))
    wait_for(lambda: _left(tmp_path) == [])
    assert not (tmp_path / "t.xlsx").exists()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_under_a_big_workbook_is_the_same_sentence(tmp_path, simulator, small_disk):
    sim = simulator()
    rows = reporter.FORKED_ROWS + 2_000  # written by a child
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(rows)])
    args = ["run", "a.csv", "--qps", "10000", "--no-progress", "--out-dir", str(small_disk)]
    done = cli(args, tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert f"Cannot write the result file {small_disk}/a.result.xlsx (No space left" in done.stderr
    assert "'top-import report a.csv' writes the workbook (nothing is sent again)" in done.stderr
    assert list(small_disk.iterdir()) == []  # no temporary file, no row store
    assert sim.stats()["accepted"] == rows


def test_a_parent_gone_before_it_publishes_the_workbook_leaves_no_file(tmp_path, forked):
    writer = ReportWriter(tmp_path / "t.xlsx", HEADERS, rows=100)
    sink = writer._sink
    for row, outcome in _rows(100):
        writer.write(row, outcome)
    sink._send()
    sink._pipe.send(("finish", []))
    sink._pipe.close()  # as a parent killed -9 right after asking for the end
    sink._child.join()
    assert _left(tmp_path) == [] and not (tmp_path / "t.xlsx").exists()


def test_a_disk_full_while_zipping_is_the_sentence_alone(tmp_path, monkeypatch):
    import zipfile

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    monkeypatch.setattr(zipfile.ZipFile, "close", full)  # its finalizer would say so too
    said = []
    monkeypatch.setattr(sys, "unraisablehook", said.append)
    writer = ReportWriter(tmp_path / "t.xlsx", HEADERS)
    for row, outcome in _rows(20):
        writer.write(row, outcome)
    with pytest.raises(UsageError, match="No space left on device"):
        writer.close([])
    import gc

    gc.collect()
    assert said == []  # no "Exception ignored in: ZipFile.__del__"
    assert _left(tmp_path) == []
