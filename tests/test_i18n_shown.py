"""Texts kept in English (the journal's results, a row's outcome) are shown in the report's
language: ``i18n.shown`` finds the catalogue's message, template or "a; b" they were made of."""

from __future__ import annotations

import pytest

from importer import i18n
from importer.advice import CHECK_ADVICE, EARLIER_LOST, UNKNOWN_ADVICE
from importer.journal._base import KEPT_UNKNOWN_NOTE
from importer.steps import IN_FLIGHT_AT_THE_END, IN_FLIGHT_INTERRUPTED, NEVER_TRIED
from importer.triage import DONE_NOTE, RESENT_NOTE, UNDECIDED_NOTE


@pytest.mark.parametrize(
    ("english", "chinese"),
    [
        ("same payload as row 7", "与第 7 行的数据相同"),
        ("no answer within --timeout 10 s", "在 --timeout 10 秒内没有应答"),
        (
            "no answer within --timeout 10 s; " + UNKNOWN_ADVICE,
            "在 --timeout 10 秒内没有应答；平台可能已经处理了它：请在平台上核实",
        ),
        (
            "code 15 Remote error (after 3 attempts)",
            "错误码 15 Remote error（共尝试 3 次）",
        ),
        (
            "already sent successfully at 2026-12-04 10:00:00 by the run of a b.csv",
            "已于 2026-12-04 10:00:00 由 a b.csv 的运行发送成功",
        ),
        ("already sent successfully at an earlier run", "已于 之前的一次运行 发送成功"),
        (
            "being sent right now (process 42); not sent twice",
            "正在由另一个运行（进程 42）发送；不会发送两次",
        ),
        ("HTTP 502 from the gateway", "网关返回 HTTP 502"),
    ],
)
def test_a_text_made_of_the_catalogues_messages_is_shown_in_chinese(english, chinese):
    with i18n.language("zh"):
        assert i18n.shown(english).startswith(chinese)
    assert i18n.shown(english) == english  # English: as kept


@pytest.mark.parametrize(
    "kept",
    [
        CHECK_ADVICE,
        EARLIER_LOST,
        UNKNOWN_ADVICE,
        KEPT_UNKNOWN_NOTE,
        IN_FLIGHT_AT_THE_END,
        IN_FLIGHT_INTERRUPTED,
        NEVER_TRIED,
        DONE_NOTE,
        RESENT_NOTE,
        UNDECIDED_NOTE,
        "connection lost after the call was sent: ServerDisconnectedError; " + EARLIER_LOST,
    ],
)
def test_every_text_the_journal_keeps_is_shown_with_no_english_sentence_left(kept):
    with i18n.language("zh"):
        text = i18n.shown(kept)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
    # what stays in Latin letters is the option names, the flags and the data, never a phrase
    assert "the platform" not in text and "the check sheet" not in text, text


def test_a_text_the_catalogue_does_not_know_stays_as_it_is():
    with i18n.language("zh"):
        assert i18n.shown("Remote service error") == "Remote service error"
        assert i18n.shown("") == ""
        # a join of known and unknown parts: the unknown part kept, the known one shown
        assert i18n.shown("weird; " + CHECK_ADVICE) == "weird；" + i18n.shown(CHECK_ADVICE)


def test_gettexts_catalogue_is_where_shown_reads_it():
    """``shown`` reads gettext's ``_catalog`` (not a documented name): this fails loudly the
    day a Python release moves it."""
    catalogue = i18n.translation("zh")._catalog
    assert isinstance(catalogue, dict) and len(catalogue) > 300
    assert catalogue["same payload as row {row}"] == "与第 {row} 行的数据相同"
