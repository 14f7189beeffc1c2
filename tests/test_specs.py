"""API specs as data: the built-in spec, spec files, and the errors a bad spec gives."""

from __future__ import annotations

import pytest

from importer.errors import SpecError
from importer.specs import (
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
        MINIMAL.replace('object_param = "thing_request"', ""), "object_param", id="no-object-param"
    ),
    pytest.param(
        MINIMAL.replace('type = "Number"', 'type = "Integer"'), "'Integer'", id="unknown-type"
    ),
    pytest.param(MINIMAL.replace('type = "String"', ""), "None", id="missing-type"),
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
