"""Memory and time of a run's three passes over a workbook input (pre-flight, send, report).

    python benchmarks/bench_memory.py [--rows 200000]

Each figure is measured in a fresh process (peak RSS from ``getrusage``, minus the RSS after
the imports): the baseline is python-calamine's bare read of the sheet once; ``three passes``
is ``open_input`` (the header) and three full passes of ``rows()``, as ``run_file`` makes.
Prints MB per 100k rows, seconds, and the ratios to the baseline; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_read import write_xlsx

PROBE = r"""
import json, resource, sys, time
from python_calamine import CalamineWorkbook
from importer.loader import open_input
from importer.spec import load_spec
spec = load_spec(None)
path, mode = sys.argv[1], sys.argv[2]
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss()
start = time.perf_counter()
if mode == "bare":
    book = CalamineWorkbook.from_path(path)
    rows = sum(1 for _ in book.get_sheet_by_name(book.sheet_names[0]).iter_rows())
else:
    table = open_input(path, spec)
    rows = sum(sum(1 for _ in table.rows()) for _ in range(3))
print(json.dumps({"mb": rss() - before, "s": time.perf_counter() - start, "rows": rows}))
"""


def measure(path: Path, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.xlsx"
        write_xlsx(path, args.rows)
        bare, ours = measure(path, "bare"), measure(path, "three")
    per = 100_000 / args.rows
    print(
        f"{args.rows} rows, bare calamine read once: {bare['mb'] * per:.0f} MB per 100k rows, "
        f"{bare['s']:.2f} s"
    )
    mb, s = ours["mb"] / bare["mb"], ours["s"] / bare["s"]
    print(
        f"header + three passes: {ours['mb'] * per:.0f} MB per 100k rows (ratio {mb:.2f}), "
        f"{ours['s']:.2f} s (ratio {s:.2f})"
    )


if __name__ == "__main__":
    main()
