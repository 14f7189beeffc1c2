"""``--help`` in Chinese: every command's and option's help text has its translation, and the
help (click's own words too) is in the language chosen by ``--lang`` (before or after
``--help``) or by the locale alone; click's errors about the options are in it as well."""

from __future__ import annotations

import inspect
import re

import click
import pytest
from helpers import clean_env, cli

from importer import i18n
from importer.cli import cli as group

CJK = re.compile("[\u4e00-\u9fff]")


def _help_texts(command: click.Command, ctx: click.Context):
    yield command.name, command.help
    for param in command.get_params(ctx):
        yield f"{command.name} {param.name}", getattr(param, "help", None)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _help_texts(sub, click.Context(sub, info_name=name, parent=ctx))


def test_every_help_text_has_its_chinese():
    translation = i18n.translation("zh")
    texts = list(_help_texts(group, click.Context(group, info_name="top-import")))
    assert len(texts) > 60
    missing = [
        where
        for where, text in texts
        if text and translation.gettext(inspect.cleandoc(text)) == inspect.cleandoc(text)
    ]
    assert missing == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help", "--lang", "zh"],
        ["--lang", "zh", "--help"],
        ["--lang=zh", "run", "--help"],
        ["run", "--help", "--lang", "zh"],
        ["validate", "-h", "--lang", "zh"],
        ["report", "--lang", "zh", "--help"],
        ["simulate", "--help", "--lang", "zh"],
        ["apis", "--help", "--lang", "zh"],
    ],
)
def test_help_is_in_chinese_wherever_lang_stands(tmp_path, args):
    done = cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("用法："), done.stdout[:80]
    lines = done.stdout.splitlines()
    options = [at for at, line in enumerate(lines) if line.startswith("  -")]
    assert options
    for at in options:  # an option's help beside it, or below a long option's name
        assert CJK.search(lines[at]) or CJK.search(lines[at + 1]), lines[at]


def test_the_locale_alone_gives_chinese_help_and_lang_en_english(tmp_path):
    env = clean_env(LANG="zh_CN.UTF-8", LC_ALL="", LANGUAGE="")
    chinese = cli(["run", "--help"], tmp_path, env)
    assert chinese.stdout.startswith("用法：") and "显示本帮助并退出。" in chinese.stdout
    english = cli(["run", "--help", "--lang", "en"], tmp_path, env)
    assert english.stdout.startswith("Usage:") and "Show this message and exit." in english.stdout
    assert not CJK.search(english.stdout.replace("中文", "").replace("已完成/重发", ""))


def test_clicks_own_errors_are_in_the_language_chosen(tmp_path):
    done = cli(["run", "t.csv", "--lang", "zh", "--bogus"], tmp_path)
    assert done.returncode == 2
    assert "错误：没有这个选项 '--bogus'。" in done.stderr
    assert "运行 'top-import run --help' 查看帮助。" in done.stderr
    bad = cli(["run", "t.csv", "--sign-method", "x", "--lang", "zh"], tmp_path)
    assert bad.returncode == 2 and "'--sign-method' 的值无效" in bad.stderr
    english = cli(["run", "t.csv", "--bogus"], tmp_path)
    assert "Error: No such option '--bogus'" in english.stderr


def test_an_unknown_language_on_the_command_line_is_clicks_sentence(tmp_path):
    done = cli(["run", "t.csv", "--lang", "fr"], tmp_path)
    assert done.returncode == 2
    assert "'fr' is not one of 'en', 'zh'" in done.stderr


@pytest.mark.parametrize(
    ("argv", "lang"),
    [
        (["--lang", "zh"], "zh"),
        (["run", "x", "--lang=en"], "en"),
        (["run", "--lang"], None),
        (["--lang", "fr"], None),
        (["run", "--", "--lang", "zh"], None),
        ([], None),
    ],
)
def test_lang_is_read_from_the_command_line_before_click_parses_it(argv, lang):
    assert i18n.lang_in_argv(argv) == lang


def test_click_speaks_restores_the_gettext_domain_and_the_environment(monkeypatch):
    import gettext
    import os

    monkeypatch.delenv("LANGUAGE", raising=False)
    before = gettext.textdomain()
    with i18n.click_speaks("zh"):
        assert gettext.gettext("Usage:") == "用法："
    assert gettext.textdomain() == before and "LANGUAGE" not in os.environ
