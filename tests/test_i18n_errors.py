"""The sentence that stops a command is in the chosen language (issue 22): through the real CLI
with --lang zh, the locale or importer.toml's lang, and through the Python API with lang="zh".
The machine contract does not move with it: the exit code is the English run's, and the English
sentence is the one it always was. A scan of the library's modules keeps every new error a
translated template."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import APP_KEY, clean_env, cli, ticket, write_csv

import importer
from importer import i18n
from importer.errors import ConfigError, InputError, SpecError, UsageError
from importer.journal import SQLiteJournal
from importer.snapshot import sha256_of

CJK = re.compile("[\u4e00-\u9fff]")


def _bad_spec(tmp: Path) -> list[str]:
    (tmp / "bad.toml").write_text('method = "example.thing.save"\n[[fields]]\ntype = "Strin"\n')
    return ["validate", "t.csv", "--api", "bad.toml"]


def _missing_column(tmp: Path) -> list[str]:
    rows = [{k: v for k, v in ticket(0).items() if k != "tenant_id"}]
    write_csv(tmp / "cols.csv", rows, [h for h in rows[0]])
    return ["validate", "cols.csv"]


def _bad_setting(tmp: Path) -> list[str]:
    (tmp / "importer.toml").write_text('concurrency = "many"\n')
    return ["validate", "t.csv"]


def _journal_under_a_file(tmp: Path) -> list[str]:
    (tmp / "plain").write_text("a file, not a folder\n")  # refused as root too
    return ["run", "t.csv", "--simulate", "--journal", "plain/journal.sqlite", "--no-progress"]


def _unreadable_xlsx(tmp: Path) -> list[str]:
    (tmp / "broken.xlsx").write_bytes(b"this is not a zip file at all")
    return ["validate", "broken.xlsx"]


def _bad_range(tmp: Path) -> list[str]:
    return ["run", "t.csv", "--simulate", "--concurrency", "0"]


# name -> how to make the failure in tmp_path: the command's arguments (without --lang)
FAILURES = {
    "missing input file": lambda tmp: ["validate", "nope.csv"],
    "missing required column": _missing_column,
    "unknown --api": lambda tmp: ["validate", "t.csv", "--api", "no.such.method"],
    "bad spec file": _bad_spec,
    "bad importer.toml value": _bad_setting,
    "--journal in an unwritable folder": _journal_under_a_file,
    "unreadable xlsx": _unreadable_xlsx,
    "missing credentials": lambda tmp: ["run", "t.csv", "--no-progress"],
    "a number out of range": _bad_range,
    "unsupported extension": lambda tmp: ["validate", "t.json"],
}


def _stopping_line(stderr: str) -> str:
    """The last line the command wrote as itself: the sentence that stopped it."""
    lines = [line for line in stderr.splitlines() if line.startswith("top-import: ")]
    assert lines, stderr
    return lines[-1]


@pytest.mark.parametrize("name", FAILURES)
def test_the_sentence_that_stops_a_command_is_in_chinese_with_the_english_exit_code(tmp_path, name):
    write_csv(tmp_path / "t.csv", [ticket(0)])
    (tmp_path / "t.json").write_text("{}")
    args = FAILURES[name](tmp_path)
    english = cli([*args, "--lang", "en"], tmp_path, clean_env())
    chinese = cli([*args, "--lang", "zh"], tmp_path, clean_env())
    assert english.returncode == chinese.returncode == 2, (english.stderr, chinese.stderr)
    assert not CJK.search(_stopping_line(english.stderr)), english.stderr
    assert CJK.search(_stopping_line(chinese.stderr)), chinese.stderr


def test_a_locked_input_is_refused_in_chinese(tmp_path):
    """A live run of the same input holds it (this process, in the journal): a second is
    refused, in the language asked, with the exit code of the English refusal."""
    write_csv(tmp_path / "t.csv", [ticket(0)])
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    try:
        journal.start_run(
            input_path=str(tmp_path / "t.csv"),
            input_key=sha256_of(tmp_path / "t.csv"),
            app_key=APP_KEY,
            method="x",
        )
        args = ["run", "t.csv", "--simulate", "--journal", "j.sqlite", "--no-progress"]
        english = cli([*args, "--lang", "en"], tmp_path, clean_env())
        chinese = cli([*args, "--lang", "zh"], tmp_path, clean_env())
    finally:
        journal.close()
    assert english.returncode == chinese.returncode == 2, chinese.stderr
    assert "is already being imported" in english.stderr
    line = _stopping_line(chinese.stderr)
    assert "正在由" in line or "已在由" in line, line
    assert str(__import__("os").getpid()) in line  # the values stay in the sentence


def test_the_locale_alone_chooses_chinese(tmp_path):
    env = clean_env(LANG="zh_CN.UTF-8", LC_ALL="", LANGUAGE="")
    done = cli(["validate", "nope.csv"], tmp_path, env)
    assert done.returncode == 2
    assert _stopping_line(done.stderr) == ("top-import: nope.csv 不存在；请检查路径和当前目录。")


def test_lang_in_importer_toml_chooses_chinese(tmp_path):
    (tmp_path / "importer.toml").write_text('lang = "zh"\n')
    done = cli(["validate", "nope.csv"], tmp_path, clean_env())
    assert done.returncode == 2
    assert CJK.search(_stopping_line(done.stderr)), done.stderr
    # --lang beats the file
    again = cli(["validate", "nope.csv", "--lang", "en"], tmp_path, clean_env())
    assert _stopping_line(again.stderr) == (
        "top-import: nope.csv does not exist; check the path and the current directory."
    )


# -- the Python API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "english"),
    [
        ({}, InputError, "does not exist; check the path and the current directory."),
        ({"concurrency": 0}, UsageError, "--concurrency must be at least 1 and at most 1000"),
        ({"api": "no.such.method"}, SpecError, "Unknown API 'no.such.method'"),
        ({"bogus": 1}, UsageError, "Unknown option bogus; the options are the CLI's"),
    ],
)
def test_the_api_raises_in_the_language_asked_and_the_english_is_unchanged(
    tmp_path, options, error, english
):
    missing = tmp_path / "nope.csv"
    with pytest.raises(error) as in_english:
        importer.validate(missing, lang="en", **options)
    assert english in str(in_english.value)
    with pytest.raises(error) as in_chinese:
        importer.validate(missing, lang="zh", **options)
    assert CJK.search(str(in_chinese.value)), str(in_chinese.value)
    assert i18n.current() == "en"  # nothing left behind


def test_the_api_run_speaks_importer_toml_lang(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text('lang = "zh"\n')
    with pytest.raises(InputError, match="不存在"):
        importer.run(tmp_path / "nope.csv", simulate=True, config_file=settings)
    bad = tmp_path / "bad.toml"
    bad.write_text("retries = true\n")
    with pytest.raises(ConfigError, match="不是有效的"):
        importer.run(tmp_path / "t.csv", simulate=True, config_file=bad, lang="zh")


def test_the_english_sentences_are_unchanged():
    """The templates say what the f-strings said, to the byte."""
    from importer.config import Config, parse_clock

    with pytest.raises(UsageError) as missing:
        Config().credentials()
    assert str(missing.value) == (
        "Missing app key (TOP_APP_KEY) and app secret (TOP_APP_SECRET): set them in the "
        "environment or in importer.toml, or use --simulate to run against the built-in "
        "simulator."
    )
    with pytest.raises(UsageError) as clock:
        parse_clock("25:00")
    assert str(clock.value) == "--deadline '25:00' is not a time of day; write HH:MM, e.g. 06:30."
    with i18n.language("zh"), pytest.raises(UsageError) as one:
        Config(app_key="k").credentials()
    assert str(one.value) == (
        "缺少 App Secret（TOP_APP_SECRET）：请在环境变量或 importer.toml 中设置它，"
        "或使用 --simulate 在内置模拟器上运行。"
    )


# -- no untranslated sentence in the library ----------------------------------------------------

PACKAGE = Path(i18n.__file__).parent
# The modules whose errors and warnings are sentences for people (the CLI prints them as
# "top-import: <sentence>", the API raises them).
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
# The errors a person reads (importer.errors); ValueError, TypeError and the like are raised for
# a programmer's mistake (a bad argument in code) and are not scanned.
ERRORS = {
    "ImporterError",
    "UsageError",
    "ConfigError",
    "SpecError",
    "InputError",
    "JournalError",
    "LockedError",
    "AbortedError",
}
# Where a sentence for people goes without being raised: a spec's mistakes, the CLI's lines,
# the notes printed after a run.
SINKS = {"report", "say", "_say", "append"}
# (module, text) of a literal that is not a sentence for people, with why. None today.
EXEMPT: set[tuple[str, str]] = set()


def _is_literal_text(node: ast.expr) -> bool:
    """A text written in place: "...", f"...", or a sum of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_literal_text(node.left) or _is_literal_text(node.right)
    return False


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _untranslated(module: str, package: Path = PACKAGE) -> list[str]:
    tree = ast.parse((package / module).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _called_name(node)
        first = node.args[0]
        if name == "append" and not (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "notes"
        ):
            continue  # a list of anything; only a summary's notes are sentences
        if (name in ERRORS or name in SINKS) and _is_literal_text(first):
            text = ast.unparse(first)
            if (module, text) not in EXEMPT:
                found.append(f"{module}:{node.lineno}: {name}({text[:60]}...)")
    return found


def test_every_error_and_warning_of_the_library_is_a_translated_template():
    """``raise InputError(f"...")`` fails here: write ``InputError(_("... {name}").format(...))``
    and add its Chinese to the catalogue."""
    found = [line for module in MODULES for line in _untranslated(module)]
    assert found == [], "\n".join(found)


def test_the_scan_finds_an_untranslated_error(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(path, report, summary):\n"
        "    report(f'{path} is bad')\n"
        "    summary.notes.append('a note')\n"
        "    raise InputError(f'{path} does not exist')\n"
        "def g(path):\n"
        "    raise InputError(_('{path} does not exist').format(path=path))\n"
    )
    assert [line.split(": ", 1)[1][:12] for line in _untranslated("sample.py", tmp_path)] == [
        "report(f'{pa",
        "append('a no",
        "InputError(f",
    ]


@pytest.mark.parametrize("module", MODULES)
def test_a_module_that_translates_never_binds_the_name_of_the_translator(module):
    """``for _, x in pairs`` in a function that raises ``_("...")`` makes ``_`` a local there:
    the error becomes an UnboundLocalError (or calls a tuple item)."""
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    imports_it = any(
        isinstance(node, ast.ImportFrom) and any(alias.name == "_" for alias in node.names)
        for node in ast.walk(tree)
    )
    bound = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id == "_" and isinstance(node.ctx, ast.Store)
    ]
    assert not (imports_it and bound), f"{module} binds _ at lines {bound}"
