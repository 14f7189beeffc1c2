"""The language is for people; the machine contract does not move with it (the README's
``--lang``: exit codes, statuses, ``--summary-json`` and the journal are the same in both), and
``lang`` in importer.toml chooses it as ``--lang`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import clean_env, cli, read_sheet, ticket, write_csv

from importer.config import load_config
from importer.errors import UsageError

BAD_TENANT = 200110999  # declined by the simulator: failed rows with a sub_code
FAST = ["--no-progress", "--canary", "0", "--max-failure-rate", "1"]

# What a --summary-json may say differently in zh and en, and why; everything else (every
# key, its order, the counts, the statuses, the sub_codes, the invalid reasons' keys, the
# exit codes, the paths) must be the same bytes.
MESSAGES = {"message", "notes", "error"}  # sentences for a person: in the run's language
MOMENTS = {"started", "ended", "calls_per_second"}  # when and how fast: differ between runs


def normalised(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: "<message>" if k in MESSAGES else "<moment>" if k in MOMENTS else normalised(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def input_of_every_kind(folder: Path) -> None:
    """Rows that succeed, rows the platform declines (sub_code), invalid rows, a duplicate."""
    rows = [ticket(i) for i in range(8)]
    rows += [ticket(100 + i, tenant=BAD_TENANT) for i in range(2)]
    rows += [dict(ticket(200), tenant_id="abc"), dict(ticket(201), user_identify="")]
    rows.append(rows[0])
    write_csv(folder / "t.csv", rows)


def summary_of_a_run(folder: Path, lang: str, env: dict[str, str], *extra: str) -> bytes:
    """``--summary-json`` of one ``--lang`` run in ``folder`` (its own journal there)."""
    args = ["run", "t.csv", "--lang", lang, "--summary-json", "last.json", *FAST, *extra]
    done = cli(args, folder, env)
    assert "Traceback" not in done.stderr
    return (folder / "last.json").read_bytes()


def test_the_summary_json_is_the_same_in_both_languages_but_for_its_sentences(tmp_path, simulator):
    sim = simulator(bad_tenants=frozenset({BAD_TENANT}))
    documents = {}
    for lang in ("en", "zh"):
        # the same relative paths in a folder of each language's own: fresh journals, and the
        # paths in the document (input, workbook) may be compared as they are
        folder = tmp_path / lang
        folder.mkdir()
        input_of_every_kind(folder)
        documents[lang] = summary_of_a_run(folder, lang, sim.env())
    english, chinese = (json.loads(documents[lang]) for lang in ("en", "zh"))
    assert english["exit_code"] == chinese["exit_code"] == 1
    (file,) = english["files"]
    assert file["counts"] == {"success": 8, "failed": 2, "invalid": 2, "duplicate": 1}
    assert file["sub_codes"] and file["invalid_reasons"]  # the parts that could drift are there
    assert read_sheet(tmp_path / "zh" / "reports" / "t.result.xlsx", "结果")  # zh was Chinese
    # written the same way (indentation, key order, ASCII escapes) apart from the sentences
    same = [json.dumps(normalised(d), indent=2, ensure_ascii=False) for d in (english, chinese)]
    assert same[0] == same[1]
    assert documents["en"].count(b"\n") == documents["zh"].count(b"\n")


def test_a_command_stopped_before_any_input_writes_the_same_summary_json_in_both(tmp_path):
    documents = {}
    for lang in ("en", "zh"):
        folder = tmp_path / lang
        folder.mkdir()
        input_of_every_kind(folder)
        documents[lang] = json.loads(summary_of_a_run(folder, lang, clean_env()))  # no secret
    assert documents["en"]["exit_code"] == documents["zh"]["exit_code"] == 2
    assert documents["en"]["error"]  # the sentence printed, in its language
    assert normalised(documents["en"]) == normalised(documents["zh"])


# --- lang in importer.toml ------------------------------------------------------------------


@pytest.fixture()
def in_tmp_dir(tmp_path, monkeypatch):
    """An empty directory, so no real importer.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_lang_in_the_file_is_the_language(in_tmp_dir, lang):
    Path("importer.toml").write_text(f'lang = "{lang}"\n', encoding="utf-8")
    config = load_config({}, {"LANG": "C.UTF-8"})
    assert (config.lang, config.language) == (lang, lang)


def test_the_lang_flag_beats_the_file(in_tmp_dir):
    Path("importer.toml").write_text('lang = "zh"\n', encoding="utf-8")
    assert load_config({"lang": "en"}, {}).language == "en"


def test_without_lang_the_locale_decides(in_tmp_dir):
    assert load_config({}, {}).lang is None  # decided when it is read, not stored


@pytest.mark.parametrize("value", ['"fr"', '"ZH"', '"中文"', "3"])
def test_a_bad_lang_in_the_file_is_a_usage_error_naming_the_choices(in_tmp_dir, value):
    Path("importer.toml").write_text(f"lang = {value}\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"--lang .* is unknown; use zh \(中文\) or en"):
        load_config({}, {})


def test_lang_zh_in_importer_toml_writes_a_chinese_workbook(tmp_path, simulator):
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    (tmp_path / "importer.toml").write_text('lang = "zh"\n', encoding="utf-8")
    done = cli(["run", "t.csv", *FAST], tmp_path, simulator().env())
    assert done.returncode == 0, done.stderr
    rows = read_sheet(tmp_path / "reports" / "t.result.xlsx", "结果")
    assert [row["状态"] for row in rows] == ["success"] * 3  # the status words stay the keys


def test_a_bad_lang_in_importer_toml_is_one_sentence_and_exit_2(tmp_path, simulator):
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(3)])
    (tmp_path / "importer.toml").write_text('lang = "fr"\n', encoding="utf-8")
    sim = simulator()
    done = cli(["run", "t.csv", *FAST], tmp_path, sim.env())
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("top-import: ") and "'fr'" in line and "zh" in line and "en" in line
    assert sim.stats()["calls"] == 0
    assert not (tmp_path / "reports" / "t.result.xlsx").exists()
