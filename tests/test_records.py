"""Row validation against the built-in spec: what is sent, and what is refused and why."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.records import DuplicateFilter, RowValidator
from importer.rows import (
    RESULT_COLUMNS,
    Outcome,
    RequestRecord,
    Row,
    RowError,
    Status,
    payload_hash,
)
from importer.spec import load_spec, parse_spec

SPEC = load_spec(None)
# The file's columns in an order unlike the spec's, with an unknown column in between.
HEADER = ("case_id", "note", "tenant_id", "user_identify", "open_conversation_id", "corp_id")
COLUMNS = {name: i for i, name in enumerate(HEADER) if name != "note"}
INDEX = COLUMNS
GOOD = {
    "case_id": "396743391396743391",
    "note": "kept in the report, never sent",
    "tenant_id": "200110004",
    "user_identify": "wegdtJRNVp51PWHMWqdwGBNnwg3",
    "open_conversation_id": "ciddtJRNVp51PWHMWqdwGBNnw==",
    "corp_id": "ding5df29af51dd68a8d35c2f4657eb6378f",
}
GOOD_JSON = (
    '{"corp_id":"ding5df29af51dd68a8d35c2f4657eb6378f",'
    '"user_identify":"wegdtJRNVp51PWHMWqdwGBNnwg3",'
    '"case_id":"396743391396743391",'
    '"tenant_id":200110004,'
    '"open_conversation_id":"ciddtJRNVp51PWHMWqdwGBNnw=="}'
)

validator = RowValidator(SPEC, COLUMNS)


def row(source_row: int = 2, numeric: tuple[str, ...] = (), **cells: str) -> Row:
    """GOOD cells with some replaced; ``numeric`` names fields read from number cells."""
    values = {**GOOD, **cells}
    return Row(
        source_row,
        tuple(values[name] for name in HEADER),
        frozenset(INDEX[name] for name in numeric),
    )


def validate(**kwargs) -> RequestRecord | RowError:
    return validator.validate(row(**kwargs))


def payload(result) -> dict:
    assert isinstance(result, RequestRecord), result
    return json.loads(result.payload_json)


def error(result) -> RowError:
    assert isinstance(result, RowError), result
    return result


# --- a valid row ----------------------------------------------------------------------------


def test_valid_row_becomes_compact_json_in_spec_field_order():
    record = validate()
    assert record == RequestRecord(
        source_row=2,
        payload_json=GOOD_JSON,
        row_key=hashlib.sha256(GOOD_JSON.encode()).hexdigest(),
    )


def test_tenant_id_is_a_json_number_and_case_id_a_json_string():
    sent = payload(validate())
    assert sent["tenant_id"] == 200110004
    assert sent["case_id"] == "396743391396743391"


def test_empty_optional_corp_id_is_left_out():
    assert "corp_id" not in payload(validate(corp_id="   "))


def test_missing_optional_column_is_left_out():
    columns = {k: v for k, v in COLUMNS.items() if k != "corp_id"}
    record = RowValidator(SPEC, columns).validate(row())
    assert "corp_id" not in payload(record)


def test_values_are_trimmed_before_sending():
    sent = payload(validate(user_identify="  wegd\t", case_id=" 123 "))
    assert (sent["user_identify"], sent["case_id"]) == ("wegd", "123")


def test_non_ascii_values_are_sent_as_is():
    record = validate(user_identify="用户一")
    assert '"user_identify":"用户一"' in record.payload_json


def test_a_row_shorter_than_the_header_treats_missing_cells_as_empty():
    short = Row(5, ("1", "x", "200110004"))
    assert error(validator.validate(short)).field == "user_identify"


def test_payload_hash_is_sha256_hex_of_the_json():
    record = validate()
    assert record.row_key == hashlib.sha256(record.payload_json.encode("utf-8")).hexdigest()


# --- Number ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200110004", 200110004),
        ("200110004.0", 200110004),
        ("200110004.00", 200110004),
        (" 200110004 ", 200110004),
        ("-5", -5),
        ("+7", 7),
        ("0", 0),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_number_accepts_whole_numbers_in_int64(text, expected):
    assert payload(validate(tenant_id=text))["tenant_id"] == expected


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("2.5", "whole number"),
        ("abc", "whole number"),
        ("1,000", "whole number"),
        ("0x10", "whole number"),
        ("1_000", "whole number"),
        ("1e3", "scientific notation"),
        ("1e30", "scientific notation"),
        ("2.0011E+08", "scientific notation"),
        ("9223372036854775808", "int64"),
        ("-9223372036854775809", "int64"),
        pytest.param("1" * 5000, "int64", id="5000-digits"),
    ],
)
def test_number_rejects(text, rule):
    err = error(validate(tenant_id=text))
    assert err.field == "tenant_id"
    assert err.value == text
    assert rule in err.message


def test_required_number_empty_is_rejected():
    err = error(validate(tenant_id=""))
    assert (err.field, err.value) == ("tenant_id", "")
    assert "required" in err.message


def test_number_cell_beyond_2_53_is_rejected_with_the_excel_advice():
    err = error(validate(tenant_id="9007199254740993", numeric=("tenant_id",)))
    assert "2^53" in err.message
    assert "format the column as Text" in err.message


def test_number_cell_at_2_53_is_exact_and_accepted():
    record = validate(tenant_id="9007199254740992", numeric=("tenant_id",))
    assert payload(record)["tenant_id"] == 2**53


def test_the_same_big_number_typed_as_text_is_accepted():
    assert payload(validate(tenant_id="9007199254740993"))["tenant_id"] == 9007199254740993


def test_number_cell_with_a_float_rendering_is_accepted():
    record = validate(tenant_id="200110004.0", numeric=("tenant_id",))
    assert payload(record)["tenant_id"] == 200110004


# --- String ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_identify", "case_id", "open_conversation_id"])
@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_required_string_empty_is_rejected(field, blank):
    err = error(validate(**{field: blank}))
    assert err == RowError(2, field, blank, f"{field} is required but empty")


@pytest.mark.parametrize("text", ["3.96743E+17", "3,96743E+17", "1e5", "-2E-3", "3.96743e17"])
def test_string_in_scientific_notation_is_rejected(text):
    err = error(validate(case_id=text))
    assert err.field == "case_id"
    assert "scientific notation" in err.message
    assert "format the column as Text" in err.message


def test_string_from_a_number_cell_of_more_than_15_digits_is_rejected():
    err = error(validate(case_id="396743391396743000", numeric=("case_id",)))
    assert "18 digits" in err.message
    assert "format the column as Text" in err.message


def test_string_from_a_number_cell_of_15_digits_is_accepted():
    record = validate(case_id="123456789012345", numeric=("case_id",))
    assert payload(record)["case_id"] == "123456789012345"


def test_the_same_18_digits_typed_as_text_are_accepted():
    assert payload(validate(case_id="396743391396743000"))["case_id"] == "396743391396743000"


def test_numeric_flag_of_another_column_does_not_matter():
    record = validate(case_id="396743391396743391", numeric=("tenant_id",))
    assert payload(record)["case_id"] == "396743391396743391"


@pytest.mark.parametrize("text", ["=1+1", "+86 138", "-1", "@user", '=HYPERLINK("x")'])
def test_formula_like_text_is_sent_as_text(text):
    assert payload(validate(user_identify=text))["user_identify"] == text


# --- messages -------------------------------------------------------------------------------

BAD_CELLS = [
    pytest.param({"tenant_id": "2.5"}, "tenant_id", "2.5", "whole number", id="number"),
    pytest.param({"tenant_id": "1e30"}, "tenant_id", "1e30", "scientific", id="number-sci"),
    pytest.param(
        {"tenant_id": "99999999999999999999"},
        "tenant_id",
        "99999999999999999999",
        "int64",
        id="int64",
    ),
    pytest.param({"case_id": "3.96743E+17"}, "case_id", "3.96743E+17", "scientific", id="sci"),
    pytest.param(
        {"case_id": "396743391396743000", "numeric": ("case_id",)},
        "case_id",
        "396743391396743000",
        "15",
        id="rounded-id",
    ),
]


@pytest.mark.parametrize(("cells", "field", "value", "rule"), BAD_CELLS)
def test_every_row_error_names_field_value_and_rule(cells, field, value, rule):
    err = error(validate(source_row=17, **cells))
    assert (err.source_row, err.field, err.value) == (17, field, value)
    assert field in err.message
    assert value in err.message
    assert rule in err.message


def test_row_error_keeps_the_cell_exactly_as_read():
    err = error(validate(tenant_id=" 2.5 "))
    assert err.value == " 2.5 "


def test_the_first_bad_field_in_spec_order_is_reported():
    err = error(validate(user_identify="", tenant_id="abc"))
    assert err.field == "user_identify"


# --- duplicates -----------------------------------------------------------------------------


def test_duplicate_filter_returns_the_first_row_of_an_identical_payload():
    dup = DuplicateFilter()
    assert dup.first_row(validate(source_row=2)) is None
    assert dup.first_row(validate(source_row=3, case_id="1")) is None
    assert dup.first_row(validate(source_row=9)) == 2
    assert dup.first_row(validate(source_row=12)) == 2


def test_rows_that_differ_only_in_trimmed_spaces_or_unsent_columns_are_duplicates():
    dup = DuplicateFilter()
    dup.first_row(validate(source_row=2))
    assert dup.first_row(validate(source_row=3, note="other", tenant_id=" 200110004.0 ")) == 2


# --- the report's words ---------------------------------------------------------------------


def test_outcome_values_follow_the_result_columns():
    outcome = Outcome(Status.SUCCESS, code="200", attempts=2)
    assert ("source_row", *Outcome.COLUMNS) == RESULT_COLUMNS
    assert dict(zip(Outcome.COLUMNS, outcome.values(), strict=True))["attempts"] == 2
    assert outcome.values()[0] == "success"


def test_status_prints_as_its_report_word():
    assert str(Status.NOT_SENT) == "not_sent"


# --- properties -----------------------------------------------------------------------------


@given(
    cells=st.lists(st.text(), min_size=0, max_size=8),
    numeric=st.frozensets(st.integers(min_value=0, max_value=8)),
)
def test_validate_never_raises_on_arbitrary_text(cells, numeric):
    result = validator.validate(Row(2, tuple(cells), numeric))
    assert isinstance(result, RequestRecord | RowError)


@given(
    digits=st.text(alphabet="0123456789+-.eE, ", max_size=40),
    numeric=st.booleans(),
)
def test_number_validation_never_raises_on_number_like_text(digits, numeric):
    result = validate(tenant_id=digits, numeric=("tenant_id",) if numeric else ())
    if isinstance(result, RequestRecord):
        assert -(2**63) <= payload(result)["tenant_id"] < 2**63


@given(value=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_every_int64_written_out_round_trips(value):
    assert payload(validate(tenant_id=str(value)))["tenant_id"] == value


@given(text=st.text(min_size=1).filter(lambda t: t.strip()))
def test_a_valid_payload_is_compact_json_that_parses_back(text):
    result = validate(user_identify=text)
    if isinstance(result, RequestRecord):
        assert json.loads(result.payload_json)["user_identify"] == text.strip()
        assert ", " not in result.payload_json.replace(text.strip(), "")


# --- other specs: flat parameters, Boolean, Date, List, max length, allowed, identity ----------

RICH = parse_spec(
    """
method = "taobao.example.member.tag"
object_param = "tag_request"

[[fields]]
name = "member_id"
type = "String"
required = true
max_length = 8

[[fields]]
name = "tier"
type = "String"
allowed = ["gold", "silver"]

[[fields]]
name = "tags"
type = "List<String>"
location = "flat"
max_items = 3

[[fields]]
name = "levels"
type = "List<Number>"
allowed = [1, 2, 3]

[[fields]]
name = "active"
type = "Boolean"
location = "flat"

[[fields]]
name = "vip"
type = "Boolean"

[[fields]]
name = "since"
type = "Date"
location = "flat"

[[fields]]
name = "until"
type = "Date"

[[fields]]
name = "shop_id"
type = "Number"
location = "flat"
allowed = [7, 8]
"""
)
RICH_NAMES = [f.name for f in RICH.fields]
rich_validator = RowValidator(RICH, {name: i for i, name in enumerate(RICH_NAMES)})


def rich(source_row: int = 2, **cells: str) -> RequestRecord | RowError:
    return rich_validator.validate(Row(source_row, tuple(cells.get(n, "") for n in RICH_NAMES)))


def test_object_fields_go_to_the_json_and_flat_fields_to_text_params_in_spec_order():
    record = rich(
        member_id="m1",
        tier="gold",
        tags="a, b",
        levels="1,3",
        active="TRUE",
        vip="否",
        since="2024-03-01",
        until="2024/3/9 8:05",
        shop_id="7",
    )
    assert record.payload_json == (
        '{"member_id":"m1","tier":"gold","levels":[1,3],"vip":false,"until":"2024-03-09 08:05:00"}'
    )
    assert record.flat == (
        ("tags", "a,b"),
        ("active", "true"),
        ("since", "2024-03-01 00:00:00"),
        ("shop_id", "7"),
    )


def test_empty_optional_flat_fields_are_left_out():
    assert rich(member_id="m1").flat == ()
    assert rich(member_id="m1").payload_json == '{"member_id":"m1"}'


def test_the_hash_covers_the_flat_parameters_sorted():
    record = rich(member_id="m1", tags="x", active="1")
    expected = json.dumps(['{"member_id":"m1"}', [["active", "true"], ["tags", "x"]]])
    assert record.row_key == hashlib.sha256(expected.encode()).hexdigest()
    assert record.row_key != rich(member_id="m1", tags="x", active="0").row_key


def test_a_request_record_is_still_built_with_three_arguments():
    record = RequestRecord(3, "{}", "h")
    assert record.flat == ()


def test_a_spec_without_object_param_sends_only_flat_parameters():
    spec = parse_spec(
        'method = "taobao.example.flat"\n[[fields]]\nname = "num_iid"\ntype = "Number"\n'
        "required = true\n"
    )
    record = RowValidator(spec, {"num_iid": 0}).validate(Row(2, ("42",)))
    assert (record.payload_json, record.flat) == ("", (("num_iid", "42"),))
    assert record.row_key == payload_hash("", (("num_iid", "42"),))


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("Y", True),
        ("是", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("No", False),
        ("n", False),
        ("否", False),
    ],
)
def test_boolean_accepts_words_digits_and_chinese(text, sent):
    record = rich(member_id="m1", vip=text, active=text)
    assert json.loads(record.payload_json)["vip"] is sent
    assert dict(record.flat)["active"] == ("true" if sent else "false")


@pytest.mark.parametrize("text", ["maybe", "2", "t", "真", "on"])
def test_boolean_rejects_anything_else(text):
    err = error(rich(member_id="m1", vip=text))
    assert (err.field, err.value) == ("vip", text)
    assert "must be true or false" in err.message


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("2024-03-01 12:05:06", "2024-03-01 12:05:06"),  # as typed, and a workbook's date cell
        ("2024-03-01", "2024-03-01 00:00:00"),  # a workbook's date-only cell
        ("2024-3-1 9:05", "2024-03-01 09:05:00"),
        ("2024/03/01 12:05:06", "2024-03-01 12:05:06"),
        ("2024-03-01T12:05:06", "2024-03-01 12:05:06"),
        ("2024-02-29", "2024-02-29 00:00:00"),
    ],
)
def test_date_is_sent_as_yyyy_mm_dd_hh_mm_ss(text, sent):
    record = rich(member_id="m1", until=text, since=text)
    assert json.loads(record.payload_json)["until"] == sent
    assert dict(record.flat)["since"] == sent


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("2023-02-29", "not a real date"),
        ("2024-13-01", "not a real date"),
        ("2024-03-01 24:00:00", "not a real date"),
        ("01/03/2024", "yyyy-MM-dd HH:mm:ss"),
        ("45352", "yyyy-MM-dd HH:mm:ss"),  # an Excel date serial
        ("yesterday", "yyyy-MM-dd HH:mm:ss"),
        ("2024-03-01 12:05:06.5", "yyyy-MM-dd HH:mm:ss"),
    ],
)
def test_date_rejects_what_is_not_a_date(text, rule):
    err = error(rich(member_id="m1", until=text))
    assert (err.field, err.value) == ("until", text)
    assert rule in err.message


def test_lists_split_on_ascii_and_full_width_commas_and_trim_items():
    record = rich(member_id="m1", tags=" a ，b,c ", levels="1， 2")
    assert dict(record.flat)["tags"] == "a,b,c"
    assert json.loads(record.payload_json)["levels"] == [1, 2]


@pytest.mark.parametrize(
    ("cells", "field", "rule"),
    [
        ({"tags": "a,,b"}, "tags", "empty item"),
        ({"tags": "a,b,"}, "tags", "empty item"),
        ({"tags": "a,b,c,d"}, "tags", "has 4 items; at most 3 are allowed"),
        ({"levels": "1,x"}, "levels", "has an item 'x' that must be a whole number"),
        ({"levels": "1,4"}, "levels", "has an item '4' that is not one of the allowed values"),
        ({"tags": "3.96743E+17"}, "tags", "scientific notation"),
    ],
)
def test_list_items_are_checked_one_by_one(cells, field, rule):
    err = error(rich(member_id="m1", **cells))
    assert (err.field, err.value) == (field, cells[field])
    assert rule in err.message


def test_max_length_counts_characters_and_names_the_limit():
    assert isinstance(rich(member_id="会员一二三四五六"), RequestRecord)  # 8 characters
    err = error(rich(member_id="会员一二三四五六七"))
    assert err.field == "member_id"
    assert (
        err.message == "member_id '会员一二三四五六七' is 9 characters long; at most 8 are allowed"
    )


def test_allowed_values_are_exact_for_strings_and_numeric_for_numbers():
    assert json.loads(rich(member_id="m1", tier=" gold ").payload_json)["tier"] == "gold"
    err = error(rich(member_id="m1", tier="Gold"))
    assert err.message == "tier 'Gold' is not one of the allowed values: gold, silver"
    assert dict(rich(member_id="m1", shop_id="8.0").flat)["shop_id"] == "8"
    assert "allowed values: 7, 8" in error(rich(member_id="m1", shop_id="9")).message


IDENTIFIED = parse_spec(
    """
method = "taobao.example.case.save"
object_param = "case_request"
identity = ["case_id", "shop_id"]

[[fields]]
name = "case_id"
type = "String"
required = true

[[fields]]
name = "note"
type = "String"

[[fields]]
name = "shop_id"
type = "Number"
"""
)


def identified(case_id: str, note: str = "", shop_id: str = "") -> RequestRecord:
    validator = RowValidator(IDENTIFIED, {"case_id": 0, "note": 1, "shop_id": 2})
    return validator.validate(Row(2, (case_id, note, shop_id)))


def test_identity_fields_alone_make_the_hash():
    first = identified("c1", note="first try", shop_id="7")
    fixed = identified("c1", note="fixed", shop_id="7.0")
    assert first.payload_json != fixed.payload_json
    assert first.row_key == fixed.row_key
    assert first.row_key != identified("c1", shop_id="8").row_key
    assert first.row_key != payload_hash(first.payload_json)


def test_rows_with_the_same_identity_are_duplicates():
    dup = DuplicateFilter()
    assert dup.first_row(identified("c1", note="a")) is None
    assert dup.first_row(identified("c1", note="b")) == 2


def test_an_absent_optional_identity_field_counts_as_empty():
    assert identified("c1").row_key == identified("c1", note="x").row_key
    assert identified("c1").row_key != identified("c1", shop_id="0").row_key


@given(
    cells=st.lists(st.text(alphabet="01yn是否-/: T,，2aé", max_size=12), max_size=10),
    numeric=st.frozensets(st.integers(min_value=0, max_value=10)),
)
def test_validate_never_raises_for_any_type(cells, numeric):
    result = rich_validator.validate(Row(2, tuple(cells), numeric))
    assert isinstance(result, RequestRecord | RowError)
    if isinstance(result, RequestRecord):
        assert all(value.strip() for _, value in result.flat)
