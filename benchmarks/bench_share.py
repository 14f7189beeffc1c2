"""One quota per app key: 1, 2 and 4 runs on one journal against a simulator quota of N.

    python benchmarks/bench_share.py [--quota 40] [--rows 400] [--auto]

Each round starts the simulator (its own process, ``--qps N``) and the given number of real
``top-import run`` processes at ``--qps N`` on one journal, each with its own input (``--rows``
split among them). Prints, per round, the calls the simulator throttled (target 0), the most
calls it saw in one clock second (target <= N) and the mean share of N used in the full seconds
once every run has joined (target >= 95 %), beside the single run's in the same run of the
benchmark (the baseline). With ``--auto`` the runs use ``--qps auto`` instead and learn the
quota (throttles are how it is learnt: the figure to watch is that more runs do not add them).
Prints, never asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HEADERS = ["corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id"]


def write_rows(path: Path, start: int, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADERS)
        for i in range(start, start + n):
            out.writerow(
                [
                    f"ding{i:08d}",
                    f"user{i:08d}",
                    str(396743391396743391 + i),
                    "200110004",
                    f"c{i}==",
                ]
            )


def round_of(runs: int, quota: int, rows: int, folder: Path, port: int, auto: bool) -> dict:
    sim = subprocess.Popen(
        [sys.executable, "-m", "importer", "simulate", "--port", str(port), "--qps", str(quota)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url, key, secret = (part.split("=")[-1] for part in sim.stdout.readline().split()[:3])
        env = dict(os.environ, TOP_GATEWAY=url, TOP_APP_KEY=key, TOP_APP_SECRET=secret)
        for r in range(runs):
            write_rows(folder / f"r{runs}-{r}.csv", runs * 100_000 + r * 10_000, rows // runs)
        qps = "auto" if auto else str(quota)
        args = ["--qps", qps, "--canary", "0", "--no-progress", "--journal", f"j{runs}.sqlite"]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "importer", "run", f"r{runs}-{r}.csv", *args],
                cwd=folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for r in range(runs)
        ]
        for proc in procs:
            proc.wait()
        with urllib.request.urlopen(url.replace("/router/rest", "/_sim/stats")) as answer:
            return json.load(answer)
    finally:
        sim.terminate()
        sim.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=int, default=40)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--auto", action="store_true", help="the runs use --qps auto")
    args = parser.parse_args()
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for runs in (1, 2, 4):
            stats = round_of(runs, args.quota, args.rows, Path(tmp), 18900 + runs, args.auto)
            seconds = [n for _, n in sorted(stats["per_second"].items(), key=lambda kv: int(kv[0]))]
            steady = [n for n in seconds[1:-1] if n >= args.quota / 2]
            used = sum(steady) / len(steady) / args.quota if steady else 0.0
            baseline = baseline or used
            throttled, most = stats["rejected"].get("7", 0), stats["max_calls_in_a_second"]
            print(
                f"{runs} run(s) at --qps {'auto' if args.auto else args.quota}, quota "
                f"{args.quota}: throttled {throttled}, "
                f"most in a second {most}, quota used {used:.1%} (ratio to one run "
                f"{used / baseline:.2f})"
            )


if __name__ == "__main__":
    main()
