"""The Chinese user guide (docs/zh/使用指南.md), run as written, as the README's blocks are
(``docblocks``): its Quick start, its migration loop with the Excel edits made in between (a
person fixing the 失败 sheet, deciding the 待核对 sheet), its cron recipe with a robot, and its
Python block. The checks read the workbooks and the --summary-json, not the printed lines,
whose Chinese is still being written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

from docblocks import GUIDE_ZH, README, ROOT, blocks, commands, scratch, shell
from helpers import read_sheet, serving

RESULTS, FAILED, CHECK, STATUS, DECISION = "结果", "失败", "待核对", "状态", "处理决定"


def zh_statuses(path: Path, sheet: str = RESULTS) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_sheet(path, sheet):
        counts[str(row[STATUS])] = counts.get(str(row[STATUS]), 0) + 1
    return counts


def no_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}


def test_the_readme_links_the_guide_on_its_first_screen_and_the_guide_links_resolve():
    first_screen = README.read_text(encoding="utf-8").splitlines()[:15]
    assert "中文使用指南：[docs/zh/使用指南.md](docs/zh/使用指南.md)" in first_screen
    text = GUIDE_ZH.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)\)", text)
    assert {"../zh-summary.png", "../zh-failed.png", "../../README.md"} <= set(targets)
    for target in targets:
        assert (GUIDE_ZH.parent / target).is_file(), target


def test_the_quick_start_is_the_readmes_in_chinese_and_runs_on_a_fresh_folder(tmp_path):
    (guide_quick, *_) = blocks("bash", GUIDE_ZH)
    (readme_quick, *_) = blocks("bash", README)
    first, tests = commands(guide_quick)
    assert first == f"{commands(readme_quick)[0]} --lang zh"
    assert tests == commands(readme_quick)[1]
    done = shell(first, scratch(tmp_path), no_credentials())
    assert done.returncode == 0, done.stderr
    assert zh_statuses(tmp_path / "reports" / "group_tickets.result.xlsx") == {"success": 300}


def fix_the_failed_sheet(workbook: Path) -> int:
    """What a person does in Excel: each row of the 失败 sheet corrected as its 错误原因 says,
    the workbook saved; returns the rows fixed."""
    from openpyxl import load_workbook

    book = load_workbook(workbook)
    sheet = book[FAILED]
    header = [c.value for c in sheet[1]]
    for row in range(2, sheet.max_row + 1):

        def cell(name: str, row: int = row):
            return sheet.cell(row, header.index(name) + 1)

        if not cell("user_identify").value:
            cell("user_identify").value = f"wegdtJRNVp51PWHMWqdwFix{row:04d}"
        if not str(cell("tenant_id").value).isdigit():
            cell("tenant_id").value = "200110004"
        case_id = str(cell("case_id").value)
        if not case_id.isdigit() or case_id.endswith("000"):  # rounded by Excel: typed whole
            cell("case_id").value = str(396743391396700000 + row)
    book.save(workbook)
    return sheet.max_row - 1


def decide_the_check_sheet(workbook: Path) -> dict[str, int]:
    """What a person does after looking the rows up on the platform: 已完成 or 重发 in the
    处理决定 column of each 待核对 row, alternately; returns how many of each."""
    from openpyxl import load_workbook

    book = load_workbook(workbook)
    sheet = book[CHECK]
    column = [c.value for c in sheet[1]].index(DECISION) + 1
    decided = {"已完成": 0, "重发": 0}
    for row in range(2, sheet.max_row + 1):
        word = "已完成" if row % 2 else "重发"
        sheet.cell(row, column).value = word
        decided[word] += 1
    book.save(workbook)
    return decided


def test_the_migration_loop_works_as_written(tmp_path, simulator):
    (migration,) = [b for b in blocks("bash", GUIDE_ZH) if any("tickets.xlsx" in x for x in b)]
    lines = [line.split("  #", 1)[0].strip() for line in commands(migration)]
    validate, send, failed, check = lines  # the loop of the guide, in its order
    assert validate.startswith("top-import validate tickets.xlsx")
    assert send.startswith("top-import run tickets.xlsx")
    assert "--sheet failed" in failed and "--sheet check" in check
    assert all("--lang zh" in line for line in lines)
    folder = scratch(tmp_path)
    # 7 invalid rows, a duplicate, 6 valid: the 失败 sheet has rows to fix
    shutil.copy(folder / "samples" / "with_errors.xlsx", folder / "tickets.xlsx")
    # The first send meets a platform that loses every answer (the valid rows end unknown,
    # for the 待核对 sheet); the rounds after it a sound one. Both take the same credentials.
    lossy, sound = simulator(lost_response_rate=1.0), simulator()
    workbook = folder / "reports" / "tickets.result.xlsx"

    done = shell(validate, folder, sound.env())
    assert done.returncode == 1, done.stderr  # invalid rows
    assert (folder / "reports" / "tickets.validate.xlsx").exists()

    done = shell(send, folder, lossy.env())
    assert done.returncode == 1, done.stderr
    assert zh_statuses(workbook) == {"unknown": 6, "invalid": 7, "duplicate": 1}

    assert fix_the_failed_sheet(workbook) == 7
    done = shell(failed, folder, sound.env())
    assert done.returncode == 0, done.stderr
    assert zh_statuses(folder / "reports" / "tickets-2.result.xlsx") == {"success": 7}

    assert decide_the_check_sheet(workbook) == {"已完成": 3, "重发": 3}
    done = shell(check, folder, sound.env())
    assert done.returncode == 0, done.stderr
    assert zh_statuses(folder / "reports" / "tickets-3.result.xlsx") == {"success": 6}

    # the lossy platform took the 6 whose answers it lost; the sound one the 7 fixed rows and
    # the 3 marked 重发, each once (the simulator did have those 3: the person's word is what
    # the tool follows); the 3 marked 已完成 were not sent again
    assert lossy.stats()["accepted_payloads"] == 6
    assert sound.stats()["accepted_payloads"] == 10
    assert sound.stats()["duplicate_accepts"] == 0
    assert len(set(lossy.accepted()) & set(sound.accepted())) == 3


class _Robot(BaseHTTPRequestHandler):
    """A DingTalk robot on 127.0.0.1: keeps what it was sent, answers ok."""

    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Robot.received.append(json.loads(self.rfile.read(length)))
        answer = b'{"errcode": 0, "errmsg": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_the_cron_recipe_with_a_robot_works_in_a_fresh_folder(tmp_path, simulator):
    (block,) = blocks("cron", GUIDE_ZH)
    (entry,) = [line for line in block if line and not line.startswith("#")]
    schedule, _, command = entry.partition(" cd /srv/imports && ")
    assert schedule.split() == ["0", "2", "*", "*", "*"]
    (settings,) = [b for b in blocks("toml", GUIDE_ZH) if any("notify" in x for x in b)]
    # The window is the guide's; only its end moves, so the test runs at any time of day.
    window_end = (datetime.now() + timedelta(hours=2)).strftime("%H:%M")
    command = command.replace("--deadline 06:30", f"--deadline {window_end}")
    folder = scratch(tmp_path)
    (folder / "inbox").mkdir()
    shutil.copy(folder / "samples" / "group_tickets.xlsx", folder / "inbox" / "a.xlsx")
    shutil.copy(folder / "samples" / "with_errors.xlsx", folder / "inbox" / "b.xlsx")
    sim = simulator()
    _Robot.received = []
    with serving(_Robot, "/robot/send?access_token=t0ken") as robot:
        # the guide's importer.toml, its robot here (loopback http: a DingTalk robot by the
        # format, not the host) and the simulator's credentials in the environment
        text = "\n".join(settings).replace(
            "https://oapi.dingtalk.com/robot/send?access_token=...", robot
        )
        config = folder / "importer.toml"
        config.write_text(f'{text}\nnotify_format = "dingtalk"\nqps = 1000\n', encoding="utf-8")
        config.chmod(0o600)  # as the guide says
        done = shell(command, folder, sim.env())
    assert done.returncode == 1, done.stderr  # b.xlsx has invalid rows: the worst of the two
    assert (folder / "done" / "a.xlsx").exists() and not (folder / "inbox" / "a.xlsx").exists()
    assert (folder / "inbox" / "b.xlsx").exists()  # not exit 0: stays for the next night
    assert zh_statuses(folder / "reports" / "a.result.xlsx") == {"success": 120}  # lang = "zh"
    summary = json.loads((folder / "reports" / "last.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 1
    assert [f["counts"].get("success") for f in summary["files"]] == [120, 6]
    (message,) = _Robot.received  # notify_on = "failure": this night failed
    assert message["msgtype"] == "markdown"
    log = (folder / "reports" / "cron.log").read_text(encoding="utf-8")
    assert "chmod 600" not in log and "Traceback" not in log


def test_the_python_block_runs_as_written(tmp_path):
    (block,) = blocks("python", GUIDE_ZH)
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(block)],
        cwd=scratch(tmp_path),
        env=no_credentials(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # what the block's comments say it prints
    assert done.stdout.splitlines() == [
        "0",
        "{'success': 300}",
        "reports/group_tickets.result.xlsx",
    ]
    assert zh_statuses(tmp_path / "reports" / "group_tickets.result.xlsx") == {"success": 300}


def test_the_guide_shows_only_options_the_tool_has():
    from click.testing import CliRunner

    from importer.cli import cli

    text = GUIDE_ZH.read_text(encoding="utf-8")
    helps = "".join(
        CliRunner().invoke(cli, [command, "--help"]).output
        for command in ("run", "validate", "report", "simulate", "apis")
    )
    for option in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))):
        assert option in helps, option
    assert ROOT.joinpath("samples", "with_errors.xlsx").is_file()
