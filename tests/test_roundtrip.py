"""The failed sheet of a result workbook, fed back as input, reads the same records."""

from __future__ import annotations

from helpers import HEADERS, ticket, write_csv

from importer.config import Config
from importer.loader import open_input
from importer.pipeline import check_file
from importer.records import RowValidator
from importer.spec import load_spec

SPEC = load_spec(None)


def cells_and_records(path, sheet=None):
    table = open_input(path, SPEC, sheet=sheet)
    validator = RowValidator(SPEC, table.columns)
    return [(row.cells, validator.validate(row)) for row in table.rows()]


def test_failed_sheet_round_trip_keeps_cells_and_payloads(tmp_path):
    rows = [ticket(i) for i in range(6)]
    rows[1]["tenant_id"] = "2.5"  # invalid: fixed later in Excel
    rows[2]["user_identify"] = '=HYPERLINK("x")'  # formula-like text is data
    rows[3]["case_id"] = "3.96743E+17"  # Excel-damaged id: invalid
    rows[4]["corp_id"] = "钉钉-组织 +1"
    rows[5] = dict(rows[4])  # duplicate
    source = write_csv(tmp_path / "in.csv", rows, [*HEADERS, "note"])
    config = Config(out_dir=tmp_path / "reports")
    summary = check_file(source, config, SPEC)
    assert summary.counts == {"valid": 3, "invalid": 2, "duplicate": 1}

    original = cells_and_records(source)
    fed_back = cells_and_records(summary.workbook, sheet="failed")
    invalid_rows = [original[1], original[3]]
    assert [cells for cells, _ in fed_back] == [cells for cells, _ in invalid_rows]
    assert [type(r).__name__ for _, r in fed_back] == ["RowError", "RowError"]

    everything = cells_and_records(summary.workbook, sheet="results")
    assert [cells for cells, _ in everything] == [cells for cells, _ in original]
    assert [getattr(r, "payload_json", None) for _, r in everything] == [
        getattr(r, "payload_json", None) for _, r in original
    ]
