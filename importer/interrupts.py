"""A stop asked from outside a run: SIGINT, SIGTERM and SIGHUP for the CLI, ``StopHandle`` for
a caller that is not a terminal (a library caller decides for itself whether to install
handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

from importer.dispatcher import Dispatcher
from importer.i18n import _
from importer.steps import StopReason


class Interrupts:
    """A stop asked from outside the run, shared by the inputs of one command: the first stops
    starting calls (calls in flight finish, the workbook is written, no further input starts);
    an abort (a second SIGINT) also cancels the calls in flight. ``signal`` is the signal that
    asked, None for a stop asked by code (``stop``/``abort``: the exit code is the rows').

    ``handle_signals`` installs the handlers (the CLI does; a library caller decides).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.stopped = False
        self._dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher | None) -> None:
        """The dispatcher of the send pass now running (None between send passes)."""
        self._dispatcher = dispatcher
        if dispatcher is not None and self.stopped:
            dispatcher.stop(StopReason.INTERRUPTED)  # asked before this input started sending

    def stop(self) -> None:
        """What the first SIGINT or SIGTERM does, without a signal."""
        if not self.stopped:
            self.stopped = True
            if self._dispatcher is not None:
                self._dispatcher.stop(StopReason.INTERRUPTED)

    def abort(self) -> None:
        """What a second Ctrl-C does: stop, and cancel the calls in flight (they are unknown)."""
        self.stop()
        if self._dispatcher is not None:
            self._dispatcher.abort()

    def handle(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            said = _(
                "stopping — letting calls in flight finish and writing the workbook (Ctrl-C "
                "again to stop the calls at once)"
            )
            print(f"top-import: {said}", file=sys.stderr)
            self.stop()
        elif signum == signal.SIGINT:
            self.abort()


class StopHandle:
    """A stop button for a run started from code: ``stop()`` does what SIGINT or SIGTERM does
    (no call starts any more, the calls in flight finish, the workbook is written), ``abort()``
    what a second Ctrl-C does (the calls in flight are cancelled and reported unknown). Either
    may be called from any thread, before or while the run goes; the run's exit code is then
    its rows' (1 with rows not sent), not a signal's.

        handle = importer.StopHandle()
        task = asyncio.create_task(importer.run_async("t.xlsx", stop=handle))
        ...
        handle.stop()
    """

    def __init__(self) -> None:
        self.interrupts = Interrupts()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<StopHandle stopped={self.interrupts.stopped}>"

    def bind(self, loop: asyncio.AbstractEventLoop) -> Interrupts:
        """The run's loop: a stop from another thread is handed to it."""
        self._loop = loop
        return self.interrupts

    def stop(self) -> None:
        self._call(self.interrupts.stop)

    def abort(self) -> None:
        self._call(self.interrupts.abort)

    def _call(self, action: Callable[[], None]) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            action()
        else:
            loop.call_soon_threadsafe(action)


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


__all__ = ["Interrupts", "StopHandle", "handle_signals"]
