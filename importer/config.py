"""One frozen ``Config`` built once from flags, environment and ``importer.toml``.

Precedence: a flag beats the environment, the environment beats the config file, and the file
beats the defaults. The app secret never comes from a flag. ``qps`` takes a number or ``"auto"``
(which sets ``qps_auto``: find the rate from the platform's answers, up to ``qps_max``).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from importer import notify
from importer.errors import ConfigError, UsageError
from importer.i18n import LANGS, N_, _, lang_from_env, pgettext
from importer.protocol import LOOPBACK_HOSTS, Credentials
from importer.signing import SIGN_METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_FILE = "importer.toml"
DEFAULT_GATEWAY = "https://gw.api.taobao.com/router/rest"
ENV_VARS = {
    "gateway": "TOP_GATEWAY",
    "app_key": "TOP_APP_KEY",
    "app_secret": "TOP_APP_SECRET",
    "session": "TOP_SESSION",
    "notify_secret": "TOP_NOTIFY_SECRET",
    "journal": "TOP_JOURNAL",
}
SECRET_KEYS = frozenset({"app_secret", "session", "notify_secret"})
# what a missing credential is called in the sentence that asks for it
_CREDENTIALS = {"app_key": N_("app key ({variable})"), "app_secret": N_("app secret ({variable})")}


@dataclass(frozen=True)
class Config:
    api: str | None = None
    sheet: str | None = None
    out: Path | None = None
    out_dir: Path = Path("reports")
    gateway: str = DEFAULT_GATEWAY
    simulate: bool = False
    app_key: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    session: str | None = field(default=None, repr=False)
    sign_method: str = "hmac-sha256"
    qps: float = 10.0
    qps_auto: bool = False  # --qps auto: the rate is found from the answers, up to qps_max
    qps_max: float = 1000.0
    concurrency: int = 8
    retries: int = 5
    timeout: float = 15.0
    max_ban: float = 300.0
    # a file (SQLite), or a postgresql:// URL (a str: a Path would fold its //)
    journal: Path | str = Path("reports/journal.sqlite")
    resume: bool = True
    resend_unknown: bool | None = None  # None: the spec's idempotent decides
    dry_run: bool = False
    summary_json: Path | None = None
    progress: bool | None = None  # None: on when stderr is a TTY
    quiet: bool = False  # no progress at all, not even log lines (the Python API's default)
    lang: str | None = None  # zh or en: what a person reads; None: from the locale (LANG...)
    deadline: str | None = None  # "HH:MM", local time: stop starting calls then
    max_runtime: str | None = None  # "90m", "2h30m", "45s", "3600": stop starting calls after
    canary: int = 20  # the first N rows to send go first, at low concurrency, and are judged
    max_failure_rate: float = 0.2  # business-failure share that stops the canary or the run
    daily_quota: int | None = None  # calls per GMT+8 day this app key may make
    yes: bool = False  # run although the pre-flight says the daily quota will not suffice
    archive: Path | None = None  # move each input whose run ended with exit 0 here
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notify: tuple[str, ...] = field(default=(), repr=False)  # webhook URLs: their tokens
    notify_format: str | None = None  # None: by each URL's host
    notify_on: str = "always"  # or "failure": only when the exit code is not 0
    notify_secret: str | None = field(default=None, repr=False)  # signs DingTalk/Feishu bodies

    @property
    def language(self) -> str:
        """``lang``, else the locale's language (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
        ``LANG``: ``zh_*`` is Chinese, anything else English)."""
        return self.lang or lang_from_env()

    def credentials(self) -> Credentials:
        """The credentials for signing; a ``UsageError`` naming what is missing otherwise."""
        missing = [
            _(name).format(variable=ENV_VARS[key])
            for key, name in _CREDENTIALS.items()
            if not getattr(self, key)
        ]
        if len(missing) == 1:
            raise UsageError(
                _(
                    "Missing {what}: set it in the environment or in {file}, or use --simulate "
                    "to run against the built-in simulator."
                ).format(what=missing[0], file=DEFAULT_CONFIG_FILE)
            )
        if missing:
            raise UsageError(
                _(
                    "Missing {first} and {second}: set them in the environment or in {file}, or "
                    "use --simulate to run against the built-in simulator."
                ).format(first=missing[0], second=missing[1], file=DEFAULT_CONFIG_FILE)
            )
        return Credentials(self.app_key or "", self.app_secret or "", self.session or None)

    def stop_at(self, now: datetime, zone: tzinfo | None = None) -> datetime | None:
        """When to stop starting calls: the earlier of --deadline and now + --max-runtime.

        ``--deadline HH:MM`` is that time on the clock of ``zone`` (default: this machine's
        local time), daylight saving included: on the night the clocks change, 06:30 is 06:30
        on the wall, not the offset in force when the run started plus the hours between.
        """
        candidates = []
        if self.deadline:
            hour, minute = parse_clock(self.deadline)
            candidates.append(_wall_clock(now, hour, minute, zone))
        if self.max_runtime:
            candidates.append(now + timedelta(seconds=parse_duration(self.max_runtime)))
        return min(candidates, default=None)


def _wall_clock(now: datetime, hour: int, minute: int, zone: tzinfo | None) -> datetime:
    """The next (or, passed less than 12 h ago, the last) ``hour:minute`` on the wall clock
    of ``zone`` (None: the local time of this machine); naive in (a table test), naive out."""
    aware = now.tzinfo is not None or zone is not None
    if not aware:
        wall_now = now
    elif zone is not None:
        wall_now = now.astimezone(zone).replace(tzinfo=None)
    else:
        wall_now = now.astimezone().replace(tzinfo=None)
    at = wall_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at > wall_now + timedelta(hours=12):  # passed less than 12 h ago: yesterday's window
        at -= timedelta(days=1)
    elif at <= wall_now - timedelta(hours=12):  # a nightly window past midnight: tomorrow's
        at += timedelta(days=1)
    if not aware:
        return at
    # the wall time with the offset in force then: zoneinfo's rules, or the C library's (mktime)
    return at.replace(tzinfo=zone) if zone is not None else at.astimezone()


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)
MAX_RUNTIME_S = 30 * 86400  # a run window longer than a month is a typo


def parse_duration(text: str) -> float:
    """Seconds in "3600", "90s", "45m", "2h30m", at most 30 days (a usage error otherwise)."""
    text = text.strip().lower()
    match = _DURATION.match(text)
    if text.isascii() and text.isdigit():
        seconds = int(text)
    elif text and match and any(match.groups()):
        h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    else:
        raise UsageError(
            _(
                "--max-runtime {value} is not a duration; write e.g. 3600, 90s, 45m or 2h30m."
            ).format(value=repr(text))
        )
    if seconds > MAX_RUNTIME_S:
        raise UsageError(
            _("--max-runtime {value} is longer than 30 days (720h); give less.").format(value=text)
        )
    return float(seconds)


def parse_clock(text: str) -> tuple[int, int]:
    """(hour, minute) of "HH:MM" (a usage error otherwise)."""
    match = re.match(r"^(\d{1,2}):(\d{2})$", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise UsageError(
            _("--deadline {value} is not a time of day; write HH:MM, e.g. 06:30.").format(
                value=repr(text)
            )
        )
    return int(match.group(1)), int(match.group(2))


AUTO = "auto"


def _setting(name: str, value: Any, source: str) -> dict[str, Any]:
    """One setting as Config values: ``qps = "auto"`` is ``qps_auto``; a number clears it."""
    if name == "qps":
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return {"qps_auto": True}
        try:
            return {"qps": _coerce(name, value, source), "qps_auto": False}
        except ConfigError:
            raise ConfigError(
                _(
                    '{source}: qps = {value} is neither a number of calls per second nor "{auto}".'
                ).format(source=source, value=repr(value), auto=AUTO)
            ) from None
    return {name: _coerce(name, value, source)}


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


# Each converter takes a value that is not None and returns it as its setting's type, or
# raises TypeError / ValueError (which ``_coerce`` reports as a ConfigError naming it). Strict
# on purpose: a TOML ``concurrency = 2.5``, ``resume = "maybe"`` or ``gateway = 5`` is a
# mistake to report, not a value to truncate, read as false or crash on later.


def _to_path(value: Any) -> Path:
    if not isinstance(value, (str, Path)):
        raise TypeError(value)
    return Path(value)


def _to_journal(value: Any) -> Path | str:
    """A ``postgresql://`` URL as it is, anything else a file path."""
    if isinstance(value, str) and value.lower().startswith(("postgresql://", "postgres://")):
        return value
    return _to_path(value)


def _to_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(value)


def _to_mapping(value: Any) -> Mapping[str, str]:  # columns: header -> field
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(value)
    return MappingProxyType(dict(value))


def _to_tuple(value: Any) -> tuple[str, ...]:  # notify: one URL or a list of them
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise TypeError(value)
    return tuple(values)


def _to_str(value: Any) -> str:
    if isinstance(value, int):  # app_key = 12345678 written without quotes
        return str(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


# a setting's type (without its ``| None``; a generic by its origin) -> its converter
CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    Path: _to_path,
    float: float,
    int: _to_int,
    bool: _to_bool,
    Mapping: _to_mapping,
    tuple: _to_tuple,
    str: _to_str,
}


def converter_for(hint: Any) -> Callable[[Any], Any]:
    """The converter of a setting whose type is ``hint`` (``float``, ``Path | None``,
    ``Mapping[str, str]``...); a ``TypeError`` for a type no converter handles."""
    if isinstance(hint, UnionType) or get_origin(hint) is Union:
        members = [t for t in get_args(hint) if t is not type(None)]
        hint = members[0] if len(members) == 1 else hint
    converter = CONVERTERS.get(get_origin(hint) or hint)
    if converter is None:
        raise TypeError(f"a setting of type {hint} has no converter in config.CONVERTERS")
    return converter


# each setting's converter, from Config's real types (resolved once), and its type as written
# in the class, which the error message shows
_SPECIAL = {"journal": _to_journal}
_CONVERT = {
    name: _SPECIAL[name] if name in _SPECIAL else converter_for(hint)
    for name, hint in get_type_hints(Config).items()
}
_SHOWN = {f.name: str(f.type) for f in fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of setting ``name``; a ``ConfigError`` for anything else."""
    if value is None:
        return None
    convert = _CONVERT[name]
    bad = ConfigError(
        _("{source}: {name} = {value} is not a valid {type}.").format(
            source=source, name=name, value=repr(value), type=_SHOWN[name]
        )
    )
    if isinstance(value, bool) and convert is not _to_bool:
        raise bad  # bool is an int in Python: true must not become 1
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise bad from None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(_("Config file {path} does not exist.").format(path=path)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            _("Config file {path} cannot be read: {why}.").format(path=path, why=exc)
        ) from None
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key == "columns":
            if not isinstance(value, dict):
                raise ConfigError(
                    _("Config file {path}: [columns] must map headers to fields.").format(path=path)
                )
            out["columns"] = MappingProxyType({str(k): str(v) for k, v in value.items()})
        elif key in _CONVERT:
            out.update(_setting(key, value, _("Config file {path}").format(path=path)))
        else:
            raise ConfigError(
                _("Config file {path}: unknown setting {key}.").format(path=path, key=repr(raw_key))
            )
    return out


def exposed_secret(path: Path) -> str | None:
    """A warning when a config file holding the secret or the session can be read by other
    users of this machine (POSIX mode bits), else None."""
    try:
        mode = path.stat().st_mode
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    held = [k for k in data if k.replace("-", "_") in SECRET_KEYS]
    if isinstance(data.get("journal"), str) and _url_password(data["journal"]):
        held.append("journal")  # its URL holds the database's password
    if os.name != "posix" or not held or not mode & 0o077:
        return None
    return _(
        "{path} holds {keys} and other users of this machine can read it (mode {mode}); run: "
        "chmod 600 {path}"
    ).format(path=path, keys=pgettext("list", " and ").join(held), mode=f"{stat.S_IMODE(mode):o}")


def _url_password(url: str) -> bool:
    """Whether a ``postgresql://`` journal URL holds a password."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        return False
    return bool(parts.password) or "password=" in parts.query.lower()


def config_file_in_use(config_file: Path | None) -> Path | None:
    """The config file ``load_config`` reads: the one given, else importer.toml if present."""
    if config_file is None and Path(DEFAULT_CONFIG_FILE).is_file():
        return Path(DEFAULT_CONFIG_FILE)
    return config_file


def given(key: str, flags: Mapping[str, Any], config_file: Path | None = None) -> bool:
    """Whether the user set ``key``: as a flag, or in the config file in use."""
    if flags.get(key) is not None:
        return True
    in_use = config_file_in_use(config_file)
    return in_use is not None and key in read_config_file(in_use)


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: Path | None = None,
) -> Config:
    """Merge file, environment and flags (``None`` flags are unset) into one ``Config``."""
    values: dict[str, Any] = {}
    config_file = config_file_in_use(config_file)
    if config_file is not None:
        values.update(read_config_file(config_file))
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = _to_journal(env[var]) if key == "journal" else env[var]
    for key, value in flags.items():
        if key in SECRET_KEYS and value is not None:
            # argv is visible to every user of the machine (ps, /proc) and lands in shell history.
            raise UsageError(
                _(
                    "The {what} is never taken from the command line (other users can read it "
                    "there); set {variable} in the environment or {key} in {file}."
                ).format(
                    what=key.replace("_", " "),
                    variable=ENV_VARS[key],
                    key=key,
                    file=DEFAULT_CONFIG_FILE,
                )
            )
        if key == "journal" and isinstance(value, str) and _url_password(value):
            raise UsageError(
                _(
                    "The journal's password is never taken from the command line (other users "
                    "can read it there); leave it out of --journal and set PGPASSWORD, use "
                    "~/.pgpass, or write journal in {file} (chmod 600)."
                ).format(file=DEFAULT_CONFIG_FILE)
            )
        if value is not None:
            values.update(_setting(key, value, f"--{key.replace('_', '-')}"))
    config = replace(Config(), **values)
    _check(config)
    return config


def _check_notify(config: Config) -> None:
    if config.notify_format is not None and config.notify_format not in notify.FORMATS:
        raise UsageError(
            _("--notify-format {value} is unknown; use one of {choices}.").format(
                value=repr(config.notify_format), choices=", ".join(notify.FORMATS)
            )
        )
    if config.notify_on not in notify.WHEN:
        raise UsageError(
            _("--notify-on {value} is unknown; use always or failure.").format(
                value=repr(config.notify_on)
            )
        )
    for url in config.notify:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
            parts.port  # noqa: B018 - raises on a port that is not a number
            hostname.encode("idna") if hostname else None
        except (ValueError, UnicodeError):
            raise UsageError(
                _(
                    "--notify {url}... is not a URL that can be sent to; give the robot's "
                    "https:// webhook URL."
                ).format(url=repr(url[:20]))
            ) from None
        shown = f"{parts.scheme}://{hostname}" if hostname else repr(url[:20])
        loopback = hostname in LOOPBACK_HOSTS
        if not hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise UsageError(
                _(
                    "--notify {url}... is not an https:// webhook URL (plain http is only for "
                    "127.0.0.1): it holds the robot's token, so it never goes over plain HTTP."
                ).format(url=shown)
            )


# The documented range of every number setting: (lowest, highest, lowest excluded).
RANGES: dict[str, tuple[float, float, bool]] = {
    "qps": (0, 10_000, True),
    "qps_max": (0, 10_000, True),
    "timeout": (0, 3600, True),
    "max_ban": (0, 7 * 86400, True),
    "concurrency": (1, 1000, False),
    "retries": (0, 100, False),
    "canary": (0, 1_000_000, False),
    "max_failure_rate": (0, 1, False),
    "daily_quota": (1, 10**12, False),
}


def _in_range(name: str, value: float) -> None:
    low, high, excluded = RANGES[name]
    # written so that NaN fails both comparisons
    if (value > low if excluded else value >= low) and value <= high:
        return
    if excluded:
        message = _("--{option} must be greater than {low} and at most {high}; got {value}.")
    else:
        message = _("--{option} must be at least {low} and at most {high}; got {value}.")
    raise UsageError(
        message.format(
            option=name.replace("_", "-"), low=f"{low:g}", high=f"{high:g}", value=f"{value:g}"
        )
    )


def _check(config: Config) -> None:
    if config.lang is not None and config.lang not in LANGS:
        raise UsageError(
            _("--lang {value} is unknown; use zh (中文) or en (English).").format(
                value=repr(config.lang)
            )
        )
    if config.sign_method not in SIGN_METHODS:
        raise UsageError(
            _("--sign-method {value} is unknown; use one of {choices}.").format(
                value=repr(config.sign_method), choices=", ".join(SIGN_METHODS)
            )
        )
    for name in RANGES:
        value = getattr(config, name)
        if value is not None:
            _in_range(name, value)
    out = config.out
    if out is not None and not is_result_name(out):
        raise UsageError(
            _("--out {path} is not a result file name; give one ending with .xlsx or .csv.").format(
                path=repr(str(out))
            )
        )
    config.stop_at(datetime.now())  # parses --deadline and --max-runtime now, not mid-run
    _check_notify(config)
    if not config.gateway.startswith(("http://", "https://")):
        raise UsageError(
            _("--gateway {url} must be an http:// or https:// URL.").format(
                url=repr(config.gateway)
            )
        )


RESULT_SUFFIXES = (".xlsx", ".csv")  # what a result file can be written as


def is_result_name(path: Path) -> bool:
    """``path`` names a file the reporter can write (checked for ``--out`` before any call)."""
    return bool(path.name) and path.suffix.lower() in RESULT_SUFFIXES
