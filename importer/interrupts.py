"""A stop asked from outside a run: SIGINT, SIGTERM and SIGHUP, for the CLI (a library caller
decides for itself whether to install handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

from importer.dispatcher import Dispatcher
from importer.steps import StopReason


class Interrupts:
    """A stop asked from outside the run (SIGINT, SIGTERM, SIGHUP), shared by the inputs of one
    command: the first stops starting calls (calls in flight finish, the workbook is written,
    no further input starts); a second SIGINT also cancels the calls in flight.

    ``handle_signals`` installs the handlers (the CLI does; a library caller decides).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher | None) -> None:
        """The dispatcher of the send pass now running (None between send passes)."""
        self._dispatcher = dispatcher
        if dispatcher is not None and self.signal is not None:
            dispatcher.stop(StopReason.INTERRUPTED)  # asked before this input started sending

    def handle(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            print(
                "top-import: stopping — letting calls in flight finish and writing the "
                "workbook (Ctrl-C again to stop the calls at once)",
                file=sys.stderr,
            )
            if self._dispatcher is not None:
                self._dispatcher.stop(StopReason.INTERRUPTED)
        elif signum == signal.SIGINT and self._dispatcher is not None:
            self._dispatcher.abort()


@contextlib.contextmanager
def handle_signals(interrupts: Interrupts) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) go to ``interrupts`` while
    the block runs in the event loop; under ``nohup`` (SIGHUP ignored) a hang-up stays
    ignored and the run goes on."""
    loop = asyncio.get_running_loop()
    wanted = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    installed = []
    for signum in wanted:
        try:
            loop.add_signal_handler(signum, interrupts.handle, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


__all__ = ["Interrupts", "handle_signals"]
