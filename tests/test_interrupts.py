"""A second Ctrl-C stops at once: calls in flight become `unknown`, and the journal knows it."""

from __future__ import annotations

import signal
import subprocess
import sys

from helpers import cli, read_sheet, statuses, ticket, wait_for, write_csv


def test_a_second_sigint_cancels_calls_in_flight_as_unknown(tmp_path, simulator):
    sim = simulator(latency_ms=5000)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(40)])
    # --canary 0: the canary would hold the first 20 rows to 2 calls in flight
    args = ["run", "t.csv", "--qps", "100", "--concurrency", "4", "--no-progress", "--canary", "0"]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "importer", *args],
            cwd=tmp_path,
            env=sim.env(),
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
        try:
            wait_for(lambda: sim.stats()["calls"] >= 4)
            proc.send_signal(signal.SIGINT)
            # Two signals sent at once may merge into one: wait until the first is handled.
            wait_for(lambda: "stopping" in stderr.read_text())
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    err = stderr.read_text()
    assert proc.returncode == 130, err
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    unknown = [r for r in rows if r["status"] == "unknown"]
    assert len(unknown) == 4
    assert all(r["attempts"] == 1 and "in flight" in r["error"] for r in unknown)
    assert {r["status"] for r in rows} == {"unknown", "not_sent"}

    # A plain rerun keeps them back (they may have reached the platform); --resend-unknown
    # sends them again and says so in the report.
    sim_fast = simulator(app_key=sim.settings.app_key)
    kept = cli(["run", "t.csv", "--qps", "500"], tmp_path, sim_fast.env())
    assert kept.returncode == 1, kept.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 36, "unknown": 4}
    again = cli(["run", "t.csv", "--qps", "500", "--resend-unknown"], tmp_path, sim_fast.env())
    assert again.returncode == 0, again.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 4, "skipped": 36}
    resent = [r for r in rows if "sent again" in (r["error"] or "")]
    assert sorted(r["source_row"] for r in resent) == sorted(r["source_row"] for r in unknown)
