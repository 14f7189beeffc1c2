"""Configuration: flags beat the environment, which beats importer.toml, which beats defaults."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest

from importer import config as config_module
from importer.config import DEFAULT_GATEWAY, Config, load_config
from importer.errors import ConfigError, UsageError
from importer.protocol import Credentials

FILE_GATEWAY = "https://file.example/router/rest"
ENV_GATEWAY = "https://env.example/router/rest"
FLAG_GATEWAY = "https://flag.example/router/rest"


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Each test runs in an empty directory, so no real importer.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(text: str, name: str = "importer.toml") -> Path:
    path = Path(name)
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence -----------------------------------------------------------------------------


def test_defaults_without_flags_env_or_file():
    config = load_config({}, {})
    assert config == Config()
    assert config.gateway == DEFAULT_GATEWAY
    assert (config.sign_method, config.qps, config.concurrency) == ("hmac-sha256", 10.0, 8)
    assert (config.retries, config.timeout, config.max_ban) == (5, 15.0, 300.0)
    assert config.out_dir == Path("reports")
    assert config.journal == Path("reports/journal.sqlite")
    assert config.resume is True
    assert dict(config.columns) == {}


def test_file_beats_default():
    write_config(f'gateway = "{FILE_GATEWAY}"\nqps = 3\n')
    config = load_config({}, {})
    assert (config.gateway, config.qps) == (FILE_GATEWAY, 3.0)


def test_env_beats_file():
    write_config(f'gateway = "{FILE_GATEWAY}"\napp_key = "file-key"\n')
    config = load_config({}, {"TOP_GATEWAY": ENV_GATEWAY, "TOP_APP_KEY": "env-key"})
    assert (config.gateway, config.app_key) == (ENV_GATEWAY, "env-key")


def test_flag_beats_env():
    write_config(f'gateway = "{FILE_GATEWAY}"\n')
    config = load_config(
        {"gateway": FLAG_GATEWAY, "app_key": "flag-key"},
        {"TOP_GATEWAY": ENV_GATEWAY, "TOP_APP_KEY": "env-key"},
    )
    assert (config.gateway, config.app_key) == (FLAG_GATEWAY, "flag-key")


def test_flag_beats_file_for_settings_without_env():
    write_config("qps = 3\nconcurrency = 2\n")
    config = load_config({"qps": 20}, {})
    assert (config.qps, config.concurrency) == (20.0, 2)


def test_unset_flags_and_empty_env_fall_through():
    write_config(f'gateway = "{FILE_GATEWAY}"\n')
    config = load_config({"gateway": None, "qps": None}, {"TOP_GATEWAY": ""})
    assert (config.gateway, config.qps) == (FILE_GATEWAY, 10.0)


def test_env_gives_the_secret_and_session():
    config = load_config({}, {"TOP_APP_SECRET": "env-secret", "TOP_SESSION": "env-session"})
    assert (config.app_secret, config.session) == ("env-secret", "env-session")


def test_an_explicit_config_file_is_read_instead_of_importer_toml():
    write_config("qps = 3\n")
    other = write_config("qps = 4\n", name="other.toml")
    assert load_config({}, {}, config_file=other).qps == 4.0


def test_a_missing_explicit_config_file_is_a_config_error():
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_config({}, {}, config_file=Path("nope.toml"))


# --- the file's contents --------------------------------------------------------------------


def test_file_values_are_coerced_to_the_setting_types():
    write_config(
        'out_dir = "out"\njournal = "j.sqlite"\ntimeout = 5\nretries = 2\nresume = false\n'
        'sign_method = "md5"\nsheet = "Sheet2"\n'
    )
    config = load_config({}, {})
    assert config.out_dir == Path("out")
    assert config.journal == Path("j.sqlite")
    assert config.timeout == 5.0
    assert isinstance(config.timeout, float)
    assert config.retries == 2
    assert config.resume is False
    assert config.sign_method == "md5"
    assert config.sheet == "Sheet2"


def test_dashed_names_in_the_file_are_accepted():
    write_config('out-dir = "out"\nmax-ban = 60\n')
    config = load_config({}, {})
    assert (config.out_dir, config.max_ban) == (Path("out"), 60.0)


def test_columns_table_maps_headers_to_fields():
    write_config('[columns]\n"Ticket No" = "case_id"\n"租户" = "tenant_id"\n')
    assert dict(load_config({}, {}).columns) == {"Ticket No": "case_id", "租户": "tenant_id"}


def test_columns_are_read_only():
    write_config('[columns]\n"Ticket No" = "case_id"\n')
    with pytest.raises(TypeError):
        load_config({}, {}).columns["x"] = "y"  # type: ignore[index]


def test_columns_that_are_not_a_table_are_a_config_error():
    write_config('columns = "case_id"\n')
    with pytest.raises(ConfigError, match=r"\[columns\]"):
        load_config({}, {})


def test_unknown_setting_is_a_config_error_naming_it():
    write_config("qsp = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'qsp'"):
        load_config({}, {})


def test_invalid_toml_is_a_config_error():
    write_config("qps = \n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config({}, {})


@pytest.mark.parametrize(
    "line",
    [
        'qps = "fast"',
        'concurrency = "many"',
        "concurrency = 2.5",
        "retries = true",
        "timeout = [1]",
        "out_dir = 5",
        "gateway = true",
        "app_key = 1.5",
        'resume = "maybe"',
        "resume = 2",
        "sheet = []",
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error_naming_setting_and_file(line):
    write_config(line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, {})
    assert line.split(" =")[0] in str(info.value)
    assert "importer.toml" in str(info.value)


def test_an_app_key_written_as_a_toml_number_is_read_as_text():
    write_config("app_key = 12345678\n")
    assert load_config({}, {}).app_key == "12345678"


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("yes", True), ("on", True), ("0", False), ("no", False)]
)
def test_boolean_words_in_the_file_are_understood(text, expected):
    write_config(f'resume = "{text}"\n')
    assert load_config({}, {}).resume is expected


# --- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"sign_method": "sha1"}, "--sign-method 'sha1'"),
        ({"qps": 0}, "--qps"),
        ({"qps": -1}, "--qps"),
        ({"qps": math.nan}, "--qps"),
        ({"concurrency": 0}, "--concurrency"),
        ({"retries": -1}, "--retries"),
        ({"timeout": 0}, "--timeout"),
        ({"max_ban": 0}, "--max-ban"),
        ({"gateway": "gw.api.taobao.com/router/rest"}, "--gateway"),
    ],
)
def test_impossible_values_are_usage_errors_naming_the_option(flags, words):
    with pytest.raises(UsageError) as info:
        load_config(flags, {})
    assert words in str(info.value)


def test_a_bad_value_in_the_file_is_checked_too():
    write_config("concurrency = 0\n")
    with pytest.raises(UsageError, match="--concurrency"):
        load_config({}, {})


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
def test_every_sign_method_is_accepted(method):
    assert load_config({"sign_method": method}, {}).sign_method == method


def test_app_secret_on_the_command_line_is_a_usage_error():
    with pytest.raises(UsageError, match="TOP_APP_SECRET"):
        load_config({"app_secret": "s3cret"}, {})


def test_an_unset_app_secret_flag_is_not_an_error():
    assert load_config({"app_secret": None}, {"TOP_APP_SECRET": "env"}).app_secret == "env"


def test_a_session_flag_is_refused_and_points_to_the_environment():
    # Secrets never come from argv (other users can read it); the env or the file gives them.
    with pytest.raises(UsageError, match="TOP_SESSION"):
        load_config({"session": "flag"}, {"TOP_SESSION": "env"})


# --- credentials ----------------------------------------------------------------------------


def test_credentials_from_the_environment():
    config = load_config(
        {}, {"TOP_APP_KEY": "key", "TOP_APP_SECRET": "secret", "TOP_SESSION": "session"}
    )
    assert config.credentials() == Credentials("key", "secret", "session")


def test_credentials_without_a_session():
    config = load_config({}, {"TOP_APP_KEY": "key", "TOP_APP_SECRET": "secret"})
    assert config.credentials() == Credentials("key", "secret", None)


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({"TOP_APP_SECRET": "secret"}, ["TOP_APP_KEY"], "TOP_APP_SECRET"),
        ({"TOP_APP_KEY": "key"}, ["TOP_APP_SECRET"], "TOP_APP_KEY"),
        ({}, ["TOP_APP_KEY", "TOP_APP_SECRET"], None),
    ],
)
def test_missing_credentials_are_a_usage_error_naming_the_variables(env, named, not_named):
    with pytest.raises(UsageError) as info:
        load_config({}, env).credentials()
    message = str(info.value)
    for var in named:
        assert var in message
    if not_named:
        assert not_named not in message
    assert "--simulate" in message


def test_credentials_from_the_config_file():
    write_config('app_key = "file-key"\napp_secret = "file-secret"\n')
    assert load_config({}, {}).credentials() == Credentials("file-key", "file-secret", None)


# --- secrets stay secret --------------------------------------------------------------------


def test_repr_never_shows_the_secret_or_the_session():
    config = load_config(
        {}, {"TOP_APP_KEY": "the-key", "TOP_APP_SECRET": "S3CRET", "TOP_SESSION": "SESS10N"}
    )
    for text in (repr(config), str(config), repr(config.credentials())):
        assert "S3CRET" not in text
        assert "SESS10N" not in text
    assert "the-key" in repr(config)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        load_config({}, {}).qps = 1  # type: ignore[misc]


# --- production policies --------------------------------------------------------------------


def test_qps_auto_from_a_flag_or_the_file():
    assert load_config({"qps": "auto"}, {}).qps_auto is True
    assert load_config({"qps": "AUTO"}, {}).qps_auto is True
    write_config('qps = "auto"\nqps_max = 50\n')
    config = load_config({}, {})
    assert (config.qps_auto, config.qps_max) == (True, 50.0)


def test_a_number_for_qps_beats_auto_in_the_file():
    write_config('qps = "auto"\n')
    config = load_config({"qps": "20"}, {})
    assert (config.qps_auto, config.qps) == (False, 20.0)


def test_qps_that_is_neither_a_number_nor_auto_says_so():
    with pytest.raises(ConfigError, match="--qps: qps = 'fast' is neither a number of calls"):
        load_config({"qps": "fast"}, {})


def test_policy_defaults():
    config = load_config({}, {})
    assert (config.canary, config.max_failure_rate, config.qps_auto, config.qps_max) == (
        20,
        0.2,
        False,
        1000.0,
    )
    assert (config.daily_quota, config.yes, config.archive) == (None, False, None)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"canary": -1}, "--canary"),
        ({"max_failure_rate": 1.5}, "--max-failure-rate"),
        ({"max_failure_rate": math.nan}, "--max-failure-rate"),
        ({"daily_quota": 0}, "--daily-quota"),
        ({"qps_max": 0}, "--qps-max"),
    ],
)
def test_impossible_policy_values_are_usage_errors(flags, words):
    with pytest.raises(UsageError, match=words):
        load_config(flags, {})


# --- every setting's type has its converter -------------------------------------------------


@pytest.mark.parametrize("name", [f.name for f in fields(Config)])
def test_every_setting_is_converted_by_its_real_type(name):
    """A field added with a type no converter handles fails here (and on import), instead of
    passing a file's value through unchecked."""
    hint = get_type_hints(Config)[name]
    convert = config_module._CONVERT[name]
    if name not in config_module._SPECIAL:
        assert convert is config_module.converter_for(hint)
    assert convert in {*config_module.CONVERTERS.values(), *config_module._SPECIAL.values()}
    default = getattr(Config(), name)
    if default is not None:  # the default is a value of the setting's type: it converts to itself
        assert convert(default) == default


@pytest.mark.parametrize("hint", [complex, set[str], int | str, list[str] | None])
def test_a_type_without_a_converter_is_refused(hint):
    with pytest.raises(TypeError, match="no converter"):
        config_module.converter_for(hint)


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (Path | None, "out", Path("out")),
        (float, 3, 3.0),
        (int | None, 2.0, 2),
        (bool | None, "yes", True),
        (str | None, 12345678, "12345678"),
        (tuple[str, ...], "https://x.example/hook", ("https://x.example/hook",)),
    ],
)
def test_the_converter_follows_the_type_not_its_spelling(hint, value, expected):
    assert config_module.converter_for(hint)(value) == expected


# --- a journal on a server ------------------------------------------------------------------


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_a_postgresql_journal_url_is_kept_whole(tmp_path, source):
    url = "postgresql://importer@db.example:5432/top"
    file = tmp_path / "importer.toml"
    file.write_text(f'journal = "{url}"\n' if source == "file" else "")
    flags = {"journal": url} if source == "flag" else {}
    env = {"TOP_JOURNAL": url} if source == "env" else {}
    assert load_config(flags, env, file).journal == url
    assert load_config({"journal": "j.sqlite"}, {}).journal == Path("j.sqlite")
    assert load_config({}, {"TOP_JOURNAL": "x/j.sqlite"}).journal == Path("x/j.sqlite")


@pytest.mark.parametrize(
    "url",
    ["postgresql://importer:s3cret@db:5432/top", "postgres://db/top?password=s3cret"],
)
def test_the_journals_password_is_refused_on_the_command_line(url):
    with pytest.raises(UsageError) as refused:
        load_config({"journal": url}, {})
    assert "s3cret" not in str(refused.value) and "PGPASSWORD" in str(refused.value)
    assert load_config({}, {"TOP_JOURNAL": url}).journal == url  # the environment may hold it


def test_a_readable_importer_toml_with_the_journals_password_is_warned_of(tmp_path):
    file = tmp_path / "importer.toml"
    file.write_text('journal = "postgresql://importer:s3cret@db/top"\n')
    file.chmod(0o644)
    warning = config_module.exposed_secret(file)
    assert warning is not None and "journal" in warning and "s3cret" not in warning
    file.chmod(0o600)
    assert config_module.exposed_secret(file) is None
