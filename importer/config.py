"""One frozen ``Config`` built once from flags, environment and ``importer.toml``.

Precedence: a flag beats the environment, the environment beats the config file, and the file
beats the defaults. The app secret and session never come from a flag.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from importer.errors import ConfigError, UsageError
from importer.protocol import Credentials
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
}
SECRET_KEYS = frozenset({"app_secret", "session"})


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
    concurrency: int = 8
    retries: int = 5
    timeout: float = 15.0
    max_ban: float = 300.0
    journal: Path = Path("reports/journal.sqlite")
    resume: bool = True
    resend_unknown: bool = True
    dry_run: bool = False
    summary_json: Path | None = None
    progress: bool | None = None  # None: on when stderr is a TTY
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def credentials(self) -> Credentials:
        """The credentials for signing; a ``UsageError`` naming what is missing otherwise."""
        missing = [
            f"{name} ({ENV_VARS[key]})"
            for key, name in (("app_key", "app key"), ("app_secret", "app secret"))
            if not getattr(self, key)
        ]
        if missing:
            raise UsageError(
                f"Missing {' and '.join(missing)}: set them in the environment or in "
                f"{DEFAULT_CONFIG_FILE}, or use --simulate to run against the built-in simulator."
            )
        return Credentials(self.app_key or "", self.app_secret or "", self.session or None)


_TYPES = {f.name: f.type for f in fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = str(_TYPES[name])
    if value is None:
        return None
    try:
        if "Path" in kind:
            return Path(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid {kind}.") from None
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}.") from None
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key == "columns":
            if not isinstance(value, dict):
                raise ConfigError(f"Config file {path}: [columns] must map headers to fields.")
            out["columns"] = MappingProxyType({str(k): str(v) for k, v in value.items()})
        elif key in _TYPES:
            out[key] = _coerce(key, value, f"Config file {path}")
        else:
            raise ConfigError(f"Config file {path}: unknown setting {raw_key!r}.")
    return out


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: Path | None = None,
) -> Config:
    """Merge file, environment and flags (``None`` flags are unset) into one ``Config``."""
    values: dict[str, Any] = {}
    if config_file is None and Path(DEFAULT_CONFIG_FILE).is_file():
        config_file = Path(DEFAULT_CONFIG_FILE)
    if config_file is not None:
        values.update(read_config_file(config_file))
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = env[var]
    for key, value in flags.items():
        if key in SECRET_KEYS:
            raise UsageError(f"The {key} is never taken from the command line; set it in the env.")
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    config = replace(Config(), **values)
    _check(config)
    return config


def _check(config: Config) -> None:
    if config.sign_method not in SIGN_METHODS:
        raise UsageError(
            f"--sign-method {config.sign_method!r} is unknown; "
            f"use one of {', '.join(SIGN_METHODS)}."
        )
    for name, low in (("qps", 0), ("timeout", 0), ("max_ban", 0)):
        if getattr(config, name) <= low:
            raise UsageError(f"--{name.replace('_', '-')} must be greater than {low}.")
    if config.concurrency < 1:
        raise UsageError("--concurrency must be at least 1.")
    if config.retries < 0:
        raise UsageError("--retries must be 0 or more.")
    if not config.gateway.startswith(("http://", "https://")):
        raise UsageError(f"--gateway {config.gateway!r} must be an http:// or https:// URL.")
