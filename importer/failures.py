"""Business failures as a run policy: the failure-rate breaker and the digest its messages quote.

On the platform a failed business call (``isv.*``, ``result.success`` false) counts against the
app's success rate, which quota tiers require to stay high. A file whose rows are mostly wrong
must therefore stop early instead of spending thousands of failing calls:

* the **canary** (in the dispatcher) sends the first rows at low concurrency and judges them
  with ``too_many`` before the bulk;
* ``FailureBreaker`` watches the last ``window`` final answers during the bulk.

Only final platform answers count: a success, or a business failure (``ErrorClass.BUSINESS`` /
``FAILED``). Throttles, transient errors that ran out of retries and rows never sent say nothing
about the data and are not recorded at all. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter, deque


def too_many(failed: int, total: int, max_rate: float) -> bool:
    """More than ``max_rate`` of ``total`` answers failed (exactly ``max_rate`` is fine)."""
    return total > 0 and failed > max_rate * total


class FailureBreaker:
    """Trips when more than ``max_rate`` of the last ``window`` answers were business failures.

    It may only trip once the window is full: a share of a handful of answers is noise, and the
    canary already judges the first rows of a run. So a run never stops on this breaker before
    ``window`` answers, and at most ``max_rate * window`` failures pass before it can.
    """

    def __init__(self, max_rate: float, window: int = 200) -> None:
        if not 0 <= max_rate <= 1 or window < 1:
            raise ValueError("need 0 <= max_rate <= 1 and window >= 1")
        self.max_rate = max_rate
        self.window = window
        self._last: deque[bool] = deque(maxlen=window)
        self.failed = 0  # business failures among the last ``window``

    def __repr__(self) -> str:
        return (
            f"<FailureBreaker {self.failed}/{len(self._last)} failed of window {self.window}, "
            f"max rate {self.max_rate:g}, tripped={self.tripped}>"
        )

    def record(self, business_failure: bool) -> bool:
        """Count one final answer; True when the breaker is (now) tripped."""
        if len(self._last) == self.window and self._last[0]:
            self.failed -= 1
        self._last.append(business_failure)
        self.failed += business_failure
        return self.tripped

    @property
    def tripped(self) -> bool:
        return len(self._last) == self.window and too_many(self.failed, self.window, self.max_rate)


class FailureDigest:
    """Business failures per code, each with the first source row that met it, for messages."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.example: dict[str, int] = {}

    def add(self, key: str, source_row: int) -> None:
        self.counts[key] += 1
        self.example.setdefault(key, source_row)

    def top(self, n: int = 3) -> str:
        """``isv.invalid-parameter ×6 (e.g. row 3), code 500 ×2 (e.g. row 9)``: most first."""
        # most_common keeps first-seen order among equal counts
        parts = [
            f"{key} ×{count} (e.g. row {self.example[key]})"
            for key, count in self.counts.most_common(n)
        ]
        if len(self.counts) > n:
            parts.append(f"{len(self.counts) - n} more codes")
        return ", ".join(parts)


__all__ = ["FailureBreaker", "FailureDigest", "too_many"]
