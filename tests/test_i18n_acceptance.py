"""The Chinese issue's acceptance, as a Chinese operations user meets it: a run of a file with
invalid, duplicate, declined and unknown rows in Chinese (by ``--lang zh`` or by the locale
alone), every line and every row error in Chinese, the failed sheet fixed and fed back with
``--sheet failed`` sending exactly the fixed rows (on the simulator's count), and ``LANG=C``
in English."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openpyxl
import pytest
from helpers import cli, read_sheet, ticket, write_csv

CJK = re.compile("[\u4e00-\u9fff]")
# one connection, no retry: the lost answers (seeded) stay unknown, one call a row
SLOW = ["--qps", "200", "--concurrency", "1", "--retries", "0", "--no-progress"]


def _input(tmp_path: Path) -> Path:
    rows = [ticket(i) for i in range(12)]
    rows[1]["user_identify"] = ""  # invalid: a required field empty
    rows[2]["case_id"] = "3.96743E+17"  # invalid: Excel's scientific notation
    rows[3] = dict(rows[0])  # a duplicate of the first row
    rows[4]["tenant_id"] = "999"  # declined by the platform (the simulator's bad tenant)
    return write_csv(tmp_path / "工单.csv", rows)


def _chinese_run(tmp_path, simulator, how):
    sim = simulator(lost_response_rate=0.5, seed=3, bad_tenants=frozenset({999}))
    _input(tmp_path)
    if how == "--lang":
        args, env = ["--lang", "zh"], sim.env(LANG="C", LC_ALL="", LANGUAGE="")
    else:
        args, env = [], sim.env(LANG="zh_CN.UTF-8", LC_ALL="", LANGUAGE="")
    done = cli(["run", "工单.csv", *SLOW, *args, "--summary-json", "s.json"], tmp_path, env)
    return sim, env, done


@pytest.mark.parametrize("how", ["--lang", "LANG"])
def test_a_chinese_run_speaks_chinese_on_every_line_and_in_every_row_error(
    tmp_path, simulator, how
):
    _sim, _env, done = _chinese_run(tmp_path, simulator, how)
    assert done.returncode == 1, done.stderr  # the exit code of rows to fix, as in English
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(CJK.search(line) for line in lines), done.stderr
    result = tmp_path / "reports" / "工单.result.xlsx"
    book = openpyxl.load_workbook(result)
    assert book.sheetnames == ["结果", "失败", "待核对", "汇总"]
    rows = read_sheet(result, "结果")
    statuses = {r["状态"] for r in rows}
    assert {"success", "invalid", "duplicate", "failed", "unknown"} <= statuses, statuses
    errors = [r["错误原因"] for r in rows if r["错误原因"]]
    assert len(errors) >= 5 and all(CJK.search(str(e)) for e in errors), errors
    # the dashboard: every title and label a person reads, Chinese
    summary = book["汇总"]
    assert CJK.search(summary["A1"].value) and CJK.search(summary["A2"].value)
    shown = [c.value for c in summary["A"] if isinstance(c.value, str)]
    assert "成功 (success)" in shown and "各状态行数" in shown
    # the machine contract stays: the JSON's keys and status words are the English ones
    document = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    counts = document["files"][0]["counts"]
    assert set(counts) <= {"success", "invalid", "duplicate", "failed", "unknown"}
    assert "required but empty" in " ".join(document["files"][0]["invalid_reasons"])


def test_the_chinese_failed_sheet_fixed_and_fed_back_sends_exactly_the_fixed_rows(
    tmp_path, simulator
):
    sim, env, done = _chinese_run(tmp_path, simulator, "--lang")
    assert done.returncode == 1, done.stderr
    result = tmp_path / "reports" / "工单.result.xlsx"
    before = sim.stats()
    # what a person does in Excel: the failed sheet's three rows put right, saved as a new file
    book = openpyxl.load_workbook(result)
    failed = book["失败"]
    header = [c.value for c in failed[1]]
    assert len(list(failed.iter_rows(min_row=2))) == 3  # two invalid, one declined
    for row in failed.iter_rows(min_row=2):
        cells = dict(zip(header, row, strict=True))
        if not cells["user_identify"].value:
            cells["user_identify"].value = "wegdtJRNVp51PWHMWqdw-fixed"
        if "E+" in str(cells["case_id"].value):
            cells["case_id"].value = "396743391396743393"
        if cells["tenant_id"].value == "999":
            cells["tenant_id"].value = "200110004"
    book.save(tmp_path / "修好了.xlsx")

    again = cli(["run", "修好了.xlsx", "--sheet", "failed", "--lang", "zh", *SLOW], tmp_path, env)
    assert again.returncode in (0, 1), again.stderr  # 1 when an answer got lost again
    after = sim.stats()
    assert after["calls"] - before["calls"] == 3  # exactly the fixed rows, each once
    assert after["duplicate_accepts"] == 0
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert all(CJK.search(line) for line in lines), again.stderr


def test_lang_c_is_english(tmp_path, simulator):
    sim = simulator(lost_response_rate=0.5, seed=3, bad_tenants=frozenset({999}))
    _input(tmp_path)
    env = sim.env(LANG="C", LC_ALL="", LANGUAGE="")
    done = cli(["run", "工单.csv", *SLOW], tmp_path, env)
    assert done.returncode == 1, done.stderr
    # no Chinese but the file's name
    assert not CJK.search(done.stderr.replace("工单", "")), done.stderr
    result = tmp_path / "reports" / "工单.result.xlsx"
    assert openpyxl.load_workbook(result).sheetnames == ["results", "failed", "check", "summary"]
    errors = [str(r["error"]) for r in read_sheet(result) if r["error"]]
    assert errors and not any(CJK.search(e) for e in errors if "非法参数" not in e)
