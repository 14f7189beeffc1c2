"""How close the dispatcher comes to a bare aiohttp loop, and how well it uses a quota.

    python benchmarks/bench_send.py [--quick]

The simulator runs in a separate process (so its CPU does not count against the client):

1. throughput: the same N signed calls to a simulator answering after 20 ms, (a) from a bare
   loop of 64 aiohttp tasks that sign and post, (b) through the Dispatcher with concurrency 64
   and an unreachable qps; prints calls/s of both and their ratio (target >= 0.9);
2. official SDK: the same simulator, called one call after another through the platform's
   Python SDK (``topsdk``, ``top.api.base.RestApi``: a new HTTP connection per call, md5 signing,
   epoch-ms timestamps) the way a user would script it; prints its calls/s and the Dispatcher's
   (the best of 1.) over it (target >= 30x);
3. pacing: simulator quota 50 vs dispatcher --qps 50 for ~20 s, and 2000 vs 2000 (latency 0)
   for ~10 s; prints the share of the quota used in the full seconds and the share throttled.

With ``--end-to-end [--rows N] [--rounds R]`` it measures instead the whole command a user
runs: ``top-import run`` of a CSV of N rows (default 20,000) in a process of its own
(start-up, pre-flight, canary, journal, workbook) at ``--qps 10000 --concurrency 64``, against
the bare loop of 1. in a process of its own (start-up and imports too), alternately R rounds
(default 3), the simulator answering after 20 ms; prints each round's ratio of the two wall
times (bare / run: 1.0 means the command costs nothing over the calls; target >= 0.8). With
``--baseline DIR`` (another checkout, e.g. a ``git worktree`` of the commit before a change)
each round also runs that checkout's command, so both ratios come from the same rounds.

Prints, never asserts: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
from yarl import URL

from importer.dispatcher import Dispatcher, DispatchSettings
from importer.gateway import Gateway
from importer.protocol import FORM_CONTENT_TYPE, Credentials, RequestBuilder
from importer.rows import Outcome, RequestRecord, Status, payload_hash
from importer.spec import load_spec

SPEC = load_spec(None)
APP_KEY, SECRET = "12345678", "sim-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatorProcess:
    """The simulator (``serve_forever``) in a child process on a free port, for a ``with``."""

    def __init__(self, **settings: object) -> None:
        self.port = free_port()
        args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        code = (
            "import asyncio; from importer.simulator import serve_forever, SimulatorSettings; "
            f"asyncio.run(serve_forever(SimulatorSettings({args}), port={self.port}))"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/router/rest"
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SimulatorProcess:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("the simulator did not start")

    def __exit__(self, *exc_info: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    async def stats(self) -> dict:
        async with aiohttp.ClientSession() as s, s.get(self.base + "/_sim/stats") as r:
            return await r.json()

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as s, s.post(self.base + "/_sim/reset") as r:
            await r.read()


def record(i: int) -> RequestRecord:
    """The i-th distinct valid record of the built-in API."""
    payload = json.dumps(
        {
            "user_identify": f"u{i}",
            "case_id": str(396743391396743391 + i),
            "tenant_id": 200110004,
            "open_conversation_id": "cid==",
        },
        separators=(",", ":"),
    )
    return RequestRecord(i + 2, payload, payload_hash(payload))


def make_records(n: int, start: int = 0) -> list[RequestRecord]:
    return [record(i) for i in range(start, start + n)]


def builder() -> RequestBuilder:
    return RequestBuilder(SPEC, Credentials(APP_KEY, SECRET))


async def bare_loop(url: str, recs: list[RequestRecord], concurrency: int) -> float:
    """The baseline: sign and post every record from ``concurrency`` plain tasks; calls/s."""
    b = builder()
    pending = iter(recs)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"Content-Type": FORM_CONTENT_TYPE}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def task() -> None:
            for record in pending:
                request = b.build(record.payload_json, datetime.now(timezone.utc))
                target = URL(f"{url}?{request.query}", encoded=True)
                async with session.post(target, data=request.body) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(concurrency)))
        return len(recs) / (time.perf_counter() - started)


async def dispatched(
    url: str, recs: list[RequestRecord], settings: DispatchSettings
) -> tuple[float, dict[Status, int]]:
    """The same through the Dispatcher; calls/s and the outcome counts."""
    counts: dict[Status, int] = {}

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1

    async with Gateway(url, concurrency=settings.concurrency, timeout=15) as gateway:
        d = Dispatcher(builder(), gateway, settings, on_outcome=on_outcome)
        started = time.perf_counter()
        await d.run(iter(recs))
        return len(recs) / (time.perf_counter() - started), counts


async def throughput(calls: int, rounds: int, sdk_calls: int) -> None:
    print(
        f"throughput: {calls} calls, simulator latency 20 ms in its own process, 64 in flight; "
        f"best of {rounds} alternating rounds"
    )
    bare, ours, counts, offset = [], [], {}, 0
    with SimulatorProcess(latency_ms=20) as sim:
        await bare_loop(sim.url, make_records(200, 10_000_000), 64)  # warm up both sides
        for _ in range(rounds):
            bare.append(await bare_loop(sim.url, make_records(calls, offset), 64))
            offset += calls
            settings = DispatchSettings(qps=100_000, concurrency=64)
            rate, counts = await dispatched(sim.url, make_records(calls, offset), settings)
            ours.append(rate)
            offset += calls
        stats = await sim.stats()
        sdk_rate, sdk_counts, sdk_accepted = await official_sdk(
            sim, make_records(sdk_calls + 5, offset)
        )
    print(f"  (a) bare aiohttp loop : {max(bare):8.0f} calls/s   rounds {_rates(bare)}")
    print(f"  (b) Dispatcher        : {max(ours):8.0f} calls/s   rounds {_rates(ours)}")
    print(f"  ratio b/a             : {max(ours) / max(bare):8.2f}   (target >= 0.90)")
    print(
        f"  last Dispatcher outcomes {_counts(counts)}; simulator accepted "
        f"{stats['accepted']} of {stats['calls']} calls, duplicates {stats['duplicate_accepts']}"
    )
    print(f"official SDK (topsdk RestApi), {sdk_calls} calls one after another, same simulator:")
    print(f"  (c) SDK loop          : {sdk_rate:8.1f} calls/s   outcomes {sdk_counts}")
    print(
        f"      simulator 'accepted' grew by {sdk_accepted} for {sdk_calls + 5} calls (5 warm-up)"
    )
    print(f"  ratio b/c             : {max(ours) / sdk_rate:8.1f}x  (target >= 30x)")


def sdk_request_class() -> type:
    """A generic request for the spec's method on the SDK's ``RestApi`` (as its generated
    ``*Request`` classes are): every attribute not starting with ``_`` is an API parameter."""
    import warnings

    with warnings.catch_warnings():  # its `status is not 200` is a SyntaxWarning on 3.8+
        warnings.simplefilter("ignore", SyntaxWarning)
        from top.api.base import RestApi

    method = SPEC.method

    class GenericRequest(RestApi):
        def __init__(self, domain: str, port: int) -> None:
            RestApi.__init__(self, domain, port)
            self.group_customer_case_request = None

        def getapiname(self) -> str:
            return method

    return GenericRequest


def sdk_loop(port: int, recs: list[RequestRecord]) -> tuple[float, dict[str, int]]:
    """The official SDK in a plain loop, one call after another; calls/s and outcome counts."""
    import top
    from top.api.base import TopException

    request_class = sdk_request_class()
    app = top.appinfo(APP_KEY, SECRET)
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for record in recs:
        req = request_class("127.0.0.1", port)  # the gateway is host, port + "/router/rest"
        req.set_app_info(app)
        req.group_customer_case_request = record.payload_json
        try:
            answer = req.getResponse(timeout=15)
            body = answer[SPEC.response_envelope]["result"]
            key = "success" if body.get("success") else "result.success false"
        except TopException as exc:
            key = f"error {exc.errorcode} {exc.subcode}"
        counts[key] = counts.get(key, 0) + 1
    return len(recs) / (time.perf_counter() - started), counts


async def official_sdk(sim: SimulatorProcess, recs: list[RequestRecord]) -> tuple[float, str, int]:
    """``sdk_loop`` against ``sim`` (blocking, in a thread); calls/s, outcomes, accepts added."""
    before = (await sim.stats())["accepted"]
    sdk_loop(sim.port, recs[:5])  # warm up: imports, first connections
    rate, counts = await asyncio.to_thread(sdk_loop, sim.port, recs[5:])
    accepted = (await sim.stats())["accepted"] - before
    return rate, ", ".join(f"{k} {n}" for k, n in sorted(counts.items())), accepted


def _rates(rates: list[float]) -> str:
    return " ".join(f"{r:.0f}" for r in rates)


async def pacing(qps: int, seconds: float, latency_ms: float, concurrency: int) -> None:
    n = int(qps * seconds)
    print(
        f"pacing: simulator quota {qps}/s, dispatcher --qps {qps}, {n} calls "
        f"(~{seconds:g} s), latency {latency_ms:g} ms, concurrency {concurrency}"
    )
    with SimulatorProcess(qps=qps, latency_ms=latency_ms) as sim:
        settings = DispatchSettings(qps=qps, concurrency=concurrency, max_ban=300)
        rate, counts = await dispatched(sim.url, make_records(n), settings)
        stats = await sim.stats()
    per_second = [n for _, n in sorted(stats["per_second"].items(), key=lambda kv: int(kv[0]))]
    full = per_second[1:-1] or per_second
    used = sum(full) / (len(full) * qps)
    throttled = stats["rejected"].get("7", 0)
    print(
        f"  quota used in full seconds: {used:6.1%}  (min {min(full)}, max {max(full)} calls "
        f"in a second of {len(full)})"
    )
    print(
        f"  throttled (code 7)        : {throttled / stats['calls']:6.2%}  "
        f"({throttled} of {stats['calls']} calls)"
    )
    print(f"  end-to-end rate           : {rate:8.1f} calls/s   outcomes {_counts(counts)}")


def _counts(counts: dict[Status, int]) -> str:
    return ", ".join(f"{status.value} {n}" for status, n in sorted(counts.items()))


def bare_process(url: str, rows: int, offset: int) -> None:
    """The bare loop of ``rows`` records as a process's whole work (``--bare-loop``)."""
    rate = asyncio.run(bare_loop(url, make_records(rows, offset), 64))
    print(f"{rate:.1f}")


def write_tickets(path, rows: int, offset: int) -> None:
    """A CSV of ``rows`` distinct valid rows of the built-in API (as ``record`` makes them)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["corp_id", "user_identify", "case_id", "tenant_id", "open_conversation_id"])
        for i in range(offset, offset + rows):
            out.writerow([f"ding{i:032d}", f"u{i}", str(396743391396743391 + i), 200110004,
                          "cid=="])  # fmt: skip


def timed(args: list[str], **kw: object) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - started


def end_to_end(rows: int, rounds: int, baseline: Path | None = None) -> None:
    import os
    import statistics
    import tempfile

    print(
        f"end to end: top-import run of {rows:,} rows (--qps 10000 --concurrency 64, its own "
        f"process) vs the bare loop (its own process), simulator latency 20 ms; {rounds} rounds"
    )
    sides = {"run": None, **({"baseline": baseline.resolve()} if baseline else {})}
    ratios: dict[str, list[float]] = {side: [] for side in sides}
    with SimulatorProcess(latency_ms=20) as sim, tempfile.TemporaryDirectory() as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
        env.update(TOP_APP_KEY=APP_KEY, TOP_APP_SECRET=SECRET, TOP_GATEWAY=sim.url)
        me = [sys.executable, __file__, "--bare-loop", sim.url, str(rows)]
        timed([*me, "0"])  # warm up: the simulator's first connections, the page cache
        for round_ in range(rounds):
            folder = Path(scratch) / f"round-{round_}"
            folder.mkdir()
            offset = (round_ + 1) * 10 * rows
            bare = timed([*me, str(offset)])
            line = f"  round {round_ + 1}: bare {bare:6.2f} s"
            for i, (side, source) in enumerate(sides.items()):
                here = folder / side
                here.mkdir()
                # rows no other command of the run sent
                write_tickets(here / "t.csv", rows, offset + (i + 1) * rows)
                side_env = {**env, "PYTHONPATH": str(source)} if source else env
                took = timed(
                    [sys.executable, "-m", "importer", "run", "t.csv", "--qps", "10000",
                     "--concurrency", "64", "--no-progress"],
                    cwd=here, env=side_env, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                ratios[side].append(bare / took)
                line += f"   {side} {took:6.2f} s (ratio {bare / took:4.2f})"
            print(line)
    for side, figures in ratios.items():
        print(
            f"  ratio bare/{side}: min {min(figures):.2f}  median "
            f"{statistics.median(figures):.2f}  max {max(figures):.2f}   (target >= 0.80)"
        )


async def main(quick: bool) -> None:
    await throughput(
        1_000 if quick else 5_000, rounds=2 if quick else 3, sdk_calls=100 if quick else 200
    )
    print()
    await pacing(50, 5 if quick else 20, latency_ms=20, concurrency=8)
    print()
    await pacing(2000, 3 if quick else 10, latency_ms=0, concurrency=32)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--end-to-end", action="store_true", help="the whole CLI vs a bare loop")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of --end-to-end")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, --end-to-end")
    parser.add_argument("--baseline", type=Path, help="--end-to-end: another checkout too")
    parser.add_argument(
        "--bare-loop", nargs=3, metavar=("URL", "ROWS", "OFFSET"), help=argparse.SUPPRESS
    )
    given = parser.parse_args()
    if given.bare_loop:
        bare_process(given.bare_loop[0], int(given.bare_loop[1]), int(given.bare_loop[2]))
    elif given.end_to_end:
        end_to_end(given.rows, given.rounds, given.baseline)
    else:
        asyncio.run(main(given.quick))
