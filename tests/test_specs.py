"""API specs as data: the built-in spec, spec files, and the errors a bad spec gives."""

from __future__ import annotations

import pytest

from importer.errors import SpecError
from importer.spec import (
    ApiSpec,
    FieldSpec,
    builtin_methods,
    load_spec,
    normalise_header,
    parse_spec,
)

BUILTIN = "alibaba.lyservice.group.ticket.customer.save"

MINIMAL = """
method = "taobao.example.thing.save"
object_param = "thing_request"

[[fields]]
name = "thing_id"
type = "Number"
required = true
aliases = ["thingId", "物品ID"]
example = "42"

[[fields]]
name = "label"
type = "String"
"""


# --- the built-in spec ----------------------------------------------------------------------


def test_default_spec_is_the_built_in_api():
    assert load_spec(None).method == BUILTIN


def test_built_in_spec_by_method_name_equals_the_default():
    assert load_spec(BUILTIN) == load_spec(None)


def test_built_in_spec_describes_the_api():
    spec = load_spec(None)
    assert spec.object_param == "group_customer_case_request"
    assert spec.response_envelope == "alibaba_lyservice_group_ticket_customer_save_response"
    assert spec.success_path == "result.success"
    assert spec.needs_session is False
    assert spec.title == "群访客工单创建"


def test_built_in_fields_in_order_with_types_and_required():
    assert [(f.name, f.type, f.required) for f in load_spec(None).fields] == [
        ("corp_id", "String", False),
        ("user_identify", "String", True),
        ("case_id", "String", True),
        ("tenant_id", "Number", True),
        ("open_conversation_id", "String", True),
    ]


def test_required_fields_leave_out_the_optional_corp_id():
    names = [f.name for f in load_spec(None).required_fields]
    assert names == ["user_identify", "case_id", "tenant_id", "open_conversation_id"]


def test_builtin_methods_lists_the_shipped_specs():
    assert BUILTIN in builtin_methods()
    assert builtin_methods() == sorted(builtin_methods())


def test_unknown_method_is_a_spec_error_listing_the_built_ins():
    with pytest.raises(SpecError) as info:
        load_spec("taobao.no.such.method")
    message = str(info.value)
    assert "'taobao.no.such.method'" in message
    assert BUILTIN in message
    assert message.endswith(".")


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("corp_id", "corp_id"),
        ("corpId", "corp_id"),
        ("钉钉组织ID", "corp_id"),
        ("userIdentify", "user_identify"),
        ("用户唯一加密键", "user_identify"),
        ("caseId", "case_id"),
        ("工单ID", "case_id"),
        ("tenantId", "tenant_id"),
        ("租户ID", "tenant_id"),
        ("openConversationId", "open_conversation_id"),
        ("群开放ID", "open_conversation_id"),
        ("Open Conversation ID", "open_conversation_id"),
        ("工单 id", "case_id"),
        ("TENANT-ID", "tenant_id"),
    ],
)
def test_header_index_finds_names_camel_case_and_chinese_aliases(header, field):
    assert load_spec(None).header_index()[normalise_header(header)] == field


def test_header_index_keys_are_normalised():
    index = load_spec(None).header_index()
    assert all(key == normalise_header(key) for key in index)
    assert "钉钉组织id" in index


@pytest.mark.parametrize(
    "header", ["Case ID", "case-id", "CASE_ID", "caseId", "case_id", " case id ", "Case\tId"]
)
def test_normalise_header_drops_case_spaces_underscores_and_dashes(header):
    assert normalise_header(header) == "caseid"


def test_normalise_header_case_folds_beyond_ascii():
    assert normalise_header("STRASSE") == normalise_header("straße")


def test_normalise_header_accepts_non_strings():
    assert normalise_header(42) == "42"


# --- spec files -----------------------------------------------------------------------------


def test_a_toml_path_is_loaded(tmp_path):
    path = tmp_path / "thing.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    spec = load_spec(str(path))
    assert spec == ApiSpec(
        method="taobao.example.thing.save",
        object_param="thing_request",
        fields=(
            FieldSpec("thing_id", "Number", True, ("thingId", "物品ID"), "42"),
            FieldSpec("label", "String", False),
        ),
        response_envelope="taobao_example_thing_save_response",
    )


def test_a_missing_toml_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "nope.toml"))


def test_a_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(MINIMAL.encode("utf-8") + b'\ntitle = "\xff\xfe"\n')
    with pytest.raises(SpecError, match=r"latin\.toml"):
        load_spec(str(path))


def test_response_envelope_and_success_path_can_be_set():
    spec = parse_spec(
        MINIMAL.replace(
            'object_param = "thing_request"',
            'object_param = "thing_request"\nresponse_envelope = "custom_response"\n'
            'success_path = "data.ok"\nneeds_session = true',
        )
    )
    assert (spec.response_envelope, spec.success_path, spec.needs_session) == (
        "custom_response",
        "data.ok",
        True,
    )


BAD_SPECS = [
    pytest.param("method = ", "not valid TOML", id="bad-toml"),
    pytest.param(
        MINIMAL.replace('method = "taobao.example.thing.save"', ""), "method", id="no-method"
    ),
    pytest.param(
        MINIMAL.replace('method = "taobao.example.thing.save"', "method = 3"),
        "method",
        id="method-not-text",
    ),
    pytest.param(
        MINIMAL.replace('object_param = "thing_request"', "").replace(
            'type = "String"', 'type = "String"\nlocation = "object"'
        ),
        "no object_param",
        id="object-field-without-object-param",
    ),
    pytest.param(
        MINIMAL.replace('type = "Number"', 'type = "Integer"'), "'Integer'", id="unknown-type"
    ),
    pytest.param(MINIMAL.replace('type = "String"', ""), "no type", id="missing-type"),
    pytest.param(MINIMAL.replace('name = "label"', ""), "#2 has no name", id="field-without-name"),
    pytest.param(MINIMAL.split("[[fields]]")[0], "[[fields]]", id="no-fields"),
    pytest.param(MINIMAL.split("[[fields]]")[0] + "fields = []", "[[fields]]", id="empty-fields"),
    pytest.param(
        MINIMAL.split("[[fields]]")[0] + 'fields = "thing_id"', "[[fields]]", id="fields-not-tables"
    ),
    pytest.param(
        MINIMAL.split("[[fields]]")[0] + "fields = [1, 2]", "[[fields]]", id="fields-of-numbers"
    ),
    pytest.param(
        MINIMAL.replace('aliases = ["thingId", "物品ID"]', 'aliases = "thingId"'),
        "aliases",
        id="aliases-not-a-list",
    ),
    pytest.param(
        MINIMAL + '\n[[fields]]\nname = "label"\ntype = "String"\n', "twice", id="duplicate-field"
    ),
    pytest.param(
        MINIMAL.replace("required = true", 'required = "false"'),
        "true or false",
        id="required-not-bool",
    ),
    pytest.param(
        MINIMAL + '\n[[fields]]\nname = "other"\ntype = "String"\naliases = ["Thing ID"]\n',
        "names both 'thing_id' and 'other'",
        id="alias-collision",
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_SPECS)
def test_a_bad_spec_is_a_spec_error_sentence_naming_the_file(text, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="my.toml")
    message = str(info.value)
    assert "my.toml" in message
    assert words in message
    assert message.endswith(".")


def test_a_bad_spec_file_is_reported_by_its_path(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("method = ", encoding="utf-8")
    with pytest.raises(SpecError, match=r"broken\.toml"):
        load_spec(str(path))


# --- the second built-in spec ---------------------------------------------------------------

ROBOT = "alibaba.lyservice.robot.tenant.sync"


def test_builtin_methods_are_the_ticket_and_the_robot_tenant_apis():
    assert builtin_methods() == [BUILTIN, ROBOT]


def test_robot_tenant_spec_describes_its_object_parameter():
    spec = load_spec(ROBOT)
    assert spec.object_param == "open_robot_code_relation_sync_request"
    assert spec.response_envelope == "alibaba_lyservice_robot_tenant_sync_response"
    assert (spec.success_path, spec.needs_session, spec.identity) == ("result.success", False, ())
    assert [(f.name, f.type, f.required, f.location) for f in spec.fields] == [
        ("corp_id", "String", True, "object"),
        ("tenant_id", "Number", True, "object"),
        ("robot_code", "String", False, "object"),
        ("client_id", "String", False, "object"),
    ]


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("钉钉组织ID", "corp_id"),
        ("租户ID", "tenant_id"),
        ("机器人编码", "robot_code"),
        ("客户端ID", "client_id"),
        ("robotCode", "robot_code"),
        ("clientId", "client_id"),
    ],
)
def test_robot_tenant_headers_include_camel_case_and_chinese_labels(header, field):
    assert load_spec(ROBOT).header_index()[normalise_header(header)] == field


# --- the whole format -----------------------------------------------------------------------

FULL = """
method = "taobao.example.member.tag"
title = "会员打标"
object_param = "tag_request"
needs_session = true
success = "no_error"
identity = ["member_id", "tags"]

[[fields]]
name = "member_id"
type = "String"
required = true
max_length = 32

[[fields]]
name = "tags"
type = "List<String>"
required = true
location = "flat"
max_items = 5
max_length = 8
allowed = ["vip", "new", "lost"]
example = ["vip", "new"]

[[fields]]
name = "levels"
type = "List<Number>"
allowed = [1, "2", 3]

[[fields]]
name = "active"
type = "Boolean"
location = "flat"
example = true

[[fields]]
name = "since"
type = "Date"
"""


def test_the_whole_format_is_read():
    spec = parse_spec(FULL)
    assert (spec.object_param, spec.needs_session, spec.success_path, spec.identity) == (
        "tag_request",
        True,
        "",
        ("member_id", "tags"),
    )
    member, tags, levels, active, since = spec.fields
    assert member == FieldSpec("member_id", "String", True, max_length=32)
    assert tags == FieldSpec(
        "tags",
        "List<String>",
        True,
        example="vip,new",
        location="flat",
        max_length=8,
        allowed=("vip", "new", "lost"),
        max_items=5,
    )
    assert (tags.is_list, tags.item_type, tags.is_flat) == (True, "String", True)
    assert levels.allowed == ("1", "2", "3")
    assert levels.item_type == "Number"
    assert (active.location, active.example) == ("flat", "true")
    assert since.location == "object"
    assert [f.name for f in spec.flat_fields] == ["tags", "active"]
    assert [f.name for f in spec.fields if not f.is_flat] == ["member_id", "levels", "since"]


def test_without_object_param_every_field_is_flat():
    spec = parse_spec(MINIMAL.replace('object_param = "thing_request"', ""))
    assert spec.object_param is None
    assert [f.location for f in spec.fields] == ["flat", "flat"]


def test_success_path_default_and_no_error_rule_in_words():
    assert load_spec(None).success_rule().endswith("_response.result.success is true")
    assert parse_spec(FULL).success_rule() == (
        "taobao_example_member_tag_response without an error_response"
    )


def test_describe_shows_location_types_rules_identity_session_and_success():
    text = parse_spec(FULL).describe()
    assert "object parameter: tag_request" in text
    assert "flat parameters: tags, active" in text
    assert "session: needed (TOP_SESSION)" in text
    assert "without an error_response" in text
    assert "journal and duplicate key: member_id, tags" in text
    assert (
        "at most 5 items; each item at most 8 characters; each item one of: vip, new, lost" in text
    )
    lines = {line.split()[0]: line for line in text.splitlines()[5:] if line.startswith("  ")}
    assert lines["tags"].split()[1:4] == ["flat", "List<String>", "required"]
    assert lines["since"].split()[1:4] == ["object", "Date", "optional"]


def test_describe_of_the_built_in_says_whole_payload_and_no_session():
    text = load_spec(None).describe()
    assert "session: not needed" in text
    assert "journal and duplicate key: the whole payload" in text


MORE_BAD_SPECS = [
    pytest.param("qps = 3\n" + MINIMAL, "unknown key 'qps'", id="unknown-top-key"),
    pytest.param(
        MINIMAL.replace("required = true", "requird = true"),
        "unknown key 'requird'",
        id="unknown-field-key",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "string"'),
        "case-sensitive: 'String'",
        id="type-wrong-case",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "List"'), "List<String>", id="bare-list"
    ),
    pytest.param(
        MINIMAL.replace('method = "taobao.example.thing.save"', 'method = "save thing"'),
        "not a TOP method name",
        id="method-not-dotted",
    ),
    pytest.param(
        MINIMAL.replace('object_param = "thing_request"', 'object_param = "thing request"'),
        "not a parameter name",
        id="object-param-not-a-name",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "String"\nlocation = "query"'),
        "location 'query'",
        id="bad-location",
    ),
    pytest.param(
        MINIMAL.replace('name = "label"', 'name = "timestamp"').replace(
            'type = "String"', 'type = "String"\nlocation = "flat"'
        ),
        "system parameter",
        id="flat-system-param",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "String"\nlocation = "flat"').replace(
            'type = "Number"', 'type = "Number"\nlocation = "flat"'
        ),
        "object_param 'thing_request' has no fields",
        id="object-param-without-fields",
    ),
    pytest.param(
        MINIMAL.replace('type = "Number"', 'type = "Number"\nmax_length = 5'),
        "max_length applies to String and List<String>",
        id="max-length-on-number",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "String"\nmax_length = 0'),
        "at least 1",
        id="max-length-zero",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "String"\nmax_items = 3'),
        "max_items applies to",
        id="max-items-on-string",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "Boolean"\nallowed = ["true"]'),
        "allowed applies to",
        id="allowed-on-boolean",
    ),
    pytest.param(
        MINIMAL.replace('type = "Number"', 'type = "Number"\nallowed = [1, "two"]'),
        "'two' is not a whole number",
        id="allowed-number-not-whole",
    ),
    pytest.param(
        MINIMAL.replace('type = "String"', 'type = "String"\nallowed = []'),
        "non-empty list",
        id="allowed-empty",
    ),
    pytest.param('identity = ["nope"]\n' + MINIMAL, "identity names 'nope'", id="identity-unknown"),
    pytest.param(
        'identity = "thing_id"\n' + MINIMAL, "identity must be a list", id="identity-text"
    ),
    pytest.param(
        MINIMAL + "\nneeds_session = true\n",
        "put the spec's own keys above the first [[fields]]",
        id="top-level-key-after-fields",
    ),
    pytest.param('success = "always"\n' + MINIMAL, 'success = "no_error"', id="success-unknown"),
    pytest.param(
        'success = "no_error"\nsuccess_path = "result.success"\n' + MINIMAL,
        "either success_path or success",
        id="success-twice",
    ),
    pytest.param(
        'success_path = "result success"\n' + MINIMAL, "dotted path", id="success-path-bad"
    ),
    pytest.param('needs_session = "yes"\n' + MINIMAL, "true or false", id="session-not-bool"),
    pytest.param(
        MINIMAL.replace('aliases = ["thingId", "物品ID"]', 'aliases = ["thingId", ""]'),
        "aliases must be a list of column headers",
        id="empty-alias",
    ),
]


@pytest.mark.parametrize(("text", "words"), MORE_BAD_SPECS)
def test_every_spec_mistake_is_one_sentence_naming_the_file(text, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="my.toml")
    message = str(info.value)
    assert message.startswith("API spec my.toml: ")
    assert "\n" not in message  # one mistake, one sentence
    assert words in message
    assert message.endswith(".")


def test_every_mistake_of_a_file_is_reported_at_once():
    text = """
title = "broken"
object_param = "req"

[[fields]]
name = "a"
type = "Blob"
aliases = ["Alpha"]

[[fields]]
name = "b"
type = "String"
aliases = ["alpha"]
"""
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="bad.toml")
    head, *mistakes = str(info.value).splitlines()
    assert head == "API spec bad.toml has 3 mistakes:"
    assert len(mistakes) == 3
    assert all(m.startswith("  - ") and m.endswith(".") for m in mistakes)
    joined = "\n".join(mistakes)
    assert "there is no method" in joined
    assert "field 'a' has type 'Blob'" in joined
    assert "header 'alpha' names both 'a' and 'b'" in joined
