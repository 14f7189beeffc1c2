"""Inputs made to trip the reader: two encodings in one file, control characters far down."""

from __future__ import annotations

import json

from helpers import HEADERS, cli, read_sheet, ticket

CHINESE = "钉钉群访客"


def rows_bytes(rows: list[dict[str, str]], encoding: str) -> bytes:
    return b"".join((",".join(r[h] for h in HEADERS) + "\r\n").encode(encoding) for r in rows)


def chinese_ticket(i: int) -> dict[str, str]:
    row = ticket(i)
    row["user_identify"] = f"{CHINESE}{i:07d}"
    return row


def test_a_file_utf8_then_gbk_is_refused_before_anything_is_sent(tmp_path, simulator):
    sim = simulator()
    header = (",".join(HEADERS) + "\r\n").encode()
    head = rows_bytes([chinese_ticket(i) for i in range(800)], "utf-8")  # past 64 KiB
    assert len(header + head) > 64 * 1024
    tail = rows_bytes([chinese_ticket(i) for i in range(800, 810)], "gbk")
    (tmp_path / "t.csv").write_bytes(header + head + tail)
    done = cli(["run", "t.csv"], tmp_path, sim.env())
    assert done.returncode == 2, done.stderr
    assert "t.csv is not one encoding throughout: it starts as UTF-8 but line 802" in done.stderr
    assert sim.stats()["calls"] == 0


def test_ascii_first_then_gbk_is_read_as_gb18030_and_sent_right(tmp_path, simulator):
    sim = simulator()
    header = (",".join(HEADERS) + "\r\n").encode()
    head = rows_bytes([ticket(i) for i in range(900)], "ascii")
    tail = rows_bytes([chinese_ticket(i) for i in range(900, 903)], "gbk")
    (tmp_path / "t.csv").write_bytes(header + head + tail)
    done = cli(["run", "t.csv", "--qps", "5000"], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    sent = [json.loads(p)["user_identify"] for p in sim.accepted()]
    assert f"{CHINESE}0000900" in sent and not any("閽" in s for s in sent)


def test_a_control_character_far_down_the_file_is_an_invalid_row_never_sent(tmp_path, simulator):
    sim = simulator()
    rows = [ticket(i) for i in range(1000)]
    rows[990]["user_identify"] = "us\x00er"  # past the 64 KiB sample
    rows[995]["corp_id"] += "\x1b"
    header = (",".join(HEADERS) + "\r\n").encode()
    (tmp_path / "t.csv").write_bytes(header + rows_bytes(rows, "utf-8"))
    done = cli(["run", "t.csv", "--qps", "5000"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    report = {r["source_row"]: r for r in read_sheet(tmp_path / "reports" / "t.result.xlsx")}
    assert report[992]["status"] == "invalid" and report[997]["status"] == "invalid"
    assert (
        "user_identify holds the control character U+0000 at character 3" in (report[992]["error"])
    )
    assert "2 rows invalid" not in done.stdout  # two reasons, one row each
    assert "1 row invalid: user_identify holds a control character (e.g. row 992)" in done.stdout
    assert sim.stats()["accepted"] == 998
    assert not any("\x00" in p or "\x1b" in p for p in sim.accepted())


def test_a_stray_cell_far_away_is_refused_before_calamine_lays_it_out(tmp_path):
    """One cell at XFD100000 of a 5 KB workbook: calamine would ask for 52 GB and abort the
    process (SIGABRT, exit 134); it is an input error instead, and the next input still runs."""
    import openpyxl
    from helpers import write_csv

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "工单 & <1>"  # a name that is escaped in workbook.xml
    sheet.append(HEADERS)
    sheet.append(list(ticket(0).values()))
    sheet["XFD100000"] = "x"
    book.save(tmp_path / "a.xlsx")
    write_csv(tmp_path / "b.csv", [ticket(1)])
    done = cli(["validate", "a.xlsx", "b.csv"], tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "a.xlsx sheet '工单 & <1>' has a used range of A1:XFD100000 (1,638,400,000 cells" in (
        done.stderr
    )
    assert "Ctrl+End" in done.stderr
    assert "b.csv: 1 row: 1 valid" in done.stdout


def test_an_xls_whose_dimensions_record_lies_is_refused_before_calamine_opens_it(tmp_path):
    """calamine lays out every sheet of an .xls as it opens it, from the range the sheet's
    DIMENSIONS record states: a record claiming the whole grid aborts the process (SIGABRT)."""
    import struct
    from pathlib import Path

    from helpers import write_csv

    data = (Path(__file__).parent / "fixtures" / "old.xls").read_bytes()
    at = data.index(b"\x00\x02\x0e\x00") + 4  # the BIFF8 DIMENSIONS record's body
    lie = struct.pack("<IIHHH", 0, 1 << 20, 0, 1 << 14, 0)  # 1,048,576 rows by 16,384 columns
    (tmp_path / "a.xls").write_bytes(data[:at] + lie + data[at + len(lie) :])
    write_csv(tmp_path / "b.csv", [ticket(1)])
    done = cli(["validate", "a.xls", "b.csv"], tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert (
        "a.xls sheet 'data' says its used range is 1,048,576 rows by 16,384 columns "
        "(17,179,869,184 cells, more than the 50,000,000 a run reads)"
    ) in done.stderr
    assert "b.csv: 1 row: 1 valid" in done.stdout
    (tmp_path / "ok.xls").write_bytes(data)  # the honest workbook still reads
    honest = cli(["validate", "ok.xls"], tmp_path, timeout=60)
    assert honest.returncode == 0, honest.stderr
    assert "ok.xls: 1 row: 1 valid" in honest.stdout
