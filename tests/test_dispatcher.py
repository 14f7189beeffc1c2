"""The dispatcher and the gateway: every answer class, stops and aborts, and the real simulator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from helpers import FakeClock

from importer.dispatcher import (
    CANARY_CONCURRENCY,
    Dispatcher,
    DispatchResult,
    DispatchSettings,
)
from importer.gateway import Gateway
from importer.pacing import Pacer
from importer.protocol import (
    FORM_CONTENT_TYPE,
    AnswerKind,
    Credentials,
    Reply,
    RequestBuilder,
    SignedRequest,
    transport_failure,
)
from importer.rows import Outcome, RequestRecord, Status, payload_hash
from importer.spec import load_spec
from importer.steps import IN_FLIGHT_INTERRUPTED, MAX_THROTTLE_RETRIES, StopReason, backoff_delay

SPEC = load_spec(None)
APP_KEY = "12345678"
SECRET = "sim-secret-0123456789"
SESSION = "session-6101a2b3c4d5e6f7"
BUILDER = RequestBuilder(SPEC, Credentials(APP_KEY, SECRET, SESSION))
FAST = DispatchSettings(qps=1_000_000, concurrency=4, retries=5, backoff_base=0.01)


def make_record(i: int, tenant: int = 200110004) -> RequestRecord:
    payload = json.dumps(
        {
            "user_identify": f"u{i}",
            "case_id": str(396743391396743391 + i),
            "tenant_id": tenant,
            "open_conversation_id": "cid==",
        },
        separators=(",", ":"),
    )
    return RequestRecord(i + 2, payload, payload_hash(payload))


def records(n: int) -> list[RequestRecord]:
    return [make_record(i) for i in range(n)]


def row_of(request: SignedRequest) -> int:
    """The source_row a request was built from (from its case_id)."""
    value = unquote(request.body.decode().split("=", 1)[1])
    return int(json.loads(value)["case_id"]) - 396743391396743391 + 2


SUCCESS = Reply(AnswerKind.ACCEPTED, code="200", request_id="rid-1", system_time="2024-01-01 1:2:3")
BUSINESS = Reply(AnswerKind.DECLINED, code="500", msg="case not found", request_id="rid-2")
ISV = Reply(
    AnswerKind.REJECTED,
    code="50",
    msg="Remote service error",
    sub_code="isv.invalid-parameter",
    sub_msg="非法参数",
    request_id="rid-3",
)
ISP = Reply(
    AnswerKind.TRANSIENT,
    code="15",
    msg="Remote service error",
    sub_code="isp.service-unavailable",
    sub_msg="服务不可用",
)
HTTP502 = transport_failure("HTTP 502 from the gateway")
BAD_SIGN = Reply(AnswerKind.FATAL, code="25", msg="Invalid signature", request_id="rid-4")


def throttled(seconds: float) -> Reply:
    return Reply(
        AnswerKind.THROTTLED,
        code="7",
        msg="App Call Limited",
        sub_code="accesscontrol.limited-by-app-access-count",
        sub_msg=f"This ban will last for {seconds:g} more seconds",
        ban_seconds=seconds,
    )


class FakeGateway:
    """Answers from ``script(row, attempt)`` (a Reply, or a coroutine giving one)."""

    where = "fake gateway"  # how messages name it

    def __init__(self, script: Callable, clock: Callable[[], float] | None = None) -> None:
        self.script = script
        self.clock = clock
        self.requests: list[tuple[int, SignedRequest, float | None]] = []
        self.attempts: Counter[int] = Counter()
        self.in_flight = 0
        self.started = asyncio.Event()

    async def post(self, request: SignedRequest, spec) -> Reply:
        row = row_of(request)
        self.attempts[row] += 1
        self.requests.append((row, request, self.clock() if self.clock else None))
        self.in_flight += 1
        self.started.set()
        try:
            await asyncio.sleep(0)
            reply = self.script(row, self.attempts[row])
            if asyncio.iscoroutine(reply):
                reply = await reply
            return reply
        finally:
            self.in_flight -= 1


class Journal:
    """Collects callbacks the way the pipeline's journal would."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.outcomes: dict[int, list[Outcome]] = {}
        self.order: list[int] = []

    def claim(self, record: RequestRecord) -> None:
        assert record.source_row not in self.outcomes, "claim after the outcome"
        self.started.append(record.source_row)

    def on_outcome(self, record: RequestRecord, outcome: Outcome) -> None:
        self.outcomes.setdefault(record.source_row, []).append(outcome)
        self.order.append(record.source_row)

    def outcome(self, row: int) -> Outcome:
        (only,) = self.outcomes[row]
        return only

    def statuses(self) -> Counter[Status]:
        return Counter(self.outcome(r).status for r in self.outcomes)

    def assert_one_each(self, recs: Iterable[RequestRecord]) -> None:
        rows = [r.source_row for r in recs]
        assert sorted(self.outcomes) == sorted(rows)
        assert all(len(v) == 1 for v in self.outcomes.values())
        # every row that was started got a final answer (or unknown), never not_sent
        for row in self.started:
            assert self.outcome(row).status is not Status.NOT_SENT
        assert len(self.started) == len(set(self.started))


class Sleeps:
    """A sleep that returns at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def dispatcher(
    gateway,
    journal: Journal,
    settings: DispatchSettings = FAST,
    **kwargs,
) -> Dispatcher:
    kwargs.setdefault("sleep", Sleeps())
    return Dispatcher(
        BUILDER,
        gateway,
        settings,
        claim=journal.claim,
        on_outcome=journal.on_outcome,
        **kwargs,
    )


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert SESSION not in text
        assert "sign=" not in text


def all_texts(journal: Journal, result: DispatchResult) -> list[str]:
    texts = [result.message]
    for (outcome,) in journal.outcomes.values():
        texts += [str(v) for v in outcome.values()]
    return texts


# -- the answer classes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "error"),
    [
        (SUCCESS, Status.SUCCESS, ""),
        (BUSINESS, Status.FAILED, ""),
        (ISV, Status.FAILED, ""),
    ],
    ids=["success", "business", "isv"],
)
async def test_final_answers_are_settled_after_one_call(reply, status, error):
    journal = Journal()
    gateway = FakeGateway(lambda row, n: reply)
    result = await dispatcher(gateway, journal).run(records(10))

    assert result == DispatchResult(StopReason.NONE, "")
    journal.assert_one_each(records(10))
    for row in range(2, 12):
        outcome = journal.outcome(row)
        assert outcome.status is status
        assert (outcome.code, outcome.msg, outcome.sub_code, outcome.sub_msg) == (
            reply.code,
            reply.msg,
            reply.sub_code,
            reply.sub_msg,
        )
        assert outcome.request_id == reply.request_id
        assert outcome.system_time == reply.system_time
        assert outcome.attempts == 1
        assert outcome.error == error
    assert sorted(journal.started) == list(range(2, 12))
    assert len(gateway.requests) == 10


async def test_business_failure_without_a_message_says_why():
    journal = Journal()
    reply = Reply(AnswerKind.DECLINED, code="200")
    await dispatcher(FakeGateway(lambda row, n: reply), journal).run(records(1))
    assert journal.outcome(2).error == "the API answered result.success = false"


@pytest.mark.parametrize("reply", [HTTP502, ISP], ids=["http502", "isp"])
async def test_transient_errors_are_retried_then_failed_with_the_last_error(reply):
    journal = Journal()
    sleeps = Sleeps()
    settings = DispatchSettings(qps=1_000_000, concurrency=2, retries=3)
    gateway = FakeGateway(lambda row, n: reply)
    result = await dispatcher(gateway, journal, settings, sleep=sleeps).run(records(2))

    assert result.stop_reason is StopReason.NONE
    journal.assert_one_each(records(2))
    outcome = journal.outcome(2)
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 4
    assert gateway.attempts == {2: 4, 3: 4}
    if reply is HTTP502:
        assert outcome.error == "HTTP 502 from the gateway (after 4 attempts)"
        assert outcome.code == ""
    else:  # the platform's codes are kept
        assert (outcome.code, outcome.sub_code) == ("15", "isp.service-unavailable")
        assert outcome.error == (
            "code 15 Remote service error (isp.service-unavailable: 服务不可用) (after 4 attempts)"
        )
    assert len(sleeps.delays) == 6  # three backoffs per row


async def test_transient_then_success_counts_every_attempt_and_backs_off_by_the_policy():
    journal = Journal()
    sleeps = Sleeps()
    settings = DispatchSettings(qps=1_000_000, concurrency=1, backoff_base=0.5, backoff_cap=30)
    gateway = FakeGateway(lambda row, n: SUCCESS if n == 3 else HTTP502)
    await dispatcher(gateway, journal, settings, sleep=sleeps, rng=random.Random(7)).run(records(1))

    outcome = journal.outcome(2)
    assert outcome.status is Status.SUCCESS
    assert outcome.attempts == 3
    assert outcome.error == ""
    expected = random.Random(7)
    assert sleeps.delays == [backoff_delay(k, 0.5, 30, expected) for k in range(2)]


async def test_each_attempt_is_signed_afresh_with_a_new_timestamp():
    journal = Journal()
    ticks = itertools.count()
    start = datetime(2024, 5, 1, 4, 0, 0, tzinfo=timezone.utc)

    def clock() -> datetime:
        return start + timedelta(seconds=61 * next(ticks))

    gateway = FakeGateway(lambda row, n: SUCCESS if n == 3 else ISP)
    await dispatcher(gateway, journal, clock=clock).run(records(1))

    queries = [parse_qs(request.query) for _, request, _ in gateway.requests]
    assert [q["timestamp"][0] for q in queries] == [
        "2024-05-01 12:00:00",
        "2024-05-01 12:01:01",
        "2024-05-01 12:02:02",
    ]
    assert len({q["sign"][0] for q in queries}) == 3


# -- backoff policy ----------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_bound_with_a_cap():
    rng = random.Random(42)
    for retry in range(12):
        bound = min(30.0, 0.5 * 2**retry)
        delays = [backoff_delay(retry, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > 0.8 * bound  # full jitter reaches the bound...
        assert min(delays) < 0.2 * bound  # ...and near zero
    seeded = [backoff_delay(k, 0.5, 30.0, random.Random(3)) for k in range(5)]
    assert seeded == [backoff_delay(k, 0.5, 30.0, random.Random(3)) for k in range(5)]


# -- throttling --------------------------------------------------------------------------------


async def test_a_throttle_pauses_every_worker_for_the_ban_and_spends_no_retries():
    clock = FakeClock(100.0)
    journal = Journal()
    banned_at: list[float] = []

    def script(row: int, n: int) -> Reply:
        if row == 5 and n == 1:
            banned_at.append(clock())
            return throttled(5)
        return SUCCESS

    gateway = FakeGateway(script, clock=clock)
    settings = DispatchSettings(qps=50, concurrency=4, retries=0)
    pacer = Pacer(settings.qps, time=clock, sleep=clock.sleep)
    result = await dispatcher(gateway, journal, settings, pacer=pacer).run(records(40))

    assert result.stop_reason is StopReason.NONE
    journal.assert_one_each(records(40))
    assert journal.statuses() == {Status.SUCCESS: 40}
    assert journal.outcome(5).attempts == 2  # retried although retries=0
    (ban,) = banned_at
    starts = [t for _, _, t in gateway.requests]
    assert not [t for t in starts if ban < t < ban + 5]
    assert sum(1 for t in starts if t >= ban + 5) >= 30


async def test_a_row_throttled_without_end_is_failed_eventually():
    clock = FakeClock(100.0)
    journal = Journal()
    gateway = FakeGateway(lambda row, n: throttled(1))
    pacer = Pacer(1000, time=clock, sleep=clock.sleep)
    settings = DispatchSettings(qps=1000, concurrency=1)
    await dispatcher(gateway, journal, settings, pacer=pacer).run(records(1))
    outcome = journal.outcome(2)
    assert outcome.status is Status.FAILED
    assert outcome.attempts == MAX_THROTTLE_RETRIES + 1
    assert "still throttled" in outcome.error
    assert outcome.sub_code == "accesscontrol.limited-by-app-access-count"


async def test_a_ban_longer_than_max_ban_stops_the_run():
    journal = Journal()
    release = asyncio.Event()

    async def slow_success() -> Reply:
        await release.wait()
        return SUCCESS

    def script(row: int, n: int):
        if row == 3:
            release.set()
            return throttled(86400)
        return slow_success()

    gateway = FakeGateway(script)
    settings = DispatchSettings(qps=1_000_000, concurrency=2, max_ban=300)
    result = await dispatcher(gateway, journal, settings).run(records(100))

    assert result.stop_reason is StopReason.BAN_TOO_LONG
    assert "86400 s" in result.message
    assert "--max-ban 300 s" in result.message
    assert "code 7 App Call Limited" in result.message
    assert "quota is spent" in result.message
    journal.assert_one_each(records(100))
    banned = journal.outcome(3)
    assert banned.status is Status.FAILED
    assert banned.code == "7"
    assert journal.outcome(2).status is Status.SUCCESS  # in flight: finished normally
    assert journal.statuses()[Status.NOT_SENT] == 98
    assert len(gateway.requests) == 2


# -- fatal answers, stop and abort -------------------------------------------------------------


async def test_a_fatal_answer_stops_new_calls_and_lets_calls_in_flight_finish():
    journal = Journal()
    release = asyncio.Event()

    async def held(reply: Reply) -> Reply:
        await release.wait()
        return reply

    def script(row: int, n: int):
        if row == 3:
            return BAD_SIGN
        return held(SUCCESS if row == 2 else HTTP502)

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        journal.on_outcome(record, outcome)
        release.set()  # the calls in flight answer once the fatal one has

    gateway = FakeGateway(script)
    settings = DispatchSettings(qps=1_000_000, concurrency=4)
    d = Dispatcher(
        BUILDER, gateway, settings, claim=journal.claim, on_outcome=on_outcome, sleep=Sleeps()
    )
    result = await d.run(records(50))

    assert result.stop_reason is StopReason.FATAL
    assert result.message == (
        "The platform refused the call: code 25 Invalid signature; the signature is wrong: "
        "check TOP_APP_SECRET belongs to this app key, and --sign-method."
    )
    journal.assert_one_each(records(50))
    fatal = journal.outcome(3)
    assert (fatal.status, fatal.code, fatal.attempts) == (Status.FAILED, "25", 1)
    assert journal.outcome(2).status is Status.SUCCESS
    assert len(journal.started) <= settings.concurrency
    for row in journal.started:
        if row not in (2, 3):  # in flight with a 502: not retried after the stop
            outcome = journal.outcome(row)
            assert outcome.status is Status.FAILED
            assert outcome.attempts == 1
            assert "the run stopped before a retry" in outcome.error
    assert journal.statuses()[Status.NOT_SENT] == 50 - len(journal.started)
    assert_no_secrets(*all_texts(journal, result), repr(d))


async def test_stop_mid_run_settles_every_untried_row_as_not_sent():
    journal = Journal()
    gateway = FakeGateway(lambda row, n: SUCCESS)
    d: Dispatcher

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        journal.on_outcome(record, outcome)
        if len(journal.order) == 10:
            d.stop()

    d = Dispatcher(
        BUILDER, gateway, FAST, claim=journal.claim, on_outcome=on_outcome, sleep=Sleeps()
    )
    result = await d.run(records(200))

    assert result == DispatchResult(StopReason.INTERRUPTED, "")
    journal.assert_one_each(records(200))
    statuses = journal.statuses()
    assert statuses[Status.SUCCESS] == len(journal.started) >= 10
    assert statuses[Status.SUCCESS] <= 10 + FAST.concurrency
    assert statuses[Status.NOT_SENT] == 200 - statuses[Status.SUCCESS]


async def test_the_first_stop_reason_is_the_one_reported():
    journal = Journal()
    gateway = FakeGateway(lambda row, n: SUCCESS)
    d = dispatcher(gateway, journal)
    d.stop(StopReason.DEADLINE)
    d.stop(StopReason.INTERRUPTED)
    result = await d.run(records(30))
    assert result.stop_reason is StopReason.DEADLINE
    assert journal.statuses() == {Status.NOT_SENT: 30}
    assert gateway.requests == []


class Parked:
    """A sleep that never returns by itself: a row in backoff (or a pacer wait) stays there."""

    def __init__(self) -> None:
        self.parked = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.parked.set()
        await asyncio.Event().wait()


async def test_stop_during_a_backoff_fails_the_row_with_its_last_error():
    journal = Journal()
    parked = Parked()
    gateway = FakeGateway(lambda row, n: HTTP502 if row == 2 else SUCCESS)
    settings = DispatchSettings(qps=1_000_000, concurrency=1)
    d = dispatcher(gateway, journal, settings, sleep=parked)
    run = asyncio.create_task(d.run(records(5)))
    await parked.parked.wait()
    d.stop()
    result = await run

    assert result.stop_reason is StopReason.INTERRUPTED
    journal.assert_one_each(records(5))
    outcome = journal.outcome(2)
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 1
    assert outcome.error == (
        "HTTP 502 from the gateway (after 1 attempts; the run stopped before a retry)"
    )
    assert [journal.outcome(r).status for r in range(3, 7)] == [Status.NOT_SENT] * 4


async def test_stop_during_a_ban_pause_does_not_wait_for_the_ban():
    journal = Journal()
    parked = Parked()
    gateway = FakeGateway(lambda row, n: throttled(200) if n == 1 else SUCCESS)
    settings = DispatchSettings(qps=1000, concurrency=3, max_ban=300)
    pacer = Pacer(settings.qps, sleep=parked)
    d = dispatcher(gateway, journal, settings, pacer=pacer)
    run = asyncio.create_task(d.run(records(20)))
    await parked.parked.wait()
    assert "paused_for=" in repr(d)
    d.stop()
    result = await run

    assert result.stop_reason is StopReason.INTERRUPTED
    journal.assert_one_each(records(20))
    for row in journal.started:
        outcome = journal.outcome(row)
        assert (outcome.status, outcome.code, outcome.attempts) == (Status.FAILED, "7", 1)
    assert journal.statuses()[Status.NOT_SENT] == 20 - len(journal.started)


async def test_abort_cancels_calls_in_flight_as_unknown():
    journal = Journal()
    concurrency = 4

    async def never() -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    gateway = FakeGateway(lambda row, n: never())
    settings = DispatchSettings(qps=1_000_000, concurrency=concurrency)
    d = dispatcher(gateway, journal, settings)
    run = asyncio.create_task(d.run(records(30)))
    while gateway.in_flight < concurrency:
        await asyncio.sleep(0)
    assert "in_flight=4" in repr(d)
    d.stop()  # first Ctrl-C: waits for the calls in flight
    await asyncio.sleep(0)
    assert not run.done()
    d.abort()  # second Ctrl-C
    result = await run

    assert result.stop_reason is StopReason.INTERRUPTED
    journal.assert_one_each(records(30))
    assert len(journal.started) == concurrency
    for row in journal.started:
        outcome = journal.outcome(row)
        assert outcome.status is Status.UNKNOWN
        assert outcome.error == IN_FLIGHT_INTERRUPTED
        assert outcome.attempts == 1
    assert journal.statuses()[Status.NOT_SENT] == 30 - concurrency


async def test_cancelling_the_run_itself_propagates():
    async def never() -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    gateway = FakeGateway(lambda row, n: never())
    run = asyncio.create_task(dispatcher(gateway, Journal()).run(records(10)))
    await gateway.started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


# -- streaming ---------------------------------------------------------------------------------


async def test_a_huge_input_is_pulled_lazily_and_still_settled_row_by_row():
    total = 1_000_000
    concurrency = 4
    payload = make_record(0).payload_json
    pulled = 0
    settled = 0
    most_ahead = 0
    pulled_at_stop: list[int] = []

    def source():
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield RequestRecord(i + 2, payload, "h")

    d: Dispatcher

    def on_outcome(record: RequestRecord, outcome: Outcome) -> None:
        nonlocal settled, most_ahead
        settled += 1
        most_ahead = max(most_ahead, pulled - settled)
        if settled == 100:
            pulled_at_stop.append(pulled)
            d.stop()

    gateway = FakeGateway(lambda row, n: SUCCESS)
    settings = DispatchSettings(qps=1_000_000, concurrency=concurrency)
    d = Dispatcher(BUILDER, gateway, settings, on_outcome=on_outcome, sleep=Sleeps())
    await d.run(source())

    queue_size = 2 * concurrency
    assert pulled_at_stop[0] <= 100 + queue_size + concurrency + 1
    assert most_ahead <= queue_size + concurrency + 1
    assert settled == pulled == total  # the rest were drained as not_sent, one outcome each
    assert len(gateway.requests) <= 100 + concurrency


async def test_an_input_that_breaks_finishes_what_was_read_then_raises():
    journal = Journal()

    def source():
        yield from records(5)
        raise ValueError("the file ended mid-row")

    gateway = FakeGateway(lambda row, n: SUCCESS)
    d = dispatcher(gateway, journal)
    with pytest.raises(ValueError, match="mid-row"):
        await d.run(source())
    journal.assert_one_each(records(5))
    assert journal.statuses() == {Status.SUCCESS: 5}


# -- the gateway --------------------------------------------------------------------------------
# aioresponses (0.7.9) cannot build responses for aiohttp 3.14, so answers come from a tiny real
# aiohttp.web server on a loopback port; aioresponses is used for the exceptions only.

GW_URL = "http://gw.test/router/rest"
GW_PATTERN = re.compile(r"^http://gw\.test/router/rest\?.*$")


def signed() -> SignedRequest:
    return BUILDER.build(make_record(0).payload_json, datetime.now(timezone.utc))


@contextlib.asynccontextmanager
async def serving(handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/router/rest", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/router/rest"
    finally:
        await runner.cleanup()


async def test_gateway_posts_query_and_form_body_and_classifies_the_answer():
    seen: list[tuple[str, bytes, dict]] = []
    body = {
        SPEC.response_envelope: {
            "result": {"success": True, "code": "200", "system_time": "2024-01-01 00:00:00"},
            "request_id": "abc",
        }
    }

    async def handler(request: web.Request) -> web.Response:
        raw_query = request.raw_path.split("?", 1)[1]
        seen.append((raw_query, await request.read(), dict(request.headers)))
        return web.json_response(body)

    request = signed()
    async with serving(handler) as url, Gateway(url, concurrency=2, timeout=15) as gateway:
        reply = await gateway.post(request, SPEC)
    assert reply.kind is AnswerKind.ACCEPTED
    assert (reply.request_id, reply.code) == ("abc", "200")
    ((query, sent, headers),) = seen
    assert query == request.query
    assert sent == request.body
    assert headers["Content-Type"] == FORM_CONTENT_TYPE
    assert "gzip" in headers["Accept-Encoding"]


async def test_gateway_reads_gzip_answers():
    payload = json.dumps({SPEC.response_envelope: {"result": {"success": True}}}).encode()

    async def handler(request: web.Request) -> web.Response:
        response = web.Response(body=payload, content_type="application/json")
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with serving(handler) as url, Gateway(url, concurrency=1, timeout=15) as gateway:
        reply = await gateway.post(signed(), SPEC)
    assert reply.kind is AnswerKind.ACCEPTED


@pytest.mark.parametrize(
    ("status", "text", "kind", "error"),
    [
        (502, "<html>Bad Gateway</html>", AnswerKind.TRANSIENT, "HTTP 502 from the gateway"),
        (429, "slow down", AnswerKind.TRANSIENT, "HTTP 429 from the gateway"),
        (200, "<html>oops</html>", AnswerKind.UNCERTAIN, "unreadable answer ('<html>oops</html>')"),
        (
            504,
            "timeout",
            AnswerKind.UNCERTAIN,
            "HTTP 504 from the gateway, after the call was sent",
        ),
    ],
)
async def test_gateway_bad_answers_are_transient_or_uncertain(status, text, kind, error):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text)

    async with serving(handler) as url, Gateway(url, concurrency=1, timeout=15) as gateway:
        reply = await gateway.post(signed(), SPEC)
    assert reply.kind is kind
    assert reply.error == error


@pytest.mark.parametrize(
    ("exception", "kind", "error"),
    [
        # before anything is written: not sent, retried
        (
            aiohttp.ConnectionTimeoutError("connect"),
            AnswerKind.TRANSIENT,
            "could not connect within 7.5 s",
        ),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("gw.test", 80, False, True, None, None, None),
                OSError(111, "Connect call failed"),
            ),
            AnswerKind.TRANSIENT,
            "connection error: ClientConnectorError",
        ),
        # anything else may come after the request was written: uncertain
        (asyncio.TimeoutError(), AnswerKind.UNCERTAIN, "no answer within --timeout 15 s"),
        (aiohttp.SocketTimeoutError("read"), AnswerKind.UNCERTAIN, "no answer within"),
        (
            aiohttp.ServerDisconnectedError(),
            AnswerKind.UNCERTAIN,
            "connection lost after the call was sent: ServerDisconnectedError",
        ),
        (ConnectionResetError(104, "reset"), AnswerKind.UNCERTAIN, "connection lost after"),
        (aiohttp.ClientPayloadError("truncated"), AnswerKind.UNCERTAIN, "connection lost after"),
    ],
    ids=[
        "connect-timeout",
        "connector",
        "timeout",
        "read-timeout",
        "disconnected",
        "reset",
        "payload",
    ],
)
async def test_gateway_tells_not_sent_from_uncertain_by_aiohttps_exception_types(
    exception, kind, error
):
    """Pins the public aiohttp exception types the not-sent / uncertain split relies on."""
    with aioresponses() as mock:
        mock.post(GW_PATTERN, exception=exception)
        async with Gateway(GW_URL, concurrency=2, timeout=15) as gateway:
            reply = await gateway.post(signed(), SPEC)
    assert reply.kind is kind
    assert reply.error.startswith(error)
    assert reply.sent is (kind is AnswerKind.UNCERTAIN)


async def test_gateway_error_text_never_carries_the_query_string():
    request = signed()
    query = request.query
    leaky = aiohttp.ClientError(f"failed POST {GW_URL}?{query} (and again: {query})")
    with aioresponses() as mock:
        mock.post(GW_PATTERN, exception=leaky)
        async with Gateway(GW_URL, concurrency=2, timeout=15) as gateway:
            reply = await gateway.post(request, SPEC)
    assert reply.error.startswith("connection lost after the call was sent: ClientError: failed")
    assert_no_secrets(reply.error)
    assert "timestamp" not in reply.error


async def test_gateway_reports_a_refused_connection():
    async with Gateway("http://127.0.0.1:9/router/rest", concurrency=1, timeout=5) as gateway:
        reply = await gateway.post(signed(), SPEC)
    assert reply.kind is AnswerKind.TRANSIENT
    assert reply.error.startswith("connection error: ClientConnectorError")
    assert_no_secrets(reply.error)


@pytest.mark.parametrize(
    "bad",
    [
        {"qps": 0},
        {"concurrency": 0},
        {"retries": -1},
        {"max_ban": -1},
        {"canary": -1},
        {"max_failure_rate": 1.5},
        {"failure_window": 0},
        {"qps_auto": True, "qps": 20, "qps_max": 10},
    ],
)
def test_settings_refuse_impossible_values(bad):
    with pytest.raises(ValueError):
        DispatchSettings(**bad)


# -- failure policies: the canary and the breaker (their pure parts: test_guard.py) ------------


def bad_rows_script(bad: set[int], reply: Reply = ISV) -> Callable:
    return lambda row, n: reply if row in bad else SUCCESS


class InFlight(FakeGateway):
    """A FakeGateway that remembers the most calls in flight at once, per phase of the run."""

    def __init__(self, script: Callable) -> None:
        super().__init__(script)
        self.most: list[int] = []

    async def post(self, request: SignedRequest, spec) -> Reply:
        self.most.append(self.in_flight + 1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return await super().post(request, spec)


POLICY = DispatchSettings(
    qps=1_000_000, concurrency=8, backoff_base=0.001, canary=20, max_failure_rate=0.2
)


async def test_the_canary_goes_two_at_a_time_and_stops_before_the_bulk():
    journal = Journal()
    bad = {2, 5, 8, 11, 14, 17}  # 6 of the first 20 rows
    gateway = InFlight(bad_rows_script(bad))
    result = await dispatcher(gateway, journal, POLICY).run(records(100))

    assert result.stop_reason is StopReason.CANARY
    assert result.message == (
        "Canary: 6 of 20 rows failed with business errors (more than --max-failure-rate 0.2): "
        "isv.invalid-parameter ×6 (e.g. row 2); check the data, then rerun (the journal resumes)"
    )
    assert len(gateway.requests) == 20
    assert max(gateway.most) == CANARY_CONCURRENCY == 2
    journal.assert_one_each(records(100))
    assert journal.statuses() == {Status.FAILED: 6, Status.SUCCESS: 14, Status.NOT_SENT: 80}


async def test_a_canary_at_the_limit_goes_on_to_the_bulk_at_full_concurrency():
    journal = Journal()
    gateway = InFlight(bad_rows_script({2, 7, 12, 17}))  # 4 of 20: not more than 0.2
    result = await dispatcher(gateway, journal, POLICY).run(records(100))
    assert result.stop_reason is StopReason.NONE
    assert max(gateway.most[:20]) <= 2
    assert max(gateway.most[20:]) > 2
    assert journal.statuses() == {Status.FAILED: 4, Status.SUCCESS: 96}


async def test_a_canary_with_no_rows_after_it_does_not_stop_the_run():
    journal = Journal()
    gateway = FakeGateway(bad_rows_script({2, 3, 4, 5, 6, 7, 8, 9, 10, 11}))
    result = await dispatcher(gateway, journal, POLICY).run(records(20))
    assert result.stop_reason is StopReason.NONE
    assert journal.statuses() == {Status.FAILED: 10, Status.SUCCESS: 10}


async def test_the_canary_counts_result_success_false_as_a_business_failure():
    journal = Journal()
    gateway = FakeGateway(bad_rows_script(set(range(2, 12)), BUSINESS))
    result = await dispatcher(gateway, journal, POLICY).run(records(30))
    assert result.stop_reason is StopReason.CANARY
    assert "code 500 ×10 (e.g. row 2)" in result.message


async def test_the_breaker_stops_the_bulk_once_the_last_answers_fail_too_often():
    journal = Journal()
    settings = dataclasses.replace(POLICY, concurrency=1, failure_window=50)
    gateway = FakeGateway(bad_rows_script(set(range(62, 1000))))  # rows from 62 on are bad
    result = await dispatcher(gateway, journal, settings).run(records(300))
    assert result.stop_reason is StopReason.FAILURE_RATE
    # rows 2..61 succeed; the window of 50 holds 11 failures after row 72: 11/50 > 0.2
    assert result.message == (
        "Failure rate: 11 of the last 50 answers were business errors (more than "
        "--max-failure-rate 0.2); so far isv.invalid-parameter ×11 (e.g. row 62); check the "
        "data, then rerun (the journal resumes)"
    )
    assert journal.statuses() == {Status.SUCCESS: 60, Status.FAILED: 11, Status.NOT_SENT: 229}


async def test_throttles_and_transient_failures_do_not_count_for_the_breaker():
    journal = Journal()
    settings = dataclasses.replace(POLICY, retries=0, failure_window=20)

    def script(row: int, n: int) -> Reply:
        if row % 2:
            return ISP  # failed after its retries: says nothing about the data
        if row % 4 == 0 and n == 1:
            return throttled(0.001)
        return SUCCESS

    result = await dispatcher(FakeGateway(script), journal, settings).run(records(200))
    assert result.stop_reason is StopReason.NONE
    assert journal.statuses() == {Status.FAILED: 100, Status.SUCCESS: 100}


async def test_without_a_max_failure_rate_there_is_no_canary_and_no_breaker():
    journal = Journal()
    gateway = InFlight(bad_rows_script(set(range(2, 300))))
    settings = dataclasses.replace(POLICY, max_failure_rate=None)
    result = await dispatcher(gateway, journal, settings).run(records(300))
    assert result.stop_reason is StopReason.NONE
    assert max(gateway.most[:20]) > 2
    assert journal.statuses() == {Status.FAILED: 298, Status.SUCCESS: 2}


async def test_an_input_that_breaks_in_the_canary_finishes_it_then_raises():
    journal = Journal()

    def broken() -> Iterable[RequestRecord]:
        yield from records(5)
        raise ValueError("row 7 is unreadable")

    d = dispatcher(FakeGateway(lambda row, n: SUCCESS), journal, POLICY)
    with pytest.raises(ValueError, match="row 7"):
        await d.run(broken())
    assert journal.statuses() == {Status.SUCCESS: 5}


# -- --qps auto: AdaptiveRate driving the pacer ------------------------------------------------


class PerSecondLimit:
    """The platform's quota on a fake clock: more than ``limit`` calls in a clock second are
    throttled with a 1 s ban, as the simulator does."""

    def __init__(self, clock: FakeClock, limit: int) -> None:
        self.clock, self.limit = clock, limit
        self.calls: Counter[int] = Counter()
        self.accepted: Counter[int] = Counter()
        self.throttled: Counter[int] = Counter()

    def __call__(self, row: int, n: int) -> Reply:
        second = int(self.clock())
        self.calls[second] += 1
        if self.calls[second] > self.limit:
            self.throttled[second] += 1
            return throttled(1)
        self.accepted[second] += 1
        return SUCCESS

    def window(self, start: float, seconds: int) -> tuple[float, float]:
        """(share of the quota used, share of answers throttled) over whole seconds."""
        span = range(int(start), int(start) + seconds)
        accepted = sum(self.accepted[s] for s in span)
        throttled_ = sum(self.throttled[s] for s in span)
        return accepted / (self.limit * seconds), throttled_ / (accepted + throttled_)


@pytest.mark.parametrize("limit", [7, 40, 300])
async def test_qps_auto_uses_most_of_an_unknown_quota_and_is_rarely_throttled(limit):
    clock = FakeClock(100.0)
    quota = PerSecondLimit(clock, limit)
    settings = DispatchSettings(qps=5, concurrency=8, qps_auto=True, qps_max=1000)
    pacer = Pacer(settings.qps, time=clock, sleep=clock.sleep)
    d = dispatcher(FakeGateway(quota), Journal(), settings, pacer=pacer)
    await d.run(make_record(i) for i in range(limit * 100))  # ~100 s of calls
    used, throttled_share = quota.window(100.0 + 30, 60)  # after a 30 s warm-up
    assert used >= 0.85
    assert throttled_share < 0.02
    assert sum(quota.throttled.values()) <= 10
    assert d.pacer.capacity <= limit * 1.05  # (a probe may be going on at the end)
    assert d.rate_policy is not None and d.rate_policy.throttles >= 1


async def test_qps_auto_never_paces_above_qps_max():
    clock = FakeClock(100.0)
    quota = PerSecondLimit(clock, 10_000)
    settings = DispatchSettings(qps=5, concurrency=8, qps_auto=True, qps_max=30)
    pacer = Pacer(settings.qps, time=clock, sleep=clock.sleep)
    d = dispatcher(FakeGateway(quota), Journal(), settings, pacer=pacer)
    await d.run(records(600))
    assert d.pacer.qps == 30
    assert max(quota.calls.values()) <= 30
    assert not quota.throttled


# -- loopback, against the real simulator ------------------------------------------------------

simulator = pytest.importorskip("importer.simulator")
Simulator, SimulatorSettings = simulator.Simulator, simulator.SimulatorSettings


async def run_against(
    sim_settings,
    recs: list[RequestRecord],
    settings: DispatchSettings,
    *,
    secret: str = SECRET,
    sign_method: str = "hmac-sha256",
    timeout: float = 5,
) -> tuple[DispatchResult, Journal, dict]:
    journal = Journal()
    builder = RequestBuilder(SPEC, Credentials(APP_KEY, secret), sign_method)
    async with Simulator(sim_settings) as sim:
        async with Gateway(sim.url, concurrency=settings.concurrency, timeout=timeout) as gw:
            d = Dispatcher(
                builder, gw, settings, claim=journal.claim, on_outcome=journal.on_outcome
            )
            result = await d.run(recs)
        stats = sim.stats()
    journal.assert_one_each(recs)
    return result, journal, stats


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_loopback_every_sign_method(sign_method):
    recs = records(12)
    result, journal, stats = await run_against(
        SimulatorSettings(), recs, DispatchSettings(qps=1000), sign_method=sign_method
    )
    assert result.stop_reason is StopReason.NONE
    assert journal.statuses() == {Status.SUCCESS: 12}
    assert stats["accepted"] == 12
    assert stats["calls"] == 12
    outcome = journal.outcome(2)
    assert outcome.code == "200" and outcome.request_id and outcome.system_time


async def test_loopback_paces_to_the_quota_without_being_throttled():
    """Ceilings only on the real clock: the rate itself is proven on the fake clock
    (test_pacing.py)."""
    recs = records(50)
    _, journal, stats = await run_against(
        SimulatorSettings(qps=20), recs, DispatchSettings(qps=20, concurrency=8)
    )
    assert journal.statuses() == {Status.SUCCESS: 50}
    assert stats["rejected"].get("7", 0) == 0  # (a throttled call would count in its second)
    assert stats["max_calls_in_a_second"] <= 20


async def test_loopback_transient_faults_are_retried_to_success_without_duplicates():
    recs = records(150)
    sim = SimulatorSettings(isp_rate=0.2, http502_rate=0.1, seed=11)
    result, journal, stats = await run_against(
        sim, recs, DispatchSettings(qps=5000, concurrency=8, retries=10, backoff_base=0.005)
    )
    assert result.stop_reason is StopReason.NONE
    assert journal.statuses() == {Status.SUCCESS: 150}
    assert stats["duplicate_accepts"] == 0
    assert stats["accepted"] == 150
    attempts = sum(journal.outcome(r.source_row).attempts for r in recs)
    assert attempts == stats["calls"] > 150


async def test_loopback_bad_tenants_are_answered_once_each():
    bad = 900000001
    recs = [make_record(i, tenant=bad if i % 3 == 0 else 200110004) for i in range(30)]
    result, journal, stats = await run_against(
        SimulatorSettings(bad_tenants=frozenset({bad})), recs, DispatchSettings(qps=1000)
    )
    assert result.stop_reason is StopReason.NONE
    assert journal.statuses() == {Status.SUCCESS: 20, Status.FAILED: 10}
    failed = journal.outcome(2)
    assert failed.code == "50" and failed.sub_code.startswith("isv.")
    assert failed.attempts == 1
    assert stats["calls"] == 30


async def test_loopback_a_wrong_secret_stops_the_run_after_a_handful_of_calls():
    recs = records(200)
    settings = DispatchSettings(qps=1000, concurrency=8)
    result, journal, stats = await run_against(
        SimulatorSettings(), recs, settings, secret="not-the-secret-0000"
    )
    assert result.stop_reason is StopReason.FATAL
    assert "code 25" in result.message
    assert "check TOP_APP_SECRET" in result.message
    assert "not-the-secret-0000" not in result.message
    assert stats["calls"] <= settings.concurrency + 1
    assert stats["accepted"] == 0
    assert journal.statuses()[Status.NOT_SENT] >= 200 - settings.concurrency - 1
    for text in all_texts(journal, result):
        assert "not-the-secret-0000" not in text


async def test_loopback_a_daily_quota_ban_stops_the_run():
    recs = records(100)
    settings = DispatchSettings(qps=1000, concurrency=4)
    result, journal, stats = await run_against(
        SimulatorSettings(throttle_all=True, ban_seconds=2592000), recs, settings
    )
    assert result.stop_reason is StopReason.BAN_TOO_LONG
    assert "2592000 s" in result.message
    assert stats["calls"] <= settings.concurrency + 1
    assert journal.statuses()[Status.NOT_SENT] >= 100 - settings.concurrency - 1


async def test_loopback_dropped_connections_are_retried_only_when_at_least_once_is_chosen():
    """A connection closed after the write looks the same whether or not the platform acted;
    the simulator's drop fault closes it before accepting, so at-least-once finishes every row
    without a double accept, and the default leaves those rows unknown after one call each."""
    recs = records(150)
    sim = SimulatorSettings(drop_rate=0.1, seed=11)
    settings = DispatchSettings(qps=5000, concurrency=8, retries=10, backoff_base=0.005)
    _, journal, stats = await run_against(sim, recs, settings)
    dropped = stats["dropped"]
    assert dropped > 0
    assert journal.statuses() == {Status.SUCCESS: 150 - dropped, Status.UNKNOWN: dropped}
    assert stats["calls"] == 150
    at_least_once = dataclasses.replace(settings, resend_uncertain=True)
    _result, journal, stats = await run_against(sim, recs, at_least_once)
    assert journal.statuses() == {Status.SUCCESS: 150}
    assert stats["duplicate_accepts"] == 0


async def test_loopback_a_slow_gateway_times_out_as_unknown_after_one_call():
    recs = records(2)
    _, journal, stats = await run_against(
        SimulatorSettings(latency_ms=400),
        recs,
        DispatchSettings(qps=1000, concurrency=2, retries=1, backoff_base=0.001),
        timeout=0.1,
    )
    outcome = journal.outcome(2)
    assert outcome.status is Status.UNKNOWN
    assert outcome.attempts == 1
    assert outcome.error.startswith("no answer within --timeout 0.1 s; the platform may have acted")
    assert stats["accepted"] == 2
