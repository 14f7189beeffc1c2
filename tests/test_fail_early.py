"""Fail before the first call, stop cleanly at any moment, distrust the gateway.

Every pre-send mistake exits 2 with one sentence and the gateway sees no call; every stop
leaves a workbook and the journal; an unreachable or redirecting gateway stops the run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest
from helpers import clean_env, cli, serving, statuses, ticket, wait_for, write_csv

FAST = ["--qps", "1000", "--canary", "0", "--no-progress"]


def popen(tmp_path, env, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "importer", "run", *args],
        cwd=tmp_path,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- fail before the first call ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "r.xls"],
        ["--out", ""],
        ["--out", "blocked/r.xlsx"],
        ["--out-dir", "blocked/reports"],
        ["--summary-json", "blocked/s.json"],
        ["--archive", "blocked/done"],
        ["--qps", "inf"],
        ["--qps", "nan"],
        ["--qps", "1e308"],
        ["--qps-max", "1e308"],
        ["--timeout", "inf"],
        ["--timeout", "0"],
        ["--canary", "99999999999999999999"],
        ["--max-runtime", "99999999999h"],
        ["--max-runtime", "²"],
        ["--concurrency", "0"],
        ["--concurrency", "100000"],
        ["--retries", "-1"],
        ["--max-ban", "inf"],
        ["--daily-quota", "0"],
    ],
    ids=lambda a: " ".join(a) or "empty",
)
def test_a_mistake_knowable_before_sending_sends_nothing(tmp_path, simulator, args):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    (tmp_path / "blocked").write_text("a file where a folder is needed\n")
    done = cli(["run", "t.csv", *FAST, *args], tmp_path, sim.env())
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("top-import: "), done.stderr
    assert sim.stats()["calls"] == 0
    assert not (tmp_path / "reports" / "journal.sqlite").exists()


def test_an_empty_out_in_the_config_file_sends_nothing(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    (tmp_path / "importer.toml").write_text('out = ""\n')
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert done.returncode == 2 and "--out" in done.stderr, done.stderr
    assert sim.stats()["calls"] == 0


def test_a_spec_that_needs_a_session_fails_before_the_lock(tmp_path, simulator):
    sim = simulator()
    spec = tmp_path / "s.toml"
    spec.write_text(
        'method = "example.thing.save"\nneeds_session = true\n'
        '[[fields]]\nname = "thing_id"\ntype = "String"\nrequired = true\n'
    )
    (tmp_path / "t.csv").write_text("thing_id\na1\n")
    done = cli(["run", "t.csv", "--api", "s.toml", *FAST], tmp_path, sim.env())
    assert done.returncode == 2 and "TOP_SESSION" in done.stderr, done.stderr
    assert "rows to send" not in done.stderr  # no pre-flight: nothing was read
    assert sim.stats()["calls"] == 0
    assert not (tmp_path / "reports" / "journal.sqlite").exists()


def test_a_secret_that_is_not_text_is_a_usage_error_before_anything_is_claimed(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(4)])
    env = sim.env(TOP_APP_SECRET="\udcffsecretXYZ")  # the byte 0xff, as the shell passes it
    done = cli(["run", "t.csv", *FAST], tmp_path, env)
    assert done.returncode == 2, done.stderr
    assert "TOP_APP_SECRET holds bytes that are not UTF-8 text" in done.stderr
    assert "secretXYZ" not in done.stderr
    assert sim.stats()["calls"] == 0
    assert not (tmp_path / "reports" / "journal.sqlite").exists()


def test_max_runtime_0_sends_nothing(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    done = cli(["run", "t.csv", *FAST, "--max-runtime", "0"], tmp_path, sim.env())
    assert done.returncode == 1, done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"not_sent": 5}
    assert sim.stats()["calls"] == 0


def test_an_unclosed_quote_names_the_line_where_it_opened(tmp_path, simulator):
    sim = simulator()
    rows = "\n".join(",".join(ticket(i).values()) for i in range(6))
    lines = rows.splitlines()
    lines[2] = lines[2].replace("ding", '"ding', 1)  # line 4 of the file: a quote never closed
    (tmp_path / "t.csv").write_text(",".join(ticket(0)) + "\n" + "\n".join(lines) + "\n")
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert done.returncode == 2, done.stderr
    assert "t.csv line 4: a quote opened there is never closed" in done.stderr
    assert sim.stats()["calls"] == 0


def test_a_config_file_with_the_secret_readable_by_others_is_warned_about(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(2)])
    toml = tmp_path / "importer.toml"
    toml.write_text(f'app_secret = "{sim.settings.secret}"\n')
    toml.chmod(0o644)
    env = sim.env()
    del env["TOP_APP_SECRET"]
    done = cli(["run", "t.csv", *FAST], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "other users of this machine can read it (mode 644); run: chmod 600" in done.stderr
    assert sim.settings.secret not in done.stderr + done.stdout
    toml.chmod(0o600)
    quiet = cli(["run", "t.csv", *FAST], tmp_path, env)
    assert "chmod" not in quiet.stderr


# -- the workbook at the end --------------------------------------------------------------------


def test_a_workbook_that_cannot_be_written_is_rebuilt_from_the_journal(tmp_path, simulator):
    sim = simulator(latency_ms=20)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(40)])
    proc = popen(tmp_path, sim.env(), "t.csv", "--qps", "20", "--canary", "0", "--no-progress")
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 1 or proc.poll() is not None)
        (tmp_path / "reports" / "t.result.xlsx").mkdir()  # the target became unwritable
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "'top-import report t.csv' writes the workbook" in err
    assert "Traceback" not in err
    calls = sim.stats()["calls"]
    (tmp_path / "reports" / "t.result.xlsx").rmdir()
    rebuilt = cli(["report", "t.csv"], tmp_path, sim.env())
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 40}
    assert sim.stats()["calls"] == calls  # no network
    # The journal keeps the results until the next run of t.csv: report may be asked again.
    again = cli(["report", "t.csv"], tmp_path, sim.env())
    assert again.returncode == 0, again.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 40}
    assert cli(["run", "t.csv"], tmp_path, sim.env()).returncode == 0  # skipped: all 40
    after = cli(["report", "t.csv"], tmp_path, sim.env())
    assert after.returncode == 2 and "holds no results" in after.stderr
    assert sim.stats()["calls"] == calls


def test_a_killed_runs_leftovers_are_cleaned_by_the_next_run(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(5)])
    reports = tmp_path / "reports"
    (reports / ".top-import-snapshots").mkdir(parents=True)
    dead = 2**22 + 4321  # no such process
    (reports / f".t.result.xlsx.tmp-{dead}").write_bytes(b"half a workbook")
    (reports / f".t.result.xlsx.tmp-{dead}.d").mkdir()
    (reports / ".top-import-snapshots" / f"snapshot-{dead}-ab12cd34.csv").write_text("x\n")
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert done.returncode == 0, done.stderr
    leftovers = [p.name for p in reports.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    assert list((reports / ".top-import-snapshots").iterdir()) == []


# -- stop cleanly, whatever the moment ------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_while_a_workbook_is_written_finishes_it_and_starts_no_other_input(
    tmp_path, simulator, signum, code
):
    sim = simulator()
    write_csv(tmp_path / "a.csv", [ticket(i) for i in range(3000)])
    write_csv(tmp_path / "b.csv", [ticket(5000 + i) for i in range(10)])
    proc = popen(tmp_path, sim.env(), "a.csv", "b.csv", *FAST)
    try:
        reports = tmp_path / "reports"
        wait_for(
            lambda: (
                any(p.name.startswith(".a.result.xlsx.tmp-") for p in reports.iterdir())
                if reports.exists()
                else False
            )
        )
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert statuses(reports / "a.result.xlsx") == {"success": 3000}
    # b is not sent (if the signal came just after a's workbook, b may have been read: its
    # workbook then lists its rows as not_sent)
    b = reports / "b.result.xlsx"
    assert not b.exists() or statuses(b) == {"not_sent": 10}
    assert sim.stats()["calls"] == 3000


def test_nohup_keeps_a_run_going_after_a_hang_up(tmp_path, simulator):
    sim = simulator(latency_ms=20)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(30)])
    proc = subprocess.Popen(
        [
            "nohup",
            sys.executable,
            "-m",
            "importer",
            "run",
            "t.csv",
            "--qps",
            "30",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=sim.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: sim.stats()["accepted"] >= 1 or proc.poll() is not None)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"success": 30}


def test_a_closed_stdout_does_not_drop_inputs_or_the_summary(tmp_path, simulator):
    sim = simulator()
    for name in ("a", "b", "c"):
        write_csv(tmp_path / f"{name}.csv", [ticket(ord(name) * 100 + i) for i in range(5)])
    read, write = os.pipe()
    os.close(read)  # nobody reads stdout: | head -1 that has already exited
    with os.fdopen(write, "w") as closed:
        proc = popen(
            tmp_path,
            sim.env(),
            "a.csv",
            "b.csv",
            "c.csv",
            *FAST,
            "--summary-json",
            "s.json",
            stdout=closed,
        )
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for name in ("a", "b", "c"):
        assert statuses(tmp_path / "reports" / f"{name}.result.xlsx") == {"success": 5}
    assert (tmp_path / "s.json").exists()
    assert sim.stats()["accepted"] == 15


# -- distrust the gateway ----------------------------------------------------------------------


class _Redirect(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        _Redirect.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", f"http://203.0.113.9/router/rest?{self.path.split('?')[1]}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirecting_gateway_stops_the_run_and_is_not_followed(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(20)])
    _Redirect.seen = []
    with serving(_Redirect) as url:
        env = sim.env(TOP_GATEWAY=url, TOP_SESSION="sess-never-print-me")
        done = cli(["run", "t.csv", *FAST, "--concurrency", "1"], tmp_path, env)
    assert done.returncode == 3, done.stderr
    assert "redirect to http://203.0.113.9/router/rest (not followed" in done.stderr
    assert "sess-never-print-me" not in done.stderr + done.stdout
    assert len(_Redirect.seen) == 1
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"failed": 1, "not_sent": 19}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_gateway_stops_the_run_soon(tmp_path):
    from helpers import APP_KEY, SECRET, clean_env

    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(40)])
    env = clean_env(
        TOP_GATEWAY=f"http://127.0.0.1:{_closed_port()}/router/rest",
        TOP_APP_KEY=APP_KEY,
        TOP_APP_SECRET=SECRET,
    )
    args = ["run", "t.csv", *FAST, "--daily-quota", "100", "--summary-json", "s.json"]
    done = cli(args, tmp_path, env, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot be reached" in done.stderr and "calls in a row got no connection" in done.stderr
    assert statuses(tmp_path / "reports" / "t.result.xlsx") == {"not_sent": 40}
    # "calls" are requests that left the machine, as the journal and the chart count them;
    # the tries that never connected are counted apart
    (document,) = json.loads((tmp_path / "s.json").read_text())["files"]
    assert document["calls"] == 0 and document["attempts"] > 0, document
    assert "; 0 calls;" in done.stdout.splitlines()[0], done.stdout
    # No call reached a platform: the daily quota is untouched for the next run.
    again = cli(
        ["run", "t.csv", *FAST, "--daily-quota", "100", "--max-runtime", "0"], tmp_path, env
    )
    assert "0 calls made today" in again.stderr or "100 left" in again.stderr, again.stderr


def test_the_proxy_from_the_environment_is_named_without_its_password(monkeypatch):
    from importer.gateway import Gateway

    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pa55word@proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    remote = Gateway("https://gw.api.taobao.com/router/rest", concurrency=1, timeout=5)
    assert remote.trust_env
    assert remote.where == "gw.api.taobao.com via proxy http://proxy.corp:3128"
    bypassed = Gateway("https://gw.internal.corp/router/rest", concurrency=1, timeout=5)
    assert bypassed.where == "gw.internal.corp"
    local = Gateway("http://127.0.0.1:8787/router/rest", concurrency=1, timeout=5)
    assert not local.trust_env and local.where == "127.0.0.1:8787"


@pytest.mark.parametrize(
    ("args", "env_extra", "said"),
    [
        (["run", "t.csv"], {}, "Missing app key (TOP_APP_KEY)"),  # the likeliest cron failure
        (["run", "t.csv", "--qps", "abc"], {}, "--qps"),
        (["run", "t.csv", "--deadline", "25:99"], {}, "--deadline '25:99'"),
        (["run", "t.csv", "--api", "nope.toml", "--simulate"], {}, "nope.toml"),
    ],
    ids=["credential", "qps", "deadline", "spec"],
)
def test_summary_json_is_written_whatever_stops_the_command_first(tmp_path, args, env_extra, said):
    """Last night's ``"exit_code": 0`` must never stay in place."""
    write_csv(tmp_path / "t.csv", [ticket(0)])
    (tmp_path / "s.json").write_text('{"exit_code": 0, "files": []}')
    done = cli([*args, "--summary-json", "s.json"], tmp_path, clean_env(**env_extra))
    assert done.returncode == 2, done.stderr
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["exit_code"] == 2 and document["files"] == []
    assert said in document["error"] and said in done.stderr


def test_summary_json_lists_an_input_that_failed_before_sending(tmp_path, simulator):
    sim = simulator()
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", "missing.csv", "--summary-json", "s.json"], tmp_path, sim.env())
    assert done.returncode == 2
    files = json.loads((tmp_path / "s.json").read_text())["files"]
    assert [f["input"] for f in files] == ["t.csv", "missing.csv"]
    assert files[0]["counts"] == {"success": 1}
    assert files[1]["exit_code"] == 2 and "missing.csv does not exist" in files[1]["error"]
    assert sim.stats()["accepted"] == 1


@pytest.mark.parametrize(
    ("flag", "variable"),
    [("--app-secret", "TOP_APP_SECRET"), ("--notify-secret", "TOP_NOTIFY_SECRET")],
)
def test_a_secret_given_as_a_flag_is_explained_not_unknown(tmp_path, flag, variable):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["run", "t.csv", flag, "hunter2-secret"], tmp_path)
    assert done.returncode == 2
    assert "is never taken from the command line" in done.stderr
    assert variable in done.stderr and "No such option" not in done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout
