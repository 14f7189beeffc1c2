"""Shared test helpers, imported ``from helpers import ...``: rows built in code, the real
simulator on 127.0.0.1, the real CLI. The fixtures are in ``conftest.py``."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cli_forks import CliForks

from importer.simulator import Simulator, SimulatorSettings
from importer.spec import ApiSpec

HEADERS = ["corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id"]
SECRET = "S3cr3t-never-print-me-7f0c"
SESSION = "sess-never-print-me-41aa"
APP_KEY = "23456789"


def ticket(i: int, tenant: int = 200110004) -> dict[str, str]:
    """A valid row in the shape of the reference example, distinct per ``i``."""
    return {
        "corp_id": f"ding5df29af51dd68a8d35c2f4657eb{i:05d}",
        "user_identify": f"wegdtJRNVp51PWHMWqdw{i:07d}",
        "case_id": str(396743391396743391 + i),
        "tenant_id": str(tenant),
        "open_conversation_id": f"ciddtJRNVp51PWH{i:07d}==",
    }


def write_csv(path: Path, rows: list[dict[str, str]], headers: list[str] = HEADERS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=headers)
        writer.writeheader()
        writer.writerows(rows)
    return path


class FakeClock:
    """The one fake clock of the tests: monotonic seconds that move only when the test moves
    them (``t``) or someone sleeps on it (optionally oversleeping, like a real timer)."""

    def __init__(self, start: float = 1_000.0, overshoot: float = 0.0, seed: int = 0) -> None:
        self.t = start
        self.overshoot = overshoot
        self.rng = random.Random(seed)
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds + self.rng.uniform(0, self.overshoot)
        await asyncio.sleep(0)


class SimulatorThread:
    """The real simulator, served from its own event loop in a thread of the test process."""

    def __init__(self, settings: SimulatorSettings, specs: Iterable[ApiSpec] | None = None) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._sim = Simulator(settings, specs=specs)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._sim.__aenter__(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._sim.__aexit__(None, None, None), self._loop).result(
            10
        )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self._sim.url

    def stats(self) -> dict:
        async def read() -> dict:
            return self._sim.stats()

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(10)

    def accepted(self) -> dict[str, int]:
        """Every payload the simulator accepted, and how often."""

        async def read() -> dict[str, int]:
            return self._sim.accepted()

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(10)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a CLI subprocess that sends to this simulator."""
        env = dict(os.environ)
        env.update(
            TOP_GATEWAY=self.url,
            TOP_APP_KEY=self.settings.app_key,
            TOP_APP_SECRET=self.settings.secret,
        )
        env.update(extra)
        return env


# The tests assert English texts: they run in an English locale whatever the machine's (a
# Chinese LANG would switch every sentence); a test of the Chinese sets its own.
for _name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_name, None)
os.environ["LANG"] = "C.UTF-8"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    env.update(extra)
    return env


_FORKS = CliForks()
atexit.register(_FORKS.close)


def cli(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    fork: bool = True,
) -> subprocess.CompletedProcess:
    """Run the real command in a process of its own, as a user or cron would: forked from a
    server that has imported everything once (``cli_forks``), or with ``fork=False`` started
    as ``python -m importer``. Whatever the test, the command never prints a traceback (the
    promise: one sentence, never a traceback)."""
    env = env if env is not None else clean_env()
    if fork:
        done = _FORKS.run(args, cwd, env, timeout)
    else:
        done = subprocess.run(
            [sys.executable, "-m", "importer", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition that another process makes true (not a sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def start_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``top-import ARGS`` in the background, in a process of its own, its output dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "importer", *args, "--no-progress"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_at_once(
    commands: list[list[str]], cwd: Path, env: dict[str, str], timeout: float = 120
) -> list[tuple[int, str]]:
    """``top-import ARGS`` for each of ``commands``, all started before any is waited for (runs
    that meet in the journal); each one's (exit code, stderr), in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "importer", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    errors = [proc.communicate(timeout=timeout)[1] for proc in procs]
    return [(proc.returncode, error) for proc, error in zip(procs, errors, strict=True)]


def killed_9_when(
    args: list[str], cwd: Path, env: dict[str, str], condition: Callable[[], bool]
) -> int:
    """Start ``top-import ARGS`` (``start_cli``), ``kill -9`` it once ``condition`` holds (or
    it has ended), and return its exit status (``-9`` when the kill landed)."""
    proc = start_cli(args, cwd, env)
    try:
        wait_for(lambda: condition() or proc.poll() is not None)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(30)
    finally:
        proc.kill()


def read_sheet(path: Path, sheet: str = "results") -> list[dict[str, object]]:
    """A sheet of a result workbook as dicts keyed by its header row."""
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True)
    try:
        rows = list(wb[sheet].iter_rows(values_only=True))
    finally:
        wb.close()
    header = [str(h) for h in rows[0]]
    return [dict(zip(header, r, strict=True)) for r in rows[1:]]


def statuses(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_sheet(path):
        counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
    return counts


@contextlib.contextmanager
def serving(handler: type, path: str = "/router/rest") -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 with ``handler`` (a ``BaseHTTPRequestHandler``), in a
    thread, for a test that plays a gateway or a webhook; yields its URL."""
    from http.server import HTTPServer

    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
