"""API specs as data: one TOML file per TOP method, read into frozen ``ApiSpec`` values.

Nothing about a particular API lives in code; the dispatcher, the validator and the simulator
all read the spec.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from importer.errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIELD_TYPES = ("String", "Number")


def normalise_header(text: str) -> str:
    """The form headers are compared in: case-folded, spaces, ``_`` and ``-`` dropped."""
    return re.sub(r"[\s_\-]+", "", str(text)).casefold()


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool
    aliases: tuple[str, ...] = ()
    example: str = ""

    @property
    def headers(self) -> tuple[str, ...]:
        """Every header text that names this field (before normalisation)."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class ApiSpec:
    method: str
    object_param: str
    fields: tuple[FieldSpec, ...]
    response_envelope: str
    success_path: str = "result.success"
    needs_session: bool = False
    title: str = ""

    @property
    def required_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.required)

    def describe(self) -> str:
        """What ``top-import apis`` prints: the method, its fields and their accepted headers."""
        lines = [
            f"{self.method}  {self.title}".rstrip(),
            f"  object parameter: {self.object_param}",
        ]
        for f in self.fields:
            flag = "required" if f.required else "optional"
            lines.append(f"  {f.name:<22} {f.type:<7} {flag:<9} columns: {', '.join(f.headers)}")
        return "\n".join(lines)

    def header_index(self) -> dict[str, str]:
        """Normalised header text -> field name, for every name and alias."""
        index: dict[str, str] = {}
        for f in self.fields:
            for header in f.headers:
                index[normalise_header(header)] = f.name
        return index


def _builtin_dir():
    return resources.files(__name__)


def builtin_methods() -> list[str]:
    """Methods of the specs shipped inside the package, sorted."""
    return sorted(
        p.name[: -len(".toml")] for p in _builtin_dir().iterdir() if p.name.endswith(".toml")
    )


def load_spec(api: str | None) -> ApiSpec:
    """A built-in method name (default: the first built-in) or a path to a ``.toml`` spec file."""
    if api is None:
        api = "alibaba.lyservice.group.ticket.customer.save"
    if api.endswith(".toml"):
        path = Path(api)
        if not path.is_file():
            raise SpecError(f"API spec file {api} does not exist; give a path to a .toml spec.")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"API spec file {api} cannot be read as UTF-8 text: {exc}.") from None
        return parse_spec(text, source=api)
    resource = _builtin_dir() / f"{api}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_methods())
        raise SpecError(
            f"Unknown API {api!r}; built-in APIs are: {known} (or give a path to a .toml spec)."
        )
    return parse_spec(resource.read_text(encoding="utf-8"), source=api)


def parse_spec(text: str, source: str = "spec") -> ApiSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"API spec {source} is not valid TOML: {exc}.") from None
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise SpecError(f"API spec {source} has no 'method'; add method = \"the.top.method\".")
    object_param = data.get("object_param")
    if not isinstance(object_param, str) or not object_param:
        raise SpecError(f"API spec {source} has no 'object_param'; name the object parameter.")
    raw_fields = data.get("fields", [])
    if not isinstance(raw_fields, list) or not all(isinstance(r, dict) for r in raw_fields):
        raise SpecError(f"API spec {source}: fields must be [[fields]] tables.")
    fields: list[FieldSpec] = []
    headers: dict[str, str] = {}
    for i, raw in enumerate(raw_fields, start=1):
        name = raw.get("name")
        ftype = raw.get("type")
        if not isinstance(name, str) or not name:
            raise SpecError(f"API spec {source}: field #{i} has no name.")
        if ftype not in FIELD_TYPES:
            raise SpecError(
                f"API spec {source}: field {name!r} has type {ftype!r}; "
                f"use one of {', '.join(FIELD_TYPES)}."
            )
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list):
            raise SpecError(f"API spec {source}: field {name!r} aliases must be a list of headers.")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            raise SpecError(f"API spec {source}: field {name!r} required must be true or false.")
        spec = FieldSpec(
            name=name,
            type=ftype,
            required=required,
            aliases=tuple(str(a) for a in aliases),
            example=str(raw.get("example", "")),
        )
        if any(f.name == name for f in fields):
            raise SpecError(f"API spec {source}: field {name!r} is defined twice.")
        for header in spec.headers:
            other = headers.setdefault(normalise_header(header), name)
            if other != name:
                raise SpecError(
                    f"API spec {source}: header {header!r} names both {other!r} and {name!r}."
                )
        fields.append(spec)
    if not fields:
        raise SpecError(f"API spec {source} has no [[fields]].")
    envelope = data.get("response_envelope") or method.replace(".", "_") + "_response"
    return ApiSpec(
        method=method,
        object_param=object_param,
        fields=tuple(fields),
        response_envelope=envelope,
        success_path=data.get("success_path", "result.success"),
        needs_session=bool(data.get("needs_session", False)),
        title=str(data.get("title", "")),
    )
