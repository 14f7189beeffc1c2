"""`top-import validate` on a big CSV vs reading it with pandas and writing it with xlsxwriter.

    python benchmarks/bench_validate.py [--rows 1000000] [--repeat 1] [--profile]

A CSV of ``--rows`` distinct rows in the shape of ``samples/group_tickets.csv`` (about 2 % of them
invalid: an empty ``user_identify`` or a ``tenant_id`` that is not a number) is generated into a
temporary directory. Each measurement runs in a fresh Python process and is timed from outside,
interpreter start and imports included, so both sides pay the same fixed costs:

- baseline: ``pandas.read_csv(path, dtype=str, keep_default_na=False)``, then an xlsxwriter
  ``constant_memory`` workbook with the same rows on one sheet, one ``write_string`` per cell;
- measured: the real command, ``python -m importer validate FILE --out OUT.xlsx``.

Prints both wall times, the ratio validate/baseline (target <= 1.2) and the peak RSS of the
validate process (target < 200 MB; ``os.wait4`` gives the rusage of that one child). With
``--baseline DIR`` (another checkout, e.g. a ``git worktree`` of the commit before a change)
its ``validate`` runs in the same alternating rounds, and its ratio is printed beside.

Also the cost of the private copy a ``run`` takes of its input (``importer.snapshot.take``: copy
and SHA-256 in one read) against validate's time on the same file (target <= 0.10), beside
the SHA-256 alone that a run paid for its lock key before it took copies. With
``--repeat N`` the two alternate N times and the best of each is kept. ``--profile`` adds a
cProfile run of ``validate`` (in its own process) and prints the top functions by own time.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from importer import snapshot

HEADERS = ("corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id")
BASE62 = string.ascii_letters + string.digits
TARGET_RATIO = 1.2
TARGET_RSS_MB = 200

BASELINE = """
import sys, pandas, xlsxwriter
src, out = sys.argv[1], sys.argv[2]
df = pandas.read_csv(src, dtype=str, keep_default_na=False)
book = xlsxwriter.Workbook(out, {"constant_memory": True})
sheet = book.add_worksheet("rows")
write_string = sheet.write_string
for c, name in enumerate(df.columns):
    write_string(0, c, name)
for r, row in enumerate(df.itertuples(index=False, name=None), start=1):
    for c, value in enumerate(row):
        write_string(r, c, value)
book.close()
"""

PROFILE = """
import cProfile, pstats, sys
from importer.cli import cli
prof = cProfile.Profile()
prof.enable()
try:
    cli.main(["validate", sys.argv[1], "--out", sys.argv[2]], standalone_mode=False)
finally:
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
"""


def write_csv(path: Path, n: int, invalid_share: float = 0.02, seed: int = 11) -> int:
    """``n`` distinct rows (``case_id`` is unique); returns how many are invalid."""
    rnd = random.Random(seed)
    invalid = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(HEADERS) + "\n")
        lines = []
        for i in range(n):
            user = "".join(rnd.choices(BASE62, k=27))
            tenant = str(200110004 + i % 50)
            if rnd.random() < invalid_share:
                invalid += 1
                if i % 2:
                    user = ""
                else:
                    tenant = "t" + tenant
            lines.append(
                f"ding{rnd.getrandbits(128):032x},{user},{396743391396000000 + i},{tenant},"
                f"cid{''.join(rnd.choices(BASE62, k=22))}==\n"
            )
            if len(lines) == 10_000:
                fh.writelines(lines)
                lines.clear()
        fh.writelines(lines)
    return invalid


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) of this one child, exit code. Run in the file's folder:
    ``python -m`` puts the working folder first on the path, before ``PYTHONPATH``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=Path(cmd[-1]).parent,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen.wait
    return took, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the csv file")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds, best kept")
    parser.add_argument("--profile", action="store_true", help="also cProfile validate")
    parser.add_argument("--baseline", type=Path, help="another checkout, in the same rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tickets.csv"
        started = time.perf_counter()
        invalid = write_csv(src, args.rows)
        size = src.stat().st_size / 2**20
        print(
            f"validate: {args.rows} rows ({invalid} invalid, {size:.0f} MiB csv), generated in "
            f"{time.perf_counter() - started:.1f} s; each side in a fresh process, timed from "
            f"outside; best of {args.repeat}"
        )
        base_cmd = [sys.executable, "-c", BASELINE, str(src), str(Path(tmp) / "base.xlsx")]
        ours_cmd = [
            sys.executable,
            "-m",
            "importer",
            "validate",
            str(src),
            "--out",
            str(Path(tmp) / "ours.xlsx"),
        ]
        base, ours, other = [], [], []
        other_env = None
        if args.baseline:
            other_env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        for _ in range(args.repeat):
            base.append(timed(base_cmd))
            ours.append(timed(ours_cmd))
            if other_env is not None:
                other.append(timed(ours_cmd, other_env))
        b = min(base)
        o = min(ours)
        rss = max(r for _, r, _ in ours)
        codes = sorted({c for _, _, c in ours})
        print(f"  baseline pandas.read_csv + xlsxwriter : {b[0]:7.2f} s   peak RSS {b[1]:6.0f} MiB")
        print(
            f"  top-import validate                   : {o[0]:7.2f} s   peak RSS {o[1]:6.0f} MiB"
            f"   exit code {codes}"
        )
        print(f"  rounds: baseline {_secs(base)}; validate {_secs(ours)}")
        ratios = " ".join(f"{t / f:.2f}" for (t, _, _), (f, _, _) in zip(ours, base, strict=True))
        print(
            f"  ratio validate/baseline               : {o[0] / b[0]:7.2f}   (target <= "
            f"{TARGET_RATIO}; each round: {ratios})"
        )
        if other:
            each = " ".join(
                f"{t / f:.2f}" for (t, _, _), (f, _, _) in zip(other, base, strict=True)
            )
            print(
                f"  the other checkout's validate         : {min(other)[0]:7.2f} s   ratio "
                f"{min(other)[0] / b[0]:.2f} (each round: {each}); peak RSS "
                f"{max(r for _, r, _ in other):.0f} MiB"
            )
        print(
            f"  peak RSS of validate                  : {rss:7.0f} MiB = {rss * 1.048576:.0f} MB"
            f"   (target < {TARGET_RSS_MB} MB)"
        )
        snap, hashed = [], []
        for _ in range(max(args.repeat, 3)):
            started = time.perf_counter()
            copy = snapshot.take(src, Path(tmp) / "snapshots")
            snap.append(time.perf_counter() - started)
            copy.remove()
            started = time.perf_counter()
            snapshot.sha256_of(src)
            hashed.append(time.perf_counter() - started)
        print(
            f"  run's private copy (copy + SHA-256)   : {min(snap):7.2f} s   "
            f"(SHA-256 alone {min(hashed):.2f} s)"
        )
        print(
            f"  ratio copy/validate                   : {min(snap) / o[0]:7.3f}   (target <= 0.10)"
        )
        if args.profile:
            print("\ncProfile of validate (own process):", flush=True)
            out = str(Path(tmp) / "prof.xlsx")
            subprocess.run([sys.executable, "-c", PROFILE, str(src), out], check=False)


def _secs(runs: list[tuple[float, float, int]]) -> str:
    return " ".join(f"{t:.2f}" for t, _, _ in runs)


if __name__ == "__main__":
    main()
