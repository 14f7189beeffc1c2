"""Result-workbook writers, head to head: rows/s and peak RSS, each in a fresh subprocess.

    python benchmarks/bench_write.py [--rows N]

Engines: openpyxl write-only (``ws.append``), xlsxwriter ``constant_memory`` (``write_string`` /
``write_number`` per cell) and ``importer.reporter.ReportWriter``. All three write the same rows
(16 columns: source_row, 5 input columns, 10 outcome columns) to a ``results`` sheet and every
tenth row also to a ``failed`` sheet. Peak RSS is ``ru_maxrss`` after the write; "base" is the same
figure before the first row, so "peak - base" is what the writing cost.

Caveat for openpyxl: plain ``append`` takes text starting with ``=`` for a formula, and write-only
mode keeps a shared-strings table in memory, so its figures are a best case the report could not
use as is.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from importer.rows import Outcome

INPUT_HEADERS = ("customer_id", "name", "phone", "group_id", "remark")
RESULT_TAIL = Outcome.COLUMNS  # the same header the real report writes
ENGINES = ("openpyxl_write_only", "xlsxwriter_constant_memory", "report_writer")


def input_cells(i: int) -> tuple[str, ...]:
    return (
        f"{200000000000000000 + i}",  # an 18-digit id, kept as text
        f"客户 {i} name",
        f"1380013{i % 10000:04d}",
        str(200110004 + i % 7),
        '=HYPERLINK("x")' if i % 1000 == 0 else f"remark for row {i}",
    )


def outcome_values(i: int) -> tuple:
    if i % 10 == 0:
        return (
            "failed",
            "15",
            "Remote service error",
            "isv.invalid",
            "bad group",
            "",
            "",
            3,
            812,
            "",
        )
    return ("success", "", "", "", "", f"req{i:012x}", "2024-05-01 12:00:00", 1, 95, "")


def rows(n: int) -> Iterator[tuple[int, tuple[str, ...], tuple, bool]]:
    for i in range(n):
        values = outcome_values(i)
        yield i + 2, input_cells(i), values, values[0] == "failed"


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_openpyxl(path: Path, n: int) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    results, failed = wb.create_sheet("results"), wb.create_sheet("failed")
    results.append(("source_row", *INPUT_HEADERS, *RESULT_TAIL))
    failed.append((*INPUT_HEADERS, "source_row", *RESULT_TAIL))
    for source_row, cells, values, is_failed in rows(n):
        results.append((source_row, *cells, *values))
        if is_failed:
            failed.append((*cells, source_row, *values))
    wb.save(path)


def run_xlsxwriter(path: Path, n: int) -> None:
    import xlsxwriter

    options = {
        "constant_memory": True,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
    }
    wb = xlsxwriter.Workbook(str(path), options)
    results, failed = wb.add_worksheet("results"), wb.add_worksheet("failed")

    def put(ws, r: int, values) -> None:
        for c, v in enumerate(values):
            if type(v) is str:
                if v:
                    ws.write_string(r, c, v)
            else:
                ws.write_number(r, c, v)

    put(results, 0, ("source_row", *INPUT_HEADERS, *RESULT_TAIL))
    put(failed, 0, (*INPUT_HEADERS, "source_row", *RESULT_TAIL))
    f = 0
    for r, (source_row, cells, values, is_failed) in enumerate(rows(n), start=1):
        put(results, r, (source_row, *cells, *values))
        if is_failed:
            f += 1
            put(failed, f, (*cells, source_row, *values))
    wb.close()


def run_report_writer(path: Path, n: int) -> None:
    from importer.reporter import ReportWriter
    from importer.rows import Outcome, Row, Status

    writer = ReportWriter(path, INPUT_HEADERS)
    for source_row, cells, values, _ in rows(n):
        status, code, msg, sub_code, sub_msg, request_id, system_time, attempts, ms, error = values
        outcome = Outcome(
            Status(status),
            code,
            msg,
            sub_code,
            sub_msg,
            request_id,
            system_time,
            attempts,
            ms,
            error,
        )
        writer.write(Row(source_row, cells), outcome)
    writer.close([("rows", n)])


def child(engine: str, n: int, out_dir: Path) -> None:
    run = {
        "openpyxl_write_only": run_openpyxl,
        "xlsxwriter_constant_memory": run_xlsxwriter,
        "report_writer": run_report_writer,
    }[engine]
    # import the engine's modules before measuring the baseline
    import openpyxl  # noqa: F401
    import xlsxwriter  # noqa: F401

    import importer.reporter  # noqa: F401

    base = max_rss_mib()
    path = out_dir / f"{engine}.xlsx"
    start = time.perf_counter()
    run(path, n)
    seconds = time.perf_counter() - start
    result = {
        "engine": engine,
        "rows": n,
        "seconds": seconds,
        "rows_per_s": n / seconds,
        "base_mib": base,
        "peak_mib": max_rss_mib(),
        "size_mib": path.stat().st_size / 2**20,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args.engine, args.rows, args.out_dir)
        return

    print(f"{args.rows:,} rows x 16 columns, every 10th row also on the failed sheet")
    print(
        f"{'engine':<28}{'seconds':>9}{'rows/s':>10}{'base MiB':>10}{'peak MiB':>10}"
        f"{'file MiB':>10}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ENGINES:
            cmd = [
                sys.executable,
                __file__,
                "--engine",
                engine,
                "--rows",
                str(args.rows),
                "--out-dir",
                tmp,
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = results[engine] = json.loads(out.strip().splitlines()[-1])
            print(
                f"{engine:<28}{r['seconds']:>9.2f}{r['rows_per_s']:>10,.0f}"
                f"{r['base_mib']:>10.1f}{r['peak_mib']:>10.1f}{r['size_mib']:>10.1f}"
            )
    ratio = (
        results["report_writer"]["rows_per_s"] / results["xlsxwriter_constant_memory"]["rows_per_s"]
    )
    print(f"ReportWriter / xlsxwriter constant_memory throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
