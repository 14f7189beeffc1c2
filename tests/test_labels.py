"""Labels apart from keys: a workbook's sheet names, result columns and run details can change
(or be translated) and the workbook still feeds back, by its new labels and by the old ones."""

from __future__ import annotations

import openpyxl
import pytest
from helpers import ticket, write_csv

import importer
from importer import labels
from importer.labels import DECISION, SOURCE_ROW, Item, Sheet, is_label, key_of, label, sheet_in

CHINESE = {
    Sheet.RESULTS: "结果",
    Sheet.FAILED: "失败",
    Sheet.CHECK: "待核对",
    Sheet.SUMMARY: "汇总",
    SOURCE_ROW: "源行",
    "status": "状态",
    "error": "原因",
    DECISION: "决定",
    Item.INPUT: "输入",
    Item.JOURNAL_RUN: "日志运行",
}


@pytest.fixture
def relabelled(monkeypatch):
    monkeypatch.setattr(labels, "_SHOWN", dict(CHINESE))


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("TOP_APP_KEY", "TOP_APP_SECRET", "TOP_SESSION", "TOP_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "keys", "found"),
    [
        ("failed", Sheet, Sheet.FAILED),  # the key itself, always
        (" Failed ", Sheet, Sheet.FAILED),  # as a person may type it
        ("失败", Sheet, Sheet.FAILED),  # the label now
        ("旧名", Sheet, Sheet.CHECK),  # an alias (an earlier label)
        ("results_2", Sheet, None),
        (3, Sheet, None),
        ("源行", (SOURCE_ROW, DECISION), SOURCE_ROW),
    ],
)
def test_a_key_is_known_by_itself_its_label_and_its_aliases(
    relabelled, monkeypatch, text, keys, found
):
    monkeypatch.setattr(labels, "_ALIASES", {Sheet.CHECK: ("旧名",)})
    assert key_of(text, keys) == found


def test_a_label_is_plain_text_and_a_workbook_sheet_is_found_by_any_of_its_labels(relabelled):
    assert label(Sheet.FAILED) == "失败" and type(label(Item.INPUT)) is str
    assert label("attempts") == "attempts"  # no label of its own: the key
    assert sheet_in(["结果", "失败", "汇总"], Sheet.FAILED) == "失败"
    assert sheet_in(["results", "failed"], Sheet.FAILED) == "failed"  # written before the change
    assert sheet_in(["结果"], Sheet.CHECK) is None
    assert is_label("日志运行", Item.JOURNAL_RUN)


def credentials(sim) -> dict[str, object]:
    return {
        "gateway": sim.url,
        "app_key": sim.settings.app_key,
        "app_secret": sim.settings.secret,
        "qps": 1000,
        "canary": 0,
    }


def test_a_relabelled_workbook_is_written_by_its_labels_and_feeds_back(here, simulator, relabelled):
    sim = simulator(bad_tenants=frozenset({999}))
    rows = [ticket(i) for i in range(4)] + [ticket(9, tenant=999)]
    write_csv(here / "t.csv", rows)
    first = importer.run("t.csv", **credentials(sim))
    assert first.counts == {"success": 4, "failed": 1}
    book = openpyxl.load_workbook(first.workbook, read_only=True)
    assert book.sheetnames == ["结果", "失败", "待核对", "汇总"]
    header = [c.value for c in next(book["失败"].iter_rows(max_row=1))]
    assert header[5:8] == ["原因", "源行", "状态"]
    book.close()
    assert [r["source_row"] for r in first.rows()] == [2, 3, 4, 5, 6]  # keys, not labels
    assert first.rows().__next__()["status"] == "success"

    again = importer.run(first.workbook, **credentials(sim))  # the whole workbook fed back
    assert again.counts == {"skipped": 4, "failed": 1}  # its 源行 and 状态 known as results
    assert again.summary.notes == []
    failed = importer.run(first.workbook, sheet="failed", **credentials(sim))  # by its key
    assert failed.counts == {"failed": 1}
    assert max(sim.accepted().values()) == 1


def test_a_workbook_written_before_a_label_changed_still_feeds_back(here, simulator, monkeypatch):
    sim = simulator(bad_tenants=frozenset({999}))
    write_csv(here / "t.csv", [ticket(0), ticket(9, tenant=999)])
    first = importer.run("t.csv", **credentials(sim))
    monkeypatch.setattr(labels, "_SHOWN", dict(CHINESE))  # a later version, or Chinese
    failed = importer.run(first.workbook, sheet="失败", **credentials(sim))  # the new label
    assert failed.counts == {"failed": 1}
    assert sim.stats()["accepted"] == 1
