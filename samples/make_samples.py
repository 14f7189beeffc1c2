"""Write the sample inputs next to this script; seeded, so every run writes the same rows.

    python samples/make_samples.py

- ``group_tickets.csv``: 300 valid rows (UTF-8) for alibaba.lyservice.group.ticket.customer.save.
- ``group_tickets.xlsx``: 120 valid rows, IDs stored as text cells (as they should be).
- ``with_errors.xlsx``: one row per kind of invalid row, plus valid ones; the ``note`` column
  (an unknown column: echoed in the report, never sent) says what each row shows.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import string
from pathlib import Path

import xlsxwriter

HERE = Path(__file__).resolve().parent
HEADERS = ("corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id")
BASE62 = string.ascii_letters + string.digits
TENANTS = (200110004, 200110005, 200110017, 200120033)
# 396743391396743391 typed into a General cell: Excel keeps 15 significant digits.
EXCEL_ROUNDED_ID = 396743391396743000
FIXED_TIME = dt.datetime(2024, 1, 1)  # workbook metadata, so the files are byte-for-byte stable


def ticket_rows(rnd: random.Random, n: int) -> list[tuple[str, str, str, int, str]]:
    """``n`` rows in the shape of the reference example, all with distinct payloads."""
    rows = []
    case_ids = rnd.sample(range(10**17, 10**18), n)
    for case_id in case_ids:
        rows.append(
            (
                f"ding{rnd.getrandbits(128):032x}",
                "".join(rnd.choices(BASE62, k=27)),
                str(case_id),
                rnd.choice(TENANTS),
                "cid" + "".join(rnd.choices(BASE62 + "+/", k=22)) + "==",
            )
        )
    return rows


def write_csv(path: Path, rows: list[tuple[str, str, str, int, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADERS)
        writer.writerows(rows)


def new_book(path: Path) -> xlsxwriter.Workbook:
    book = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False})
    book.set_properties({"created": FIXED_TIME, "author": "top-import samples"})
    return book


def write_xlsx(path: Path, rows: list[tuple[str, str, str, int, str]]) -> None:
    book = new_book(path)
    text = book.add_format({"num_format": "@"})
    sheet = book.add_worksheet("tickets")
    sheet.set_column(0, 4, 24, text)
    sheet.write_row(0, 0, HEADERS)
    for r, (corp, user, case, tenant, conv) in enumerate(rows, start=1):
        sheet.write_string(r, 0, corp)
        sheet.write_string(r, 1, user)
        sheet.write_string(r, 2, case, text)  # an 18-digit ID must be a text cell
        sheet.write_number(r, 3, tenant)
        sheet.write_string(r, 4, conv)
    book.close()


def write_with_errors(path: Path, rows: list[tuple[str, str, str, int, str]]) -> None:
    """Cells are (value, kind): "s" a text cell, "n" a number cell, None an empty cell."""
    (c1, u1, k1, t1, o1), (c2, _, k2, t2, o2), *more = rows
    table: list[tuple[str, list[tuple[object, str | None]]]] = [
        ("valid", [(c1, "s"), (u1, "s"), (k1, "s"), (t1, "n"), (o1, "s")]),
        (
            "invalid: user_identify is empty",
            [(c2, "s"), ("", None), (k2, "s"), (t2, "n"), (o2, "s")],
        ),
    ]
    bad_tenants = ("abc", "2.5", "1e3", "1e30")
    for value, (c, u, k, _, o) in zip(bad_tenants, more, strict=False):
        table.append(
            (
                f"invalid: tenant_id {value!r}",
                [(c, "s"), (u, "s"), (k, "s"), (value, "s"), (o, "s")],
            )
        )
    c, u, _, t, o = more[4]
    table.append(
        (
            "invalid: case_id typed as a number, Excel kept 15 digits",
            [(c, "s"), (u, "s"), (EXCEL_ROUNDED_ID, "n"), (t, "n"), (o, "s")],
        )
    )
    c, u, _, t, o = more[5]
    table.append(
        (
            "invalid: case_id in scientific notation",
            [(c, "s"), (u, "s"), ("3.96743E+17", "s"), (t, "n"), (o, "s")],
        )
    )
    table.append(("duplicate of row 2", [(c1, "s"), (u1, "s"), (k1, "s"), (t1, "n"), (o1, "s")]))
    c, _, k, t, o = more[6]
    hyperlink = '=HYPERLINK("https://example.com/x","x")'
    table.append(
        (
            "valid: text that looks like a formula is sent as text",
            [(c, "s"), (hyperlink, "s"), (k, "s"), (t, "n"), (o, "s")],
        )
    )
    table.append(("", []))  # a blank row: skipped, but counted in the row numbers
    c, u, k, t, o = more[7]
    table.append(
        (
            "valid: tenant_id as text with .0",
            [(c, "s"), (u, "s"), (k, "s"), (f"{t}.0", "s"), (o, "s")],
        )
    )
    c, u, k, t, o = more[8]
    table.append(
        ("valid: no corp_id (optional)", [("", None), (u, "s"), (k, "s"), (t, "n"), (o, "s")])
    )
    for c, u, k, t, o in more[9:11]:
        table.append(("valid", [(c, "s"), (u, "s"), (k, "s"), (t, "n"), (o, "s")]))

    book = new_book(path)
    sheet = book.add_worksheet("tickets")
    sheet.set_column(0, 5, 24)
    sheet.write_row(0, 0, (*HEADERS, "note"))
    for r, (note, cells) in enumerate(table, start=1):
        for c, (value, kind) in enumerate(cells):
            if kind == "s":
                sheet.write_string(r, c, str(value))
            elif kind == "n":
                sheet.write_number(r, c, float(value))  # type: ignore[arg-type]
        if note:
            sheet.write_string(r, len(HEADERS), note)
    book.close()


def main() -> None:
    rnd = random.Random(20240101)
    write_csv(HERE / "group_tickets.csv", ticket_rows(rnd, 300))
    write_xlsx(HERE / "group_tickets.xlsx", ticket_rows(rnd, 120))
    write_with_errors(HERE / "with_errors.xlsx", ticket_rows(rnd, 13))
    for name in ("group_tickets.csv", "group_tickets.xlsx", "with_errors.xlsx"):
        print(f"wrote samples/{name} ({(HERE / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
