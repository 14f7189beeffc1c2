"""How much of an unknown quota ``--qps auto`` uses, and how often it is throttled.

    python benchmarks/bench_auto_qps.py [--quick]

The simulator runs in a separate process with a quota of 40 calls per clock second per app key
(code 7 and "This ban will last for 1 more seconds" beyond it); the dispatcher does not know the
limit: ``qps_auto`` starts at 5 calls/s with ``qps_max`` 1000. After a warm-up (30 s; 15 s with
``--quick``) it measures a window (60 s; 20 s with ``--quick``) from the simulator's own
per-second counts:

* quota used: calls accepted in the window's whole seconds / (40 x seconds); target >= 85 %;
* throttled: code-7 answers / all answers in the window; target < 2 %.

It also prints the rate the dispatcher paced to at each second of the run. Prints, never
asserts: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator

from bench_send import SimulatorProcess, record

from importer.dispatcher import Dispatcher, DispatchSettings
from importer.gateway import Gateway
from importer.protocol import Credentials, RequestBuilder
from importer.rows import Outcome, RequestRecord
from importer.spec import load_spec

SPEC = load_spec(None)
APP_KEY, SECRET = "12345678", "sim-secret-0123456789"
QUOTA = 40


def endless_records(done: list[bool]) -> Iterator[RequestRecord]:
    """Records until ``done[0]`` (a stopped run drains its input as not_sent: it must end)."""
    i = 0
    while not done[0]:
        yield record(i)
        i += 1


async def run(warm_up: float, window: int) -> None:
    print(
        f"--qps auto against a simulator quota of {QUOTA}/s (unknown to the run), latency "
        f"20 ms + up to 10 ms, concurrency 8; warm-up {warm_up:g} s, then a {window} s window"
    )
    settings = DispatchSettings(qps=5, concurrency=8, qps_auto=True, qps_max=1000, max_ban=300)
    builder = RequestBuilder(SPEC, Credentials(APP_KEY, SECRET))
    rates: list[float] = []

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        pass

    with SimulatorProcess(qps=QUOTA, latency_ms=20, jitter_ms=10, seed=1) as sim:
        async with Gateway(sim.url, concurrency=settings.concurrency, timeout=15) as gateway:
            dispatcher = Dispatcher(builder, gateway, settings, on_outcome=on_outcome)
            done = [False]
            task = asyncio.create_task(dispatcher.run(endless_records(done)))
            started = time.time()
            # The window is whole clock seconds (the simulator counts per epoch second).
            first = int(started + warm_up) + 1
            last = first + window  # exclusive
            while time.time() < last + 0.5:
                rates.append(dispatcher.pacer.qps)
                await asyncio.sleep(1.0)
            done[0] = True
            dispatcher.stop()
            await task
        stats = await sim.stats()
    per_second = {int(s): n for s, n in stats["per_second"].items()}
    calls = sum(per_second.get(s, 0) for s in range(first, last))
    # The simulator's per-second counts hold every call; code 7 is answered to calls beyond QUOTA.
    throttled = sum(max(0, per_second.get(s, 0) - QUOTA) for s in range(first, last))
    accepted = calls - throttled
    used = accepted / (QUOTA * window)
    print(
        f"  quota used in the window : {used:6.1%}  ({accepted} accepted of {QUOTA * window}; "
        "target >= 85 %)"
    )
    print(
        f"  throttled in the window  : {throttled / max(calls, 1):6.2%}  ({throttled} of {calls} "
        "calls; target < 2 %)"
    )
    policy = dispatcher.rate_policy
    print(f"  throttle answers, whole run: {stats['rejected'].get('7', 0)}; policy {policy!r}")
    print("  paced rate each second   : " + " ".join(f"{r:.0f}" for r in rates))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s warm-up, 20 s window")
    quick = parser.parse_args().quick
    asyncio.run(run(15.0 if quick else 30.0, 20 if quick else 60))
