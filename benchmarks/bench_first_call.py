"""How long a user waits for the first call of a big run: ``top-import run`` of a CSV of a
million rows at ``--qps 50``, from the command's start to the first call the gateway sees.

    python benchmarks/bench_first_call.py [--rows 1000000] [--rounds 3] [--baseline DIR]

The simulator runs in a process of its own; the run is the real command in a process of its
own, in a fresh folder (a new journal) each round, killed once the gateway has seen its first
call and a few seconds of sending (its peak RSS is read from ``wait4`` as it ends). The
baseline is the same figure for another checkout of top-import (``--baseline DIR``, e.g. a
``git worktree`` of the commit before a change), measured alternately with this one, so that
both see the same machine. Target: the first call within 5 s, RSS under 200 MB.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_send import APP_KEY, SECRET, SimulatorProcess
from bench_validate import write_csv

SENDING_S = 3.0  # how long the run goes on sending after its first call, for its RSS
TARGET_S = 5.0
TARGET_RSS_MB = 200


def calls(sim: SimulatorProcess) -> int:
    with urllib.request.urlopen(sim.base + "/_sim/stats", timeout=5) as answer:
        return int(json.load(answer)["calls"])


def first_call(sim: SimulatorProcess, src: Path, folder: Path, source: Path | None) -> tuple:
    """Seconds from the command's start to the gateway's first call; the run's peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    env.update(TOP_APP_KEY=APP_KEY, TOP_APP_SECRET=SECRET, TOP_GATEWAY=sim.url)
    if source is not None:  # the other checkout's package first on the path
        env["PYTHONPATH"] = str(source)
    before = calls(sim)
    folder.mkdir()
    args = [sys.executable, "-m", "importer", "run", str(src), "--qps", "50", "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    waited = None
    while proc.poll() is None and time.perf_counter() - started < 300:
        if calls(sim) > before:
            waited = time.perf_counter() - started
            break
        time.sleep(0.02)  # a measurement's resolution, not a synchronisation
    if waited is not None:
        time.sleep(SENDING_S)
    proc.send_signal(signal.SIGKILL)
    _, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return waited, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the csv file")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alternately")
    given = parser.parse_args()
    sides: dict[str, Path | None] = {"this": None}
    if given.baseline:
        sides["baseline"] = given.baseline.resolve()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess(latency_ms=20) as sim:
        src = Path(tmp) / "tickets.csv"
        invalid = write_csv(src, given.rows)
        size = src.stat().st_size / 2**20
        print(
            f"first call: top-import run of {given.rows:,} rows ({invalid:,} invalid, "
            f"{size:.0f} MiB csv) at --qps 50, a new journal each round; {given.rounds} rounds"
        )
        seen: dict[str, list[tuple]] = {side: [] for side in sides}
        for round_ in range(given.rounds):
            for side, source in sides.items():
                folder = Path(tmp) / f"{side}-{round_}"
                waited, rss = first_call(sim, src, folder, source)
                seen[side].append((waited, rss))
                shown = "never" if waited is None else f"{waited:5.2f} s"
                print(f"  round {round_ + 1} {side:8}: first call {shown}   peak RSS {rss:5.0f} MB")
        for side, figures in seen.items():
            waits = [w for w, _ in figures if w is not None]
            if not waits:
                continue
            print(
                f"  {side:8}: first call min {min(waits):.2f} median "
                f"{statistics.median(waits):.2f} max {max(waits):.2f} s (target <= {TARGET_S:g});"
                f" peak RSS max {max(r for _, r in figures):.0f} MB (target < {TARGET_RSS_MB})"
            )
        if "baseline" in seen:
            this = statistics.median(w for w, _ in seen["this"] if w is not None)
            base = statistics.median(w for w, _ in seen["baseline"] if w is not None)
            print(f"  ratio this/baseline (median): {this / base:.2f}")


if __name__ == "__main__":
    main()
