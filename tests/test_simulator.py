"""The simulator, spoken to over real loopback HTTP the way the importer speaks to the platform."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from helpers import FakeClock
from yarl import URL

from importer.protocol import (
    FORM_CONTENT_TYPE,
    AnswerKind,
    Credentials,
    RequestBuilder,
    classify,
)
from importer.records import RowValidator
from importer.rows import RequestRecord, Row
from importer.signing import SIGN_METHODS, sign
from importer.simulator import (
    DEFAULT_APP_KEY,
    DEFAULT_SECRET,
    Simulator,
    SimulatorSettings,
    serve_forever,
)
from importer.spec import ApiSpec, builtin_methods, load_spec, parse_spec

SPEC = load_spec(None)
BAN_TEXT = "This ban will last for {} more seconds"


def example(spec: ApiSpec = SPEC, **changes: object) -> dict:
    """The spec's example payload; a change to None leaves the field out."""
    payload = {f.name: int(f.example) if f.type == "Number" else f.example for f in spec.fields}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def compact(payload: object) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def start():
    """start(clock=None, **settings) -> a running Simulator, stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def _start(clock=None, specs=None, **settings) -> Simulator:
            extra = {"clock": clock} if clock else {}
            sim = Simulator(SimulatorSettings(**settings), specs=specs, **extra)
            return await stack.enter_async_context(sim)

        yield _start


async def call(
    session: aiohttp.ClientSession,
    sim: Simulator,
    payload: str | dict | None = None,
    *,
    spec: ApiSpec = SPEC,
    secret: str = DEFAULT_SECRET,
    sign_method: str = "hmac-sha256",
) -> tuple[int, bytes]:
    """One call as the importer makes it: system params in the query, the object in the body."""
    if payload is None:
        payload = example(spec)
    text = payload if isinstance(payload, str) else compact(payload)
    builder = RequestBuilder(spec, Credentials(DEFAULT_APP_KEY, secret), sign_method)
    request = builder.build(text, now())
    url = URL(f"{sim.url}?{request.query}", encoded=True)
    headers = {"Content-Type": FORM_CONTENT_TYPE}
    async with session.post(url, data=request.body, headers=headers) as resp:
        return resp.status, await resp.read()


async def post_form(session: aiohttp.ClientSession, sim: Simulator, params: dict) -> dict:
    """Every parameter in the form body (which the gateway also takes)."""
    async with session.post(sim.url, data=params) as resp:
        assert resp.status == 200
        return json.loads(await resp.read())


def signed_params(**changes: str | None) -> dict[str, str]:
    """A correctly signed call's params, changed, then signed again (None drops a param)."""
    params = RequestBuilder(SPEC, Credentials(DEFAULT_APP_KEY, DEFAULT_SECRET)).params(
        compact(example()), now()
    )
    params.update(changes)
    params = {k: v for k, v in params.items() if v is not None and k != "sign"}
    method = params.get("sign_method", "md5")
    params["sign"] = sign(params, DEFAULT_SECRET, method if method in SIGN_METHODS else "md5")
    return params


def error(body: bytes) -> dict:
    return json.loads(body)["error_response"]


# --- success ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_a_valid_call_gets_the_success_envelope(start, session, sign_method):
    sim = await start()
    status, body = await call(session, sim, sign_method=sign_method)
    assert status == 200
    envelope = json.loads(body)[SPEC.response_envelope]
    assert envelope["result"]["code"] == "200"
    assert envelope["result"]["success"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", envelope["result"]["system_time"])
    assert re.fullmatch(r"[0-9a-f]+", envelope["request_id"])
    assert classify(status, body, SPEC).kind is AnswerKind.ACCEPTED
    assert sim.stats()["accepted"] == 1


@pytest.mark.parametrize("method", builtin_methods())
async def test_every_builtin_spec_accepts_its_example(start, session, method):
    spec = load_spec(method)
    sim = await start()
    status, body = await call(session, sim, example(spec), spec=spec)
    assert classify(status, body, spec).kind is AnswerKind.ACCEPTED


async def test_epoch_millisecond_timestamps_are_accepted(start, session):
    sim = await start()
    doc = await post_form(session, sim, signed_params(timestamp=str(int(time.time() * 1000))))
    assert doc[SPEC.response_envelope]["result"]["success"] is True


# --- request validation: fatal for a run --------------------------------------------------------

SKEWED = (now() - timedelta(minutes=11)).astimezone(timezone(timedelta(hours=8)))

AUTH_FAILURES = [
    ("missing method", {"method": None}, 21),
    ("unknown method", {"method": "taobao.no.such.api"}, 22),
    ("missing app key", {"app_key": None}, 28),
    ("wrong app key", {"app_key": "87654321"}, 29),
    ("missing timestamp", {"timestamp": None}, 30),
    ("garbage timestamp", {"timestamp": "yesterday"}, 31),
    ("skewed timestamp", {"timestamp": SKEWED.strftime("%Y-%m-%d %H:%M:%S")}, 31),
    ("skewed epoch ms", {"timestamp": str(int((time.time() - 3600) * 1000))}, 31),
    ("missing version", {"v": None}, 32),
    ("garbage version", {"v": "two"}, 33),
    ("other version", {"v": "3.0"}, 34),
    ("xml format", {"format": "xml"}, 23),
    ("unknown sign method", {"sign_method": "sha1"}, 25),
]


@pytest.mark.parametrize(
    ("changes", "code"), [a[1:] for a in AUTH_FAILURES], ids=[a[0] for a in AUTH_FAILURES]
)
async def test_request_validation_failures(start, session, changes, code):
    sim = await start()
    doc = await post_form(session, sim, signed_params(**changes))
    assert doc["error_response"]["code"] == code
    assert doc["error_response"]["request_id"]
    reply = classify(200, json.dumps(doc).encode(), SPEC)
    assert reply.kind is AnswerKind.FATAL
    assert sim.stats()["rejected"] == {str(code): 1}
    assert sim.stats()["per_second"] == {}  # failed auth never counts against the quota


async def test_wrong_secret_is_an_invalid_signature(start, session):
    sim = await start()
    status, body = await call(session, sim, secret="not-the-secret")
    assert (status, error(body)["code"], error(body)["msg"]) == (200, 25, "Invalid signature")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: p.pop("sign"), id="missing sign"),
        pytest.param(lambda p: p.update(sign="0" * 64), id="wrong sign"),
        pytest.param(lambda p: p.update(group_customer_case_request="{}"), id="payload changed"),
    ],
)
async def test_a_tampered_call_is_refused(start, session, tamper):
    sim = await start()
    params = signed_params()
    tamper(params)
    doc = await post_form(session, sim, params)
    assert doc["error_response"]["code"] == (24 if "sign" not in params else 25)


async def test_a_skewed_timestamp_says_what_time_the_gateway_has(start, session):
    sim = await start()
    sent = SKEWED.strftime("%Y-%m-%d %H:%M:%S")
    doc = await post_form(session, sim, signed_params(timestamp=sent))
    msg = doc["error_response"]["msg"]
    assert sent in msg
    assert "GMT+8" in msg
    assert "600 s" in msg


# --- the object parameter -----------------------------------------------------------------------

PAYLOAD_FAILURES = [
    ("empty object param", "", 40, "isv.missing-parameter"),
    ("not json", "not json", 41, "isv.invalid-parameter"),
    ("json array", "[]", 41, "isv.invalid-parameter"),
    ("required missing", example(user_identify=None), 40, "isv.missing-parameter:user_identify"),
    ("required empty", example(case_id=""), 40, "isv.missing-parameter:case_id"),
    ("required blank", example(case_id="  "), 40, "isv.missing-parameter:case_id"),
    ("required null", {**example(), "tenant_id": None}, 40, "isv.missing-parameter:tenant_id"),
    ("number as text", example(tenant_id="abc"), 41, "isv.invalid-parameter:tenant_id"),
    ("number fraction", example(tenant_id=2.5), 41, "isv.invalid-parameter:tenant_id"),
    ("number bool", example(tenant_id=True), 41, "isv.invalid-parameter:tenant_id"),
    ("number beyond int64", example(tenant_id=2**63), 41, "isv.invalid-parameter:tenant_id"),
    ("number huge text", example(tenant_id="9" * 5000), 41, "isv.invalid-parameter:tenant_id"),
    ("string as object", example(case_id={"a": 1}), 41, "isv.invalid-parameter:case_id"),
    ("string as list", example(corp_id=["x"]), 41, "isv.invalid-parameter:corp_id"),
]


@pytest.mark.parametrize(
    ("payload", "code", "sub_code"),
    [p[1:] for p in PAYLOAD_FAILURES],
    ids=[p[0] for p in PAYLOAD_FAILURES],
)
async def test_invalid_payloads_are_row_failures(start, session, payload, code, sub_code):
    sim = await start()
    status, body = await call(session, sim, payload)
    assert (error(body)["code"], error(body)["sub_code"]) == (code, sub_code)
    assert classify(status, body, SPEC).kind is AnswerKind.REJECTED
    assert sim.stats()["accepted"] == 0


PAYLOADS_ACCEPTED = [
    ("optional field absent", example(corp_id=None)),
    ("number as digit string", example(tenant_id="200110004")),
    ("number as whole float", example(tenant_id=200110004.0)),
    ("string as json number", example(case_id=396743391)),
    ("unknown field ignored", example(extra="x")),
    ("any key order", dict(reversed(example().items()))),
]


@pytest.mark.parametrize(
    "payload", [p[1] for p in PAYLOADS_ACCEPTED], ids=[p[0] for p in PAYLOADS_ACCEPTED]
)
async def test_lenient_payloads_are_accepted(start, session, payload):
    sim = await start()
    status, body = await call(session, sim, payload)
    assert classify(status, body, SPEC).kind is AnswerKind.ACCEPTED


async def test_a_bad_tenant_gets_a_business_error(start, session):
    sim = await start(bad_tenants=frozenset({404}))
    status, body = await call(session, sim, example(tenant_id=404))
    assert error(body) | {"request_id": ""} == {
        "code": 50,
        "msg": "Remote service error",
        "sub_code": "isv.invalid-parameter",
        "sub_msg": "非法参数",
        "request_id": "",
    }
    assert classify(status, body, SPEC).kind is AnswerKind.REJECTED
    assert (await call(session, sim))[0] == 200  # other tenants are fine
    assert sim.stats()["accepted"] == 1
    assert sim.stats()["rejected"] == {"50": 1}


# --- the throttle -------------------------------------------------------------------------------


async def test_calls_beyond_qps_in_one_second_are_throttled(start, session):
    clock = FakeClock(float(int(time.time())) + 0.25)
    sim = await start(clock=clock, qps=3)
    replies = [
        classify(*answer, SPEC)
        for answer in await asyncio.gather(*(call(session, sim) for _ in range(10)))
    ]
    classes = [r.kind for r in replies]
    assert classes.count(AnswerKind.ACCEPTED) == 3
    throttled = [r for r in replies if r.kind is AnswerKind.THROTTLED]
    assert len(throttled) == 7
    assert {(r.code, r.sub_code, r.sub_msg, r.ban_seconds) for r in throttled} == {
        ("7", "accesscontrol.limited-by-app-access-count", BAN_TEXT.format(1), 1.0)
    }
    stats = sim.stats()
    assert stats["per_second"] == {str(int(clock.t)): 10}
    assert stats["max_calls_in_a_second"] == 10
    assert (stats["accepted"], stats["rejected"]) == (3, {"7": 7})

    clock.t += 1  # the next clock second has a fresh quota
    assert classify(*await call(session, sim), SPEC).kind is AnswerKind.ACCEPTED


async def test_throttle_on_the_real_clock_matches_the_per_second_counts(start, session):
    sim = await start(qps=3)
    answers = await asyncio.gather(*(call(session, sim) for _ in range(10)))
    successes = sum(classify(*a, SPEC).kind is AnswerKind.ACCEPTED for a in answers)
    per_second = sim.stats()["per_second"]
    assert sum(per_second.values()) == 10
    assert successes == sum(min(n, 3) for n in per_second.values())


async def test_throttle_all_announces_a_long_ban(start, session):
    sim = await start(throttle_all=True, ban_seconds=2592000)
    reply = classify(*await call(session, sim), SPEC)
    assert reply.kind is AnswerKind.THROTTLED
    assert reply.sub_msg == BAN_TEXT.format(2592000)
    assert reply.ban_seconds == 2592000


async def test_calls_failing_auth_do_not_spend_the_quota(start, session):
    sim = await start(qps=1, clock=FakeClock(float(int(time.time())) + 0.25))
    assert error((await call(session, sim, secret="wrong"))[1])["code"] == 25
    assert classify(*await call(session, sim), SPEC).kind is AnswerKind.ACCEPTED


# --- fault injection ----------------------------------------------------------------------------


async def test_isp_errors_are_transient_and_not_accepted(start, session):
    sim = await start(isp_rate=1.0)
    status, body = await call(session, sim)
    assert (error(body)["code"], error(body)["sub_code"]) == (15, "isp.service-unavailable")
    assert classify(status, body, SPEC).kind is AnswerKind.TRANSIENT
    assert sim.stats()["accepted"] == 0


async def test_http_502_is_an_html_page(start, session):
    sim = await start(http502_rate=1.0)
    status, body = await call(session, sim)
    assert status == 502
    assert body.startswith(b"<html>")
    assert classify(status, body, SPEC).kind is AnswerKind.TRANSIENT
    assert (sim.stats()["http_502"], sim.stats()["accepted"]) == (1, 0)


@pytest.mark.parametrize(
    ("settings", "counts"),
    [
        ({"drop_rate": 1.0}, {"dropped": 1, "lost_responses": 0, "accepted": 0}),
        ({"lost_response_rate": 1.0}, {"dropped": 0, "lost_responses": 1, "accepted": 1}),
    ],
    ids=["dropped before accepting", "lost after accepting"],
)
async def test_a_closed_connection_is_a_client_error(start, session, settings, counts):
    sim = await start(**settings)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(session, sim)
    stats = sim.stats()
    assert {k: stats[k] for k in counts} == counts


async def test_fault_injection_is_reproducible_with_a_seed(start, session):
    async def codes(sim: Simulator) -> list[str]:
        return [classify(*await call(session, sim), SPEC).code for _ in range(20)]

    first = await codes(await start(isp_rate=0.5, seed=7))
    second = await codes(await start(isp_rate=0.5, seed=7))
    assert first == second
    assert set(first) == {"200", "15"}


async def test_latency_delays_answers_without_serialising_them(start, session):
    sim = await start(latency_ms=300)
    began = time.monotonic()
    answers = await asyncio.gather(*(call(session, sim) for _ in range(5)))
    elapsed = time.monotonic() - began
    assert all(status == 200 for status, _ in answers)
    assert 0.3 <= elapsed < 1.0


# --- stats --------------------------------------------------------------------------------------


async def test_the_same_payload_accepted_twice_is_a_duplicate_accept(start, session):
    sim = await start()
    await call(session, sim, example())
    await call(session, sim, dict(reversed(example().items())))  # key order does not matter
    await call(session, sim, example(case_id="1"))
    stats = sim.stats()
    assert stats["accepted"] == 3
    assert stats["accepted_payloads"] == 2
    assert stats["duplicate_accepts"] == 1
    assert stats["max_accepts_per_payload"] == 2


async def test_stats_and_reset_endpoints(start, session):
    sim = await start()
    await call(session, sim)
    await call(session, sim, secret="wrong")
    stats_url = sim.url.replace("/router/rest", "/_sim/stats")
    async with session.get(stats_url) as resp:
        stats = await resp.json()
    assert stats == sim.stats()
    assert stats["calls"] == 2
    assert stats["accepted"] == 1
    assert stats["rejected"] == {"25": 1}
    assert list(stats["per_second"].values()) == [1]

    async with session.post(sim.url.replace("/router/rest", "/_sim/reset")) as resp:
        zeroed = await resp.json()
    assert zeroed == sim.stats()
    assert zeroed["calls"] == zeroed["accepted"] == zeroed["max_calls_in_a_second"] == 0
    assert zeroed["rejected"] == zeroed["per_second"] == {}


# --- running it ---------------------------------------------------------------------------------


async def test_the_access_log_is_off(start, session, caplog):
    sim = await start()
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        await call(session, sim)
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]


async def test_url_needs_a_running_simulator():
    with pytest.raises(RuntimeError):
        _ = Simulator().url


async def test_serve_forever_reports_its_url_and_stops_when_cancelled(session):
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_forever(SimulatorSettings(), port=0, on_ready=ready.set_result)
    )
    url = await asyncio.wait_for(ready, 5)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/router/rest", url)
    async with session.get(url.replace("/router/rest", "/_sim/stats")) as resp:
        assert (await resp.json())["calls"] == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.get(url.replace("/router/rest", "/_sim/stats"))


# --- any spec, served from the spec -------------------------------------------------------------

RICH = parse_spec(
    """
method = "taobao.example.member.tag"
object_param = "tag_request"
needs_session = true

[[fields]]
name = "member_id"
type = "String"
required = true
max_length = 8
example = "m1"

[[fields]]
name = "levels"
type = "List<Number>"
allowed = [1, 2, 3]
example = "1,2"

[[fields]]
name = "vip"
type = "Boolean"
example = "true"

[[fields]]
name = "until"
type = "Date"
example = "2024-03-01 12:00:00"

[[fields]]
name = "tags"
type = "List<String>"
location = "flat"
required = true
max_items = 2
example = "vip,new"

[[fields]]
name = "active"
type = "Boolean"
location = "flat"
example = "false"

[[fields]]
name = "since"
type = "Date"
location = "flat"
example = "2024-01-01 00:00:00"

[[fields]]
name = "tier"
type = "String"
location = "flat"
allowed = ["gold", "silver"]
example = "gold"
"""
)
RICH_SESSION = "sim-session-key"


def record_of(spec: ApiSpec, **cells: str) -> RequestRecord:
    """A row of the spec's examples (changed by ``cells``) through the real validator."""
    values = {f.name: f.example for f in spec.fields} | cells
    names = [f.name for f in spec.fields]
    result = RowValidator(spec, {n: i for i, n in enumerate(names)}).validate(
        Row(2, tuple(values[n] for n in names))
    )
    assert isinstance(result, RequestRecord), result
    return result


def rich_params(session_key: str | None = RICH_SESSION, **business: str | None) -> dict:
    """A signed call of RICH with its examples' business params, changed (None drops one)."""
    builder = RequestBuilder(RICH, Credentials(DEFAULT_APP_KEY, DEFAULT_SECRET, RICH_SESSION))
    params = builder.params(record_of(RICH), now())
    params.update(business)
    if session_key is None:
        params.pop("session")
    params = {k: v for k, v in params.items() if v is not None and k != "sign"}
    params["sign"] = sign(params, DEFAULT_SECRET, params["sign_method"])
    return params


async def send_record(session, sim, spec: ApiSpec, record: RequestRecord, session_key=None):
    builder = RequestBuilder(spec, Credentials(DEFAULT_APP_KEY, DEFAULT_SECRET, session_key))
    request = builder.build(record, now())
    url = URL(f"{sim.url}?{request.query}", encoded=True)
    headers = {"Content-Type": FORM_CONTENT_TYPE}
    async with session.post(url, data=request.body, headers=headers) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize("method", builtin_methods())
async def test_every_builtin_spec_accepts_a_validated_row_of_its_examples(start, session, method):
    spec = load_spec(method)
    sim = await start()
    status, body = await send_record(session, sim, spec, record_of(spec))
    assert classify(status, body, spec).kind is AnswerKind.ACCEPTED
    assert json.loads(body)[spec.response_envelope]["result"]["success"] is True


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_a_spec_with_flat_list_date_and_boolean_fields_is_served(start, session, sign_method):
    sim = await start(specs=[RICH])
    record = record_of(RICH, tags="vip ，new", vip="是", until="2024-03-01")
    builder = RequestBuilder(
        RICH, Credentials(DEFAULT_APP_KEY, DEFAULT_SECRET, RICH_SESSION), sign_method
    )
    request = builder.build(record, now())
    url = URL(f"{sim.url}?{request.query}", encoded=True)
    async with session.post(
        url, data=request.body, headers={"Content-Type": FORM_CONTENT_TYPE}
    ) as r:
        status, body = r.status, await r.read()
    assert classify(status, body, RICH).kind is AnswerKind.ACCEPTED, body
    assert sim.stats()["accepted"] == 1


async def test_a_spec_file_not_given_to_the_simulator_is_an_invalid_method(start, session):
    sim = await start()
    _, body = await send_record(session, sim, RICH, record_of(RICH), RICH_SESSION)
    assert error(body)["code"] == 22


async def test_a_spec_needing_a_session_gets_code_26_without_one(start, session):
    sim = await start(specs=[RICH])
    doc = await post_form(session, sim, rich_params(session_key=None))
    assert doc["error_response"]["code"] == 26
    assert classify(200, json.dumps(doc).encode(), RICH).kind is AnswerKind.FATAL


RICH_FAILURES = [
    ("required flat missing", {"tags": None}, 40, "isv.missing-parameter:tags"),
    ("required flat blank", {"tags": " "}, 40, "isv.missing-parameter:tags"),
    (
        "required in object",
        {"tag_request": '{"levels":[1]}'},
        40,
        "isv.missing-parameter:member_id",
    ),
    ("object missing", {"tag_request": None}, 40, "isv.missing-parameter"),
    (
        "too long",
        {"tag_request": '{"member_id":"123456789"}'},
        41,
        "isv.invalid-parameter:member_id",
    ),
    (
        "list not an array",
        {"tag_request": '{"member_id":"m","levels":"1,2"}'},
        41,
        "isv.invalid-parameter:levels",
    ),
    (
        "list item not allowed",
        {"tag_request": '{"member_id":"m","levels":[1,4]}'},
        41,
        "isv.invalid-parameter:levels",
    ),
    (
        "list item not a number",
        {"tag_request": '{"member_id":"m","levels":[1,"x"]}'},
        41,
        "isv.invalid-parameter:levels",
    ),
    (
        "boolean as text in object",
        {"tag_request": '{"member_id":"m","vip":"yes"}'},
        41,
        "isv.invalid-parameter:vip",
    ),
    (
        "boolean as number",
        {"tag_request": '{"member_id":"m","vip":1}'},
        41,
        "isv.invalid-parameter:vip",
    ),
    (
        "date without time",
        {"tag_request": '{"member_id":"m","until":"2024-03-01"}'},
        41,
        "isv.invalid-parameter:until",
    ),
    (
        "date as number",
        {"tag_request": '{"member_id":"m","until":1709251200000}'},
        41,
        "isv.invalid-parameter:until",
    ),
    ("flat boolean word", {"active": "yes"}, 41, "isv.invalid-parameter:active"),
    ("flat date garbage", {"since": "2024/01/01"}, 41, "isv.invalid-parameter:since"),
    ("flat list too long", {"tags": "a,b,c"}, 41, "isv.invalid-parameter:tags"),
    ("flat list empty item", {"tags": "a,,b"}, 41, "isv.invalid-parameter:tags"),
    ("flat not allowed", {"tier": "bronze"}, 41, "isv.invalid-parameter:tier"),
]


@pytest.mark.parametrize(
    ("business", "code", "sub_code"),
    [f[1:] for f in RICH_FAILURES],
    ids=[f[0] for f in RICH_FAILURES],
)
async def test_every_rule_of_a_spec_is_checked(start, session, business, code, sub_code):
    sim = await start(specs=[RICH])
    doc = await post_form(session, sim, rich_params(**business))
    assert (doc["error_response"]["code"], doc["error_response"]["sub_code"]) == (code, sub_code)
    assert classify(200, json.dumps(doc).encode(), RICH).kind is AnswerKind.REJECTED
    assert sim.stats()["accepted"] == 0


RICH_ACCEPTED = [
    ("optional flat absent", {"active": None, "since": None, "tier": None}),
    ("flat boolean upper case", {"active": "TRUE"}),
    ("unknown flat param ignored", {"shop_note": "anything"}),
    ("unknown object key ignored", {"tag_request": '{"member_id":"m","x":[1]}'}),
    ("boolean true in object", {"tag_request": '{"member_id":"m","vip":true}'}),
]


@pytest.mark.parametrize(
    "business", [a[1] for a in RICH_ACCEPTED], ids=[a[0] for a in RICH_ACCEPTED]
)
async def test_lenient_calls_of_a_spec_are_accepted(start, session, business):
    sim = await start(specs=[RICH])
    doc = await post_form(session, sim, rich_params(**business))
    assert RICH.response_envelope in doc, doc


async def test_flat_parameters_count_in_duplicate_accepts(start, session):
    sim = await start(specs=[RICH])
    await post_form(session, sim, rich_params())
    await post_form(session, sim, rich_params())
    await post_form(session, sim, rich_params(tier="silver"))
    stats = sim.stats()
    assert (stats["accepted"], stats["accepted_payloads"], stats["duplicate_accepts"]) == (3, 2, 1)


def test_simulate_prints_lines_to_paste_and_declines_rows_on_demand(tmp_path):
    """The foreground simulator: its export line is all a shell needs (no TOP_GATEWAY would
    send to production), and --decline-rate gives failed rows (--fail-rate's are retried)."""
    import os
    import shlex
    import subprocess
    import sys

    from helpers import clean_env, cli, read_sheet, ticket, write_csv

    server = subprocess.Popen(
        [sys.executable, "-m", "importer", "simulate", "--port", "0", "--decline-rate", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        first, export = server.stdout.readline(), server.stdout.readline()
        assert "app_key=" in first
        words = shlex.split(export)
        assert words[0] == "export"
        env = clean_env(**dict(word.split("=", 1) for word in words[1:]))
        assert env["TOP_GATEWAY"].startswith("http://127.0.0.1:")
        write_csv(tmp_path / "t.csv", [ticket(0), ticket(1)])
        done = cli(["run", "t.csv", "--max-failure-rate", "1", "--canary", "0"], tmp_path, env)
        assert done.returncode == 1, done.stderr
        rows = read_sheet(tmp_path / "reports" / "t.result.xlsx")
        assert [(r["status"], r["sub_code"], r["attempts"]) for r in rows] == [
            ("failed", "isv.invalid-parameter", 1),
            ("failed", "isv.invalid-parameter", 1),
        ]
    finally:
        server.terminate()
        server.wait(10)
