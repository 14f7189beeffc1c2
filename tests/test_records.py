"""Row validation against the built-in spec: what is sent, and what is refused and why."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.records import (
    RESULT_COLUMNS,
    DuplicateFilter,
    Outcome,
    RequestRecord,
    Row,
    RowError,
    RowValidator,
    Status,
)
from importer.specs import load_spec

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
        payload_hash=hashlib.sha256(GOOD_JSON.encode()).hexdigest(),
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
    assert record.payload_hash == hashlib.sha256(record.payload_json.encode("utf-8")).hexdigest()


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


@pytest.mark.parametrize(
    ("cells", "blank"),
    [(("", " ", "\t"), True), ((), True), (("", "x"), False)],
)
def test_row_is_blank_when_every_cell_is_empty(cells, blank):
    assert Row(2, cells).is_blank() is blank


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
