"""The README's shell blocks, run as written in a scratch folder against the simulator.

Each ``bash`` and ``cron`` block of README.md is run line by line through ``bash`` (the
``top-import`` console script of this environment on PATH), so the README cannot drift from
what the tool does (``docblocks``: the same machinery runs the Chinese guide's blocks, in
test_guide_zh.py). Lines that only install (``pip install``) or set credentials (``export``)
are left to the test, which gives the simulator's key and secret in the environment instead.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta

from docblocks import blocks, commands, scratch, shell
from helpers import statuses


def test_the_quick_start_runs_the_main_job_on_a_fresh_folder(tmp_path):
    quick = blocks("bash")[0]  # the Quick start is the first block
    assert len(quick) == 2
    first = commands(quick)[0]
    assert first.startswith("top-import run samples/") and "--simulate" in first
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    done = shell(first, scratch(tmp_path), env)
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / "reports" / "group_tickets.result.xlsx") == {"success": 300}


def test_the_typical_migration_works_as_written(tmp_path, simulator):
    (migration,) = [b for b in blocks("bash") if any("tickets.xlsx" in line for line in b)]
    folder = scratch(tmp_path)
    shutil.copy(folder / "samples" / "group_tickets.xlsx", folder / "tickets.xlsx")
    sim = simulator()
    for line in commands(migration):
        line = line.split("  #", 1)[0].strip()
        done = shell(line, folder, sim.env())
        assert done.returncode == 0, (line, done.stderr)
    assert statuses(folder / "reports" / "tickets.result.xlsx") == {"success": 120}
    assert (folder / "reports" / "tickets.validate.xlsx").exists()


def test_the_second_api_example_works_as_written(tmp_path):
    (robot,) = [b for b in blocks("bash") if any("robot_tenants" in line for line in b)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    for line in commands(robot):
        done = shell(line, scratch(tmp_path), env)
        assert done.returncode == 0, (line, done.stderr)


def test_the_crontab_line_works_in_a_fresh_folder(tmp_path, simulator):
    (block,) = blocks("cron")
    (entry,) = [line for line in block if line and not line.startswith("#")]
    schedule, _, command = entry.partition(" cd /srv/imports && ")
    assert schedule.split() == ["0", "2", "*", "*", "*"]
    # The window is the README's; only its end moves, so the test runs at any time of day.
    window_end = (datetime.now() + timedelta(hours=2)).strftime("%H:%M")
    command = command.replace("--deadline 06:30", f"--deadline {window_end}")
    folder = scratch(tmp_path)
    (folder / "inbox").mkdir()
    shutil.copy(folder / "samples" / "group_tickets.xlsx", folder / "inbox" / "a.xlsx")
    (folder / "importer.toml").write_text("qps = 1000\n")  # the settings live in the file
    sim = simulator()
    done = shell(command, folder, sim.env())
    assert done.returncode == 0, done.stderr
    assert (folder / "done" / "a.xlsx").exists()
    assert "a.xlsx: 120 rows: 120 success" in (folder / "reports" / "cron.log").read_text()
    assert (folder / "reports" / "last.json").exists()
