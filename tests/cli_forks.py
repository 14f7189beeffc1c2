"""The real CLI, each command in a process of its own, without paying start-up for every one.

A command's process spends ~0.5 s of CPU importing Python, aiohttp, click and the importer
before it does anything; the end-to-end tests run a few hundred commands, so on two cores that
start-up was most of the suite. Here one server process per test process imports all of it
once, and forks a child per command: the child is a fresh process (its own pid, cwd,
environment, file descriptors, signal handlers and event loop) that runs ``importer.cli.main``
exactly as ``python -m importer`` does, with stdout and stderr in files and stdin empty.

The server forks from a single-threaded process that has never run a command, so no lock or
state of an earlier command is inherited. Tests that need what only a real interpreter start
gives (``python -m importer`` itself, a signal sent to the process, a terminal) use
``subprocess`` directly; ``helpers.cli(..., fork=False)`` does too.

    python tests/cli_forks.py     # the server: JSON requests on stdin, answers on stdout
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path


def serve() -> None:
    import importer.cli  # noqa: F401 - everything a command imports, once

    answers = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        answers.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        answers.write(json.dumps({"pid": pid}).encode() + b"\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        answers.flush()


def _child(request: dict) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - the process ends here
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["top-import", *request["args"]]
        from importer.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stdout is the command's business
                stream.flush()
        os._exit(code)


class CliForks:
    """The client: ``run`` is ``subprocess.run([python, -m, importer, *args], ...)`` in effect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        self._pending = b""

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"args": args, "cwd": str(cwd), "env": env}
            request.update(stdout=str(out), stderr=str(err))
            server = self._started()
            assert server.stdin is not None
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            pid = self._answer(30)["pid"]
            try:
                code = self._answer(timeout)["code"]
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._answer(30)
                raise subprocess.TimeoutExpired(args, timeout) from None
            return subprocess.CompletedProcess(
                args,
                code,
                out.read_text(encoding="utf-8", errors="replace"),
                err.read_text(encoding="utf-8", errors="replace"),
            )

    def close(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None

    def _started(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            self._server = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=Path(__file__).parent,
            )
            self._pending = b""
        return self._server

    def _answer(self, timeout: float) -> dict:
        server = self._started()
        assert server.stdout is not None
        fd = server.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                if not selector.select(timeout):
                    raise subprocess.TimeoutExpired("top-import", timeout)
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError("the CLI fork server ended")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    serve()
