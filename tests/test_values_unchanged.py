"""Values never changed on the way (the README is a contract): a number cell read as it was
typed, and a CSV report or a failed sheet fed back sends exactly the original rows."""

from __future__ import annotations

import json

from helpers import cli, read_sheet, statuses, ticket, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def test_number_cells_in_the_2_53_band_pass_only_where_exact(tmp_path):
    from openpyxl import Workbook

    band = [9007199254740991, 9007199254740992, 9007199254740994, 9007199254740996]
    book = Workbook()
    sheet = book.active
    sheet.append(list(ticket(0)))
    for i, tenant in enumerate(band):
        row = list(ticket(i).values())
        row[3] = float(tenant)  # a number cell, as Excel stores it
        sheet.append(row)
    book.save(tmp_path / "t.xlsx")
    done = cli(["validate", "t.xlsx"], tmp_path)
    assert done.returncode == 1, done.stderr
    report = tmp_path / "reports" / "t.validate.xlsx"
    if not report.exists():
        report = tmp_path / "reports" / "t.result.xlsx"
    statuses = [r["status"] for r in read_sheet(report)]
    assert statuses == ["valid", "valid", "invalid", "invalid"]


def test_a_csv_report_fed_back_sends_exactly_the_original_payloads(tmp_path, simulator):
    sim = simulator()
    rows = [ticket(i) for i in range(4)]
    rows[0]["user_identify"] = "=1+1"  # written as '=1+1 in the CSV report
    rows[1]["user_identify"] = "'quoted"  # a real leading quote survives the round trip
    rows[2]["user_identify"] = "-dash"
    rows[3]["user_identify"] = "@at\tx"
    write_csv(tmp_path / "t.csv", rows)
    first = cli(["run", "t.csv", *FAST, "--out", "r.csv"], tmp_path, sim.env())
    assert first.returncode == 0, first.stderr
    text = (tmp_path / "r.csv").read_text(encoding="utf-8-sig")
    assert "'=1+1" in text and "''quoted" in text
    accepted = sim.accepted()
    again = cli(["run", "r.csv", *FAST], tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    assert statuses(tmp_path / "reports" / "r.result.xlsx") == {"skipped": 4}
    assert sim.accepted() == accepted  # not one new payload: no value changed on the way
    sent = {json.loads(p)["user_identify"] for p in accepted}
    assert sent == {"=1+1", "'quoted", "-dash", "@at\tx"}


def test_a_failed_sheet_fed_back_keeps_the_original_rows_and_name(tmp_path, simulator):
    bad = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i, tenant=999 if i in (1, 4) else 200110004) for i in range(6)]
    write_csv(tmp_path / "t.csv", rows)
    first = cli(["run", "t.csv", *FAST, "--max-failure-rate", "1"], tmp_path, bad.env())
    assert first.returncode == 1, first.stderr
    failed = read_sheet(tmp_path / "reports" / "t.result.xlsx", "failed")
    assert [r["source_row"] for r in failed] == [3, 6]

    good = simulator(app_key=bad.settings.app_key)
    args = ["run", "reports/t.result.xlsx", "--sheet", "failed", *FAST]
    again = cli(args, tmp_path, good.env())
    assert again.returncode == 0, again.stderr
    report = tmp_path / "reports" / "t-2.result.xlsx"
    assert [(r["source_row"], r["status"]) for r in read_sheet(report)] == [
        (3, "success"),
        (6, "success"),
    ]
    assert not (tmp_path / "reports" / "t.result.result.xlsx").exists()
    assert good.stats()["accepted"] == 2
