"""The TOP wire protocol: the signed request we send, and how every answer is classified."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, quote

import pytest

from importer.advice import advice
from importer.errors import UsageError
from importer.protocol import (
    FORM_CONTENT_TYPE,
    AnswerKind,
    Credentials,
    Reply,
    RequestBuilder,
    ban_seconds,
    classify,
    describe,
    format_timestamp,
)
from importer.records import RowValidator
from importer.rows import Row
from importer.signing import sign
from importer.spec import load_spec, parse_spec

SPEC = load_spec(None)
ENVELOPE = "alibaba_lyservice_group_ticket_customer_save_response"
SECRET = "Sup3rSecretValue"
SESSION = "SessionKey6789"
NOW = datetime(2024, 3, 1, 4, 5, 6, tzinfo=timezone.utc)  # 12:05:06 in Beijing
PAYLOAD = (
    '{"corp_id":"ding5df29af51dd68a8d35c2f4657eb6378f",'
    '"user_identify":"wegdtJRNVp51PWHMWqdwGBNnwg3","case_id":"396743391396743391",'
    '"tenant_id":200110004,"open_conversation_id":"ciddtJRNVp51PWHMWqdwGBNnw=="}'
)


# --- timestamp ----------------------------------------------------------------------------


@pytest.fixture
def new_york_machine(monkeypatch):
    """The process's local zone is America/New_York for the test, restored afterwards."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(NOW, id="utc"),
        pytest.param(NOW.astimezone(timezone(timedelta(hours=-5))), id="minus-5"),
        pytest.param(NOW.astimezone(timezone(timedelta(hours=8))), id="plus-8"),
        pytest.param(NOW.astimezone(timezone(timedelta(hours=5, minutes=30))), id="plus-5:30"),
    ],
)
def test_timestamp_is_beijing_time_whatever_the_zone_of_the_input(now):
    assert format_timestamp(now) == "2024-03-01 12:05:06"


def test_timestamp_ignores_the_machine_zone(new_york_machine):
    assert time.localtime(NOW.timestamp()).tm_hour == 23  # the machine really is in New York
    local_now = datetime.fromtimestamp(NOW.timestamp()).astimezone()
    assert format_timestamp(local_now) == "2024-03-01 12:05:06"
    assert format_timestamp(NOW) == "2024-03-01 12:05:06"


def test_timestamp_crosses_the_date_line_into_the_next_beijing_day():
    late_utc = datetime(2023, 12, 31, 20, 0, 0, tzinfo=timezone.utc)
    assert format_timestamp(late_utc) == "2024-01-01 04:00:00"


# --- building a request -------------------------------------------------------------------


def builder(session=None, partner_id=None, sign_method="hmac-sha256", app_key="12345678"):
    return RequestBuilder(
        SPEC, Credentials(app_key, SECRET, session), sign_method=sign_method, partner_id=partner_id
    )


def query_of(request) -> dict[str, str]:
    parsed = parse_qs(request.query, keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in parsed.values()), "a parameter is repeated"
    return {k: v[0] for k, v in parsed.items()}


def body_of(request) -> dict[str, str]:
    parsed = parse_qs(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    return {k: v[0] for k, v in parsed.items()}


def test_query_holds_exactly_the_system_parameters():
    query = query_of(builder().build(PAYLOAD, NOW))
    assert set(query) == {
        "method",
        "app_key",
        "timestamp",
        "format",
        "v",
        "sign_method",
        "sign",
    }
    assert query["method"] == "alibaba.lyservice.group.ticket.customer.save"
    assert query["app_key"] == "12345678"
    assert query["timestamp"] == "2024-03-01 12:05:06"
    assert query["format"] == "json"
    assert query["v"] == "2.0"
    assert query["sign_method"] == "hmac-sha256"


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
def test_query_names_the_sign_method_used(method):
    assert query_of(builder(sign_method=method).build(PAYLOAD, NOW))["sign_method"] == method


def test_session_is_sent_when_given():
    assert query_of(builder(session=SESSION).build(PAYLOAD, NOW))["session"] == SESSION


@pytest.mark.parametrize("session", [None, "", "   "])
def test_session_is_not_sent_when_absent_or_blank(session):
    assert "session" not in query_of(builder(session=session).build(PAYLOAD, NOW))


def test_partner_id_is_sent_when_given():
    query = query_of(builder(partner_id="top-import-0.1.0").build(PAYLOAD, NOW))
    assert query["partner_id"] == "top-import-0.1.0"


def test_partner_id_is_not_sent_when_absent():
    assert "partner_id" not in query_of(builder().build(PAYLOAD, NOW))


def test_body_is_the_object_parameter_as_url_encoded_compact_json():
    request = builder().build(PAYLOAD, NOW)
    assert request.body == b"group_customer_case_request=" + quote(PAYLOAD, safe="").encode()
    assert body_of(request) == {"group_customer_case_request": PAYLOAD}


def test_body_carries_non_ascii_json_as_utf8_percent_escapes():
    payload = '{"user_identify":"用户","case_id":"1 2&3=4+5"}'
    request = builder().build(payload, NOW)
    assert body_of(request)["group_customer_case_request"] == payload


def test_form_content_type_is_url_encoded_utf8():
    assert FORM_CONTENT_TYPE == "application/x-www-form-urlencoded;charset=UTF-8"


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("session", [None, SESSION])
def test_sign_verifies_over_query_and_body_parameters(method, session):
    request = builder(session=session, partner_id="top-import", sign_method=method).build(
        PAYLOAD, NOW
    )
    query, body = query_of(request), body_of(request)
    claimed = query.pop("sign")
    assert claimed == sign({**query, **body}, SECRET, method)


def test_sign_changes_with_the_payload():
    b = builder()
    first = query_of(b.build(PAYLOAD, NOW))["sign"]
    second = query_of(b.build(PAYLOAD.replace("200110004", "200110005"), NOW))["sign"]
    assert first != second


def test_each_build_is_stamped_with_the_time_given():
    later = query_of(builder().build(PAYLOAD, NOW + timedelta(seconds=1)))
    assert later["timestamp"] == "2024-03-01 12:05:07"


def test_payload_from_a_validated_row_has_tenant_id_as_number_and_case_id_as_string():
    columns = {f.name: i for i, f in enumerate(SPEC.fields)}
    record = RowValidator(SPEC, columns).validate(
        Row(2, ("ding1", "user1", "396743391396743391", "200110004", "cid1=="))
    )
    sent = json.loads(body_of(builder().build(record.payload_json, NOW))[SPEC.object_param])
    assert sent["tenant_id"] == 200110004
    assert isinstance(sent["tenant_id"], int)
    assert sent["case_id"] == "396743391396743391"


def test_secret_and_session_never_appear_in_query_body_or_repr():
    b = builder(session=SESSION)
    request = b.build(PAYLOAD, NOW)
    for text in (request.query, request.body.decode(), repr(request), repr(b)):
        assert SECRET not in text
        assert quote(SECRET, safe="") not in text
    assert SECRET not in repr(Credentials("key", SECRET, SESSION))
    assert SESSION not in repr(Credentials("key", SECRET, SESSION))
    assert SESSION not in repr(b)


# --- classifying an answer ----------------------------------------------------------------


def error_body(code, sub_code=None, sub_msg=None, msg="Some error"):
    error = {"code": code, "msg": msg, "request_id": "req-1"}
    if sub_code is not None:
        error["sub_code"] = sub_code
    if sub_msg is not None:
        error["sub_msg"] = sub_msg
    return json.dumps({"error_response": error}).encode()


def success_body(success, **result):
    doc = {
        ENVELOPE: {
            "result": {"system_time": "2022-09-03 16:12:49", "code": "200", "success": success}
            | result,
            "request_id": "req-ok",
        }
    }
    return json.dumps(doc).encode()


BAN = "This ban will last for 7 more seconds"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # the API's own envelope
        pytest.param(success_body(True), AnswerKind.ACCEPTED, id="success-true"),
        pytest.param(success_body("true"), AnswerKind.ACCEPTED, id="success-true-string"),
        pytest.param(success_body(False), AnswerKind.DECLINED, id="success-false"),
        pytest.param(success_body("false"), AnswerKind.DECLINED, id="success-false-string"),
        pytest.param(success_body(None), AnswerKind.DECLINED, id="success-null"),
        # throttled: call limits
        *(
            pytest.param(error_body(code, sub_msg=BAN), AnswerKind.THROTTLED, id=f"code-{code}")
            for code in (4, 5, 6, 7, 8)
        ),
        *(
            pytest.param(
                error_body(7, f"accesscontrol.limited-by-{kind}-access-count", BAN),
                AnswerKind.THROTTLED,
                id=f"accesscontrol-{kind}",
            )
            for kind in ("app", "api", "app-api")
        ),
        # transient: server side
        *(
            pytest.param(
                error_body(code, "isp.remote-service-error"),
                AnswerKind.TRANSIENT,
                id=f"isp-code-{code}",
            )
            for code in (15, 50, 520)
        ),
        pytest.param(error_body(10), AnswerKind.TRANSIENT, id="code-10"),
        pytest.param(error_body("10"), AnswerKind.TRANSIENT, id="code-10-as-string"),
        # fatal for the run
        *(
            pytest.param(error_body(code), AnswerKind.FATAL, id=f"code-{code}")
            for code in (9, 11, 12, 13, *range(21, 35))
        ),
        # failed row
        pytest.param(
            error_body(50, "isv.invalid-parameter", "非法参数"), AnswerKind.REJECTED, id="isv-50"
        ),
        pytest.param(error_body(15), AnswerKind.REJECTED, id="code-15-without-isp"),
        *(
            pytest.param(error_body(code), AnswerKind.REJECTED, id=f"code-{code}")
            for code in (3, 40, 41, 42, 43, 100, 999)
        ),
        pytest.param(error_body(None), AnswerKind.REJECTED, id="no-code"),
    ],
)
def test_classify_by_envelope_code_and_sub_code(body, expected):
    assert classify(200, body, SPEC).kind is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # the gateway says the API was not reached: retried
        (502, AnswerKind.TRANSIENT),
        (503, AnswerKind.TRANSIENT),
        (429, AnswerKind.TRANSIENT),
        # after the call was sent, and maybe acted on: never retried by default
        (500, AnswerKind.UNCERTAIN),
        (504, AnswerKind.UNCERTAIN),
        (404, AnswerKind.FATAL),
        (403, AnswerKind.FATAL),
        (301, AnswerKind.FATAL),
    ],
)
def test_classify_by_http_status_whatever_the_body(status, expected):
    reply = classify(status, success_body(True), SPEC)
    assert reply.kind is expected
    assert str(status) in reply.error


def test_fatal_http_status_tells_to_check_the_gateway():
    assert "--gateway" in classify(404, b"Not Found", SPEC).error


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html><body>502 Bad Gateway</body></html>", id="html-page"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="whitespace"),
        pytest.param(success_body(True)[:-5], id="truncated-json"),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(b'"success"', id="json-string"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b'{"some_other_response": {"result": {"success": true}}}', id="no-envelope"),
        pytest.param(b'{"error_response": "oops"}', id="error-response-not-an-object"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
def test_unparsable_or_unexpected_200_bodies_are_uncertain(body):
    """An HTTP 200 the client cannot read came after the call was sent: the platform may have
    acted on it, so it is not a transient error to retry."""
    reply = classify(200, body, SPEC)
    assert reply.kind is AnswerKind.UNCERTAIN
    assert reply.error


def test_empty_body_is_described_as_empty():
    assert "empty body" in classify(200, b"", SPEC).error


def test_success_keeps_code_request_id_and_system_time():
    reply = classify(200, success_body(True), SPEC)
    assert reply == Reply(
        AnswerKind.ACCEPTED,
        code="200",
        request_id="req-ok",
        system_time="2022-09-03 16:12:49",
    )


def test_business_failure_keeps_code_and_msg():
    reply = classify(200, success_body(False, code="E001", msg="case not found"), SPEC)
    assert reply.kind is AnswerKind.DECLINED
    assert (reply.code, reply.msg, reply.request_id) == ("E001", "case not found", "req-ok")


def test_error_response_keeps_every_field():
    body = error_body(50, "isv.invalid-parameter", "非法参数", msg="Remote service error")
    assert classify(200, body, SPEC) == Reply(
        AnswerKind.REJECTED,
        code="50",
        msg="Remote service error",
        sub_code="isv.invalid-parameter",
        sub_msg="非法参数",
        request_id="req-1",
    )


@pytest.mark.parametrize(
    ("sub_msg", "msg", "expected"),
    [
        ("This ban will last for 7 more seconds", "App Call Limited", 7.0),
        ("This ban will last for 1 more second", "App Call Limited", 1.0),
        ("this ban will last for 86400 more seconds", "", 86400.0),
        ("This ban will last for 0.5 more seconds", "", 0.5),
        (None, "This ban will last for 3 more seconds", 3.0),
        (None, "App Call Limited", 1.0),
        ("", "", 1.0),
        ("调用频率超限", "App Call Limited", 1.0),
    ],
)
def test_throttle_ban_seconds_are_read_from_the_message(sub_msg, msg, expected):
    reply = classify(
        200, error_body(7, "accesscontrol.limited-by-app-access-count", sub_msg, msg), SPEC
    )
    assert reply.kind is AnswerKind.THROTTLED
    assert reply.ban_seconds == expected


def test_ban_seconds_without_text_is_one_second():
    assert ban_seconds("") == 1.0


def test_only_throttled_replies_carry_a_ban():
    assert classify(200, error_body(25, sub_msg=BAN), SPEC).ban_seconds == 0.0


# --- advice and descriptions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("25", ("signature", "TOP_APP_SECRET", "--sign-method")),
        ("29", ("app key", "TOP_APP_KEY")),
        ("27", ("session", "TOP_SESSION")),
        ("11", ("permission",)),
        ("31", ("timestamp", "clock")),
    ],
)
def test_advice_for_fatal_codes_says_what_to_check(code, words):
    reply = classify(200, error_body(int(code)), SPEC)
    assert reply.kind is AnswerKind.FATAL
    text = advice(reply)
    for word in words:
        assert word in text


def test_advice_for_a_long_ban_mentions_the_quota():
    reply = classify(200, error_body(7, sub_msg="This ban will last for 86400 more seconds"), SPEC)
    assert "quota" in advice(reply)


def test_advice_for_an_http_failure_is_generic():
    assert "gateway" in advice(classify(404, b"", SPEC))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (error_body(25, msg="Invalid signature"), "code 25 Invalid signature"),
        (error_body(29, msg="Invalid app Key"), "code 29 Invalid app Key"),
        (
            error_body(27, "isv.session-expired", "会话过期", msg="Invalid session"),
            "code 27 Invalid session (isv.session-expired: 会话过期)",
        ),
        (
            error_body(11, "isv.permission-api-package-limit", msg="Insufficient isv permissions"),
            "code 11 Insufficient isv permissions (isv.permission-api-package-limit)",
        ),
        (error_body(31, msg="Invalid timestamp"), "code 31 Invalid timestamp"),
    ],
)
def test_describe_is_one_line_with_code_msg_and_sub_code(body, expected):
    assert describe(classify(200, body, SPEC)) == expected


def test_describe_a_transport_failure_gives_its_error():
    assert describe(classify(502, b"", SPEC)) == "HTTP 502 from the gateway"


def test_describe_with_nothing_known_says_no_answer():
    assert describe(Reply(AnswerKind.TRANSIENT)) == "no answer"


def test_describe_never_includes_the_request_parameters():
    text = describe(classify(200, error_body(25, msg="Invalid signature"), SPEC))
    assert SECRET not in text
    assert os.linesep not in text


# --- other specs: flat parameters, the session rule, success rules --------------------------

FLAT_AND_OBJECT = parse_spec(
    """
method = "taobao.example.member.tag"
object_param = "tag_request"

[[fields]]
name = "member_id"
type = "String"
required = true

[[fields]]
name = "tags"
type = "List<String>"
location = "flat"

[[fields]]
name = "active"
type = "Boolean"
location = "flat"

[[fields]]
name = "since"
type = "Date"
location = "flat"
"""
)
FLAT_ONLY = parse_spec(
    """
method = "taobao.example.item.flag"
success = "no_error"

[[fields]]
name = "num_iids"
type = "List<Number>"
required = true

[[fields]]
name = "note"
type = "String"
"""
)


def record_for(spec, **cells):
    names = [f.name for f in spec.fields]
    validator = RowValidator(spec, {n: i for i, n in enumerate(names)})
    return validator.validate(Row(2, tuple(cells.get(n, "") for n in names)))


def spec_builder(spec, session=None, sign_method="hmac-sha256"):
    return RequestBuilder(spec, Credentials("12345678", SECRET, session), sign_method=sign_method)


def test_flat_parameters_go_in_the_body_beside_the_object_parameter():
    record = record_for(
        FLAT_AND_OBJECT, member_id="m1", tags="vip, 新客", active="是", since="2024-03-01"
    )
    request = spec_builder(FLAT_AND_OBJECT).build(record, NOW)
    assert body_of(request) == {
        "tag_request": '{"member_id":"m1"}',
        "tags": "vip,新客",
        "active": "true",
        "since": "2024-03-01 00:00:00",
    }
    assert set(query_of(request)) == {
        "method",
        "app_key",
        "timestamp",
        "format",
        "v",
        "sign_method",
        "sign",
    }


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("spec", [FLAT_AND_OBJECT, FLAT_ONLY], ids=["flat+object", "flat-only"])
def test_flat_parameters_are_signed(spec, method):
    record = record_for(spec, member_id="m1", tags="a,b", num_iids="1,2", note="x y&z=1")
    request = spec_builder(spec, SESSION, method).build(record, NOW)
    query, body = query_of(request), body_of(request)
    claimed = query.pop("sign")
    assert claimed == sign({**query, **body}, SECRET, method)


def test_a_flat_only_spec_sends_no_object_parameter():
    record = record_for(FLAT_ONLY, num_iids="1， 22 ,333")
    assert body_of(spec_builder(FLAT_ONLY).build(record, NOW)) == {"num_iids": "1,22,333"}


def test_a_record_of_the_built_in_spec_builds_the_same_request_as_its_json():
    record = record_for(
        SPEC,
        user_identify="u",
        case_id="396743391396743391",
        tenant_id="200110004",
        open_conversation_id="cid==",
    )
    b = builder()
    assert b.build(record, NOW) == b.build(record.payload_json, NOW)


def test_params_of_a_record_hold_every_signed_parameter():
    record = record_for(FLAT_AND_OBJECT, member_id="m1", active="0")
    params = spec_builder(FLAT_AND_OBJECT).params(record, NOW)
    assert params["active"] == "false"
    assert params["tag_request"] == '{"member_id":"m1"}'
    assert "tags" not in params


NEEDS_SESSION = parse_spec(
    'method = "taobao.example.private.save"\nneeds_session = true\n'
    '[[fields]]\nname = "x"\ntype = "String"\n'
)


@pytest.mark.parametrize("session", [None, "", "  "])
def test_a_spec_needing_a_session_refuses_credentials_without_one(session):
    with pytest.raises(UsageError) as info:
        spec_builder(NEEDS_SESSION, session)
    message = str(info.value)
    assert "TOP_SESSION" in message
    assert "taobao.example.private.save" in message
    assert message.endswith(".")


def test_a_spec_needing_a_session_sends_it():
    request = spec_builder(NEEDS_SESSION, SESSION).build(record_for(NEEDS_SESSION, x="1"), NOW)
    assert query_of(request)["session"] == SESSION


def envelope_body(envelope: str, inner: dict) -> bytes:
    return json.dumps({envelope: inner}).encode()


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        ({"request_id": "r1"}, AnswerKind.ACCEPTED),
        ({"result": {"success": False}, "request_id": "r1"}, AnswerKind.ACCEPTED),
        ({"is_success": True, "request_id": "r1"}, AnswerKind.ACCEPTED),
    ],
)
def test_no_error_success_rule_takes_any_envelope(inner, expected):
    body = envelope_body("taobao_example_item_flag_response", inner)
    reply = classify(200, body, FLAT_ONLY)
    assert reply.kind is expected
    assert reply.request_id == "r1"


def test_no_error_success_rule_still_reads_errors_and_needs_the_envelope():
    assert classify(200, error_body(7), FLAT_ONLY).kind is AnswerKind.THROTTLED
    assert classify(200, error_body(41), FLAT_ONLY).kind is AnswerKind.REJECTED
    other = envelope_body("something_else_response", {})
    assert classify(200, other, FLAT_ONLY).kind is AnswerKind.UNCERTAIN


def test_a_success_path_elsewhere_reads_code_and_msg_beside_it():
    spec = parse_spec(
        'method = "taobao.example.x"\nsuccess_path = "data.ok"\n'
        '[[fields]]\nname = "x"\ntype = "String"\n'
    )
    ok = envelope_body("taobao_example_x_response", {"data": {"ok": True, "code": "0"}})
    assert classify(200, ok, spec) == Reply(AnswerKind.ACCEPTED, code="0")
    bad = envelope_body(
        "taobao_example_x_response", {"data": {"ok": False, "code": "E9", "msg": "no"}}
    )
    reply = classify(200, bad, spec)
    assert (reply.kind, reply.code, reply.msg) == (AnswerKind.DECLINED, "E9", "no")
    top_level = parse_spec(
        'method = "taobao.example.x"\nsuccess_path = "is_success"\n'
        '[[fields]]\nname = "x"\ntype = "String"\n'
    )
    flag = envelope_body("taobao_example_x_response", {"is_success": "true", "request_id": "r"})
    assert classify(200, flag, top_level).kind is AnswerKind.ACCEPTED


def test_the_robot_tenant_spec_reads_its_own_envelope():
    robot = load_spec("alibaba.lyservice.robot.tenant.sync")
    ok = envelope_body(
        "alibaba_lyservice_robot_tenant_sync_response",
        {"result": {"success": True, "code": "200"}, "request_id": "r"},
    )
    assert classify(200, ok, robot).kind is AnswerKind.ACCEPTED
    assert classify(200, success_body(True), robot).kind is AnswerKind.UNCERTAIN
