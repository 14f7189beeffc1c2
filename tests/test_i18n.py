"""Chinese as well as English: the language switch, the catalogue's integrity, and a workbook
written in Chinese that feeds back (asserted on what the gateway saw)."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import openpyxl
import pytest
from helpers import clean_env, cli, read_sheet, ticket, write_csv

from importer import i18n
from importer.labels import DECISION, SOURCE_ROW, Item, Sheet, key_of, label
from importer.rows import Outcome

PO = i18n.LOCALE_DIR / "zh" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
MO = PO.with_suffix(".mo")
FAST = ["--qps", "200", "--no-progress"]


@pytest.mark.parametrize(
    ("environ", "lang"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_TW.UTF-8"}, "zh"),
        ({"LANG": "C"}, "en"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),  # LC_ALL before LANG
        ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LANGUAGE": "zh_CN:en", "LANG": "C"}, "zh"),  # LANGUAGE first, its first entry
        ({"LANGUAGE": "", "LC_MESSAGES": "zh_CN.UTF-8"}, "zh"),  # empty is unset
    ],
)
def test_the_language_defaults_from_the_locale_as_gettext_reads_it(environ, lang):
    assert i18n.lang_from_env(environ) == lang


def _catalogue():
    from babel.messages.pofile import read_po

    with PO.open("rb") as fh:
        return read_po(fh)


def test_every_message_has_a_chinese_translation_with_the_same_placeholders():
    messages = [m for m in _catalogue() if m.id]
    assert messages
    for message in messages:
        # a plural entry (ngettext) has two ids and a form per plural (Chinese: one)
        ids, strings = (
            (message.id, message.string)
            if message.pluralizable
            else ((message.id,), (message.string,))
        )
        assert all(strings), f"no Chinese for {message.id!r}"
        if message.pluralizable and len({frozenset(_placeholders(i)) for i in ids}) > 1:
            # click's plurals name their value differently per form ({possibility},
            # {possibilities}) and format with both: a form may use either
            named = set().union(*map(_placeholders, ids))
            assert all(_placeholders(text) <= named for text in strings), message.id
            continue
        for text in (*ids, *strings):
            assert _placeholders(ids[0]) == _placeholders(text), (
                f"a placeholder changed in {message.id!r}"
            )


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{[^}]*\}", text))


def test_the_shipped_mo_is_the_po_compiled():
    """The .mo in the package says what the .po says (recompile with msgfmt after an edit)."""
    with MO.open("rb") as fh:
        shipped = gettext.GNUTranslations(fh)
    for message in _catalogue():
        if message.pluralizable:
            for n in (1, 2):
                assert shipped.ngettext(*message.id, n) == message.string[0], message.id
        elif message.id:
            context = message.context
            got = shipped.pgettext(context, message.id) if context else shipped.gettext(message.id)
            assert got == message.string, message.id


@pytest.mark.parametrize("key", [*Sheet, *Item, SOURCE_ROW, DECISION, *Outcome.COLUMNS])
def test_every_label_read_back_is_in_chinese_and_recognised_in_both(key):
    english = label(key)
    with i18n.language("zh"):
        chinese = label(key)
    assert chinese != english
    assert not chinese.isascii()
    keys = [key]
    assert key_of(chinese, keys) == key and key_of(english, keys) == key  # in any language


def test_an_unknown_language_is_one_sentence(tmp_path):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    done = cli(["validate", "t.csv", "--lang", "fr"], tmp_path, clean_env())
    assert done.returncode == 2
    assert "--lang" in done.stderr and "zh" in done.stderr


def _fix_failed_rows(result: Path, fixed: Path, sheet: str, column: str, value: str) -> int:
    """What a person does in Excel: the empty cells of ``column`` in the failed sheet filled."""
    book = openpyxl.load_workbook(result)
    rows = book[sheet]
    header = [c.value for c in rows[1]]
    at = header.index(column) + 1
    fixes = 0
    for row in rows.iter_rows(min_row=2):
        if row[at - 1].value in (None, ""):
            row[at - 1].value = value
            fixes += 1
    book.save(fixed)
    return fixes


@pytest.mark.parametrize("how", ["--lang", "LANG"])
def test_a_chinese_workbook_is_written_and_its_failed_sheet_feeds_back(tmp_path, simulator, how):
    sim = simulator()
    rows = [ticket(i) for i in range(6)]
    rows[1]["user_identify"] = ""
    rows[4]["user_identify"] = ""
    write_csv(tmp_path / "t.csv", rows)
    if how == "--lang":
        args, env = ["--lang", "zh"], sim.env()
    else:
        args, env = [], sim.env(LANG="zh_CN.UTF-8", LC_ALL="", LANGUAGE="")
    first = cli(["run", "t.csv", *FAST, *args], tmp_path, env)
    assert first.returncode == 1, first.stderr
    result = tmp_path / "reports" / "t.result.xlsx"
    assert openpyxl.load_workbook(result).sheetnames == ["结果", "失败", "待核对", "汇总"]
    failed = read_sheet(result, "失败")
    assert [r["源行号"] for r in failed] == [3, 6]
    assert all(r["错误原因"] for r in failed)
    assert {r["状态"] for r in failed} == {"invalid"}  # status values stay the contract's words
    assert sim.stats()["accepted"] == 4

    fixes = _fix_failed_rows(result, tmp_path / "fixed.xlsx", "失败", "user_identify", "uid-fix")
    assert fixes == 2
    # fed back in English: --sheet failed finds the Chinese failed sheet
    again = cli(["run", "fixed.xlsx", "--sheet", "failed", "--lang", "en", *FAST], tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert sim.stats()["accepted"] == 6  # exactly the two fixed rows were sent
    assert sim.stats()["duplicate_accepts"] == 0
    second = tmp_path / "reports" / "fixed.result.xlsx"
    assert openpyxl.load_workbook(second).sheetnames[0] == "results"


def test_sheet_given_in_chinese_finds_the_english_sheet(tmp_path, simulator):
    sim = simulator()
    rows = [ticket(i) for i in range(3)]
    rows[2]["user_identify"] = ""
    write_csv(tmp_path / "t.csv", rows)
    assert cli(["run", "t.csv", "--lang", "en", *FAST], tmp_path, sim.env()).returncode == 1
    done = cli(
        ["validate", "reports/t.result.xlsx", "--sheet", "失败", "--lang", "en"],
        tmp_path,
        sim.env(),
    )
    assert done.returncode == 1, done.stderr  # the failed row, still invalid
    assert "1 invalid" in done.stderr or "1 invalid" in done.stdout


@pytest.mark.parametrize("out", ["r.xlsx", "r.csv"])
def test_the_api_reads_a_chinese_report_back_by_its_keys(tmp_path, out):
    import importer

    rows = [ticket(i) for i in range(2)]
    rows[1]["user_identify"] = ""
    write_csv(tmp_path / "t.csv", rows)
    result = importer.validate(tmp_path / "t.csv", lang="zh", out=tmp_path / out)
    assert result.exit_code == 1
    read = list(result.rows())
    assert [(r["source_row"], r["status"]) for r in read] == [(2, "valid"), (3, "invalid")]
    assert read[1]["error"]
    if out.endswith(".csv"):
        header = (tmp_path / out).read_text(encoding="utf-8-sig").splitlines()[0]
        assert header.startswith("源行号,") and "状态" in header


def test_every_text_marked_in_the_code_is_in_the_catalogue():
    """What ``_`` and ``N_`` mark in importer/ (Babel's extractor) has its Chinese."""
    from babel.messages.extract import extract_from_dir

    package = Path(i18n.__file__).parent
    marked = {
        message
        for _, _, message, _, _ in extract_from_dir(
            package, method_map=[("**.py", "python")], keywords={"_": None, "N_": None}
        )
    }
    assert len(marked) >= 20
    translated = {m.id for m in _catalogue() if m.id and m.string and not m.context}
    assert marked - translated == set()


def test_a_row_error_is_written_in_the_runs_language():
    from importer.reasons import reason
    from importer.rows import Status
    from importer.steps import StopReason

    declined = Outcome(Status.FAILED, "15", "Remote error", "isv.invalid-parameter", "非法参数")
    unsent = Outcome(Status.NOT_SENT)
    english = reason(declined)
    assert english.startswith("the platform answered 非法参数 (isv.invalid-parameter); fix")
    with i18n.language("zh"):
        chinese = reason(declined)
        stopped = reason(unsent, StopReason.DEADLINE)
    assert chinese == (
        "平台返回：非法参数（isv.invalid-parameter）；修改这些行中子错误信息所指的值，然后重新运行"
    )
    assert stopped.startswith("未发送：运行在发送此行之前已到 --deadline")
    assert reason(unsent, StopReason.DEADLINE).startswith("not sent: the run stopped at its")


def test_the_robots_message_is_in_the_commands_language(tmp_path):
    from collections import Counter

    from importer import notify
    from importer.rows import Status
    from importer.summary import FileSummary

    summary = FileSummary(input=tmp_path / "t.csv", command="run")
    summary.counts = Counter({Status.SUCCESS: 3, Status.FAILED: 1})
    summary.sub_codes = Counter({"isv.invalid-parameter": 1})
    summary.sub_code_rows = {"isv.invalid-parameter": 4}
    summary.workbook = tmp_path / "reports" / "t.result.xlsx"
    with i18n.language("zh"):
        title, text = notify.message("run", [summary], 1)
        lost = notify._failure(TimeoutError())
    assert title == "top-import run：退出码 1"
    assert "3 行成功，1 行失败" in text and "（例如第 4 行）" in text and "工作簿：" in text
    assert lost.endswith(" 秒内没有应答")
    english_title, english = notify.message("run", [summary], 1)
    assert english_title == "top-import run: exit 1" and "3 success, 1 failed" in english
