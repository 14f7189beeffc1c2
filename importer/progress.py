"""Progress on stderr: a tqdm bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter

from tqdm import tqdm

from importer.rows import Status

LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, enabled: bool | None, label: str, total: int | None = None) -> None:
        self._counts: Counter[str] = Counter()
        self._label = label
        self._started = time.monotonic()
        self._last_log = self._started
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self._bar = (
            tqdm(total=total, desc=label, unit="row", file=sys.stderr, dynamic_ncols=True)
            if use_bar
            else None
        )

    def update(self, status: Status) -> None:
        self._counts[status.value] += 1
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(1)
            if now - self._last_log >= 0.5:
                self._last_log = now
                self._bar.set_postfix(
                    success=self._counts["success"], failed=self._counts["failed"], refresh=False
                )
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            print(f"top-import: {self._label}: {self.line()}", file=sys.stderr, flush=True)

    def line(self) -> str:
        done = sum(self._counts.values())
        rate = done / max(time.monotonic() - self._started, 1e-9)
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self._counts.items()))
        rows = f"{done} row" if done == 1 else f"{done} rows"
        return f"{rows} settled ({parts}), {rate:.1f} rows/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                success=self._counts["success"], failed=self._counts["failed"], refresh=False
            )
            self._bar.close()
