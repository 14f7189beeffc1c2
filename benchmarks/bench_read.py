"""How much the loader adds on top of the bare readers it is built on.

    python benchmarks/bench_read.py [--rows N] [--csv-rows N] [--repeat N]

XLSX: python-calamine's bare read of every row (the baseline) against ``open_input`` and a
first pass of ``rows()`` (target: at most 1.5x); a workbook sheet is parsed once, so the next
passes (a run makes three) are cheaper, shown beside. CSV: ``pandas.read_csv(dtype=str)`` against
``rows()``. Best of ``--repeat`` runs each; the files are generated into a temporary directory.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import xlsxwriter
from python_calamine import CalamineWorkbook

from importer.loader import open_input
from importer.spec import load_spec

HEADERS = ("corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id")
BASE62 = string.ascii_letters + string.digits


def fake_rows(n: int, seed: int = 7) -> Iterator[tuple[str, str, str, int, str]]:
    rnd = random.Random(seed)
    for i in range(n):
        yield (
            f"ding{rnd.getrandbits(128):032x}",
            "".join(rnd.choices(BASE62, k=27)),
            str(396743391396000000 + i),
            200110004 + i % 50,
            "cid" + "".join(rnd.choices(BASE62, k=22)) + "==",
        )


def write_xlsx(path: Path, n: int) -> None:
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("rows")
    sheet.write_row(0, 0, HEADERS)
    for r, (corp, user, case, tenant, conv) in enumerate(fake_rows(n), start=1):
        sheet.write_string(r, 0, corp)
        sheet.write_string(r, 1, user)
        sheet.write_string(r, 2, case)  # IDs as text, as the README tells users to keep them
        sheet.write_number(r, 3, tenant)
        sheet.write_string(r, 4, conv)
    book.close()


def write_csv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(HEADERS) + "\n")
        for row in fake_rows(n):
            fh.write(",".join(map(str, row)) + "\n")


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def calamine_bare(path: Path) -> int:
    book = CalamineWorkbook.from_path(str(path))
    sheet = book.get_sheet_by_name(book.sheet_names[0])
    return sum(1 for _ in sheet.iter_rows())


def pandas_bare(path: Path) -> int:
    return len(pd.read_csv(path, dtype=str))


def pandas_chunks(path: Path) -> int:
    """The streaming alternative to the csv module: pandas' C engine in chunks, rows as tuples."""
    count = 0
    options = {"dtype": object, "keep_default_na": False, "na_filter": False}
    for chunk in pd.read_csv(path, chunksize=50_000, skip_blank_lines=False, **options):
        for _ in zip(*(chunk[c].tolist() for c in chunk.columns), strict=True):
            count += 1
    return count


def csv_module(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def compare(
    label: str,
    path: Path,
    baseline: str,
    base_fn: Callable[[], int],
    repeat: int,
    others: dict[str, Callable[[], int]] | None = None,
) -> None:
    spec = load_spec(None)
    base, n_base = best_of(repeat, base_fn)
    opened, _ = best_of(repeat, lambda: len(open_input(path, spec).headers))

    def first_pass() -> int:  # a workbook sheet is parsed once, by the first look at it
        return sum(1 for _ in open_input(path, spec).rows())

    ours, n_ours = best_of(repeat, first_pass)
    table = open_input(path, spec)
    sum(1 for _ in table.rows())
    again, _ = best_of(repeat, lambda: sum(1 for _ in table.rows()))
    print(f"{label}:")
    print(f"  {baseline:<28} {base:7.3f} s  {n_base} rows")
    print(f"  {'open_input + rows()':<28} {ours:7.3f} s  {n_ours} rows  ratio {ours / base:.2f}x")
    print(f"  {'open_input (header only)':<28} {opened:7.3f} s")
    print(f"  {'rows() again (next pass)':<28} {again:7.3f} s")
    for name, fn in (others or {}).items():
        took, n = best_of(repeat, fn)
        print(f"  {name:<28} {took:7.3f} s  {n} rows  (reference)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the xlsx file")
    parser.add_argument("--csv-rows", type=int, default=1_000_000, help="rows of the csv file")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xlsx = Path(tmp) / "bench.xlsx"
        csv_path = Path(tmp) / "bench.csv"
        write_xlsx(xlsx, args.rows)
        write_csv(csv_path, args.csv_rows)
        compare(
            f"xlsx {args.rows} rows", xlsx, "calamine", lambda: calamine_bare(xlsx), args.repeat
        )
        compare(
            f"csv {args.csv_rows} rows",
            csv_path,
            "pandas.read_csv(dtype=str)",
            lambda: pandas_bare(csv_path),
            args.repeat,
            others={
                "csv.reader, bare": lambda: csv_module(csv_path),
                "pandas C engine in chunks": lambda: pandas_chunks(csv_path),
            },
        )


if __name__ == "__main__":
    main()
