"""API specs as data: one TOML file per TOP method, read into frozen ``ApiSpec`` values.

The built-in spec files are data in ``importer/specs/``; this module reads them and spec files
given by path.

Nothing about a particular API lives in code; the validator, the request builder, the response
classifier and the simulator all read the spec. The format, by example::

    method = "taobao.example.thing.save"     # required: the TOP method name
    title = "保存物品"                        # optional: shown by `top-import apis`
    object_param = "thing_request"           # optional: the one parameter sent as a JSON object
    needs_session = false                    # true: the call needs TOP_SESSION (code 26 without)
    idempotent = false                       # true: repeating a call is harmless (an upsert by
                                             #   a key), so --resend-unknown is the default
    response_envelope = "..."                # default: the method, "." -> "_", + "_response"
    success_path = "result.success"          # default; or: success = "no_error"
    identity = ["thing_id"]                  # default: the whole payload is the journal key

    [[fields]]                               # one table per business field, in sending order
    name = "thing_id"                        # the parameter (or JSON key) name
    type = "Number"                          # String | Number | Boolean | Date
                                             #   | List<String> | List<Number>
    required = true                          # default false
    aliases = ["thingId", "物品ID"]          # other column headers that name this field
    example = "42"                           # a valid value, for documentation and tests
    location = "object"                      # "object" (inside object_param) or "flat" (a
                                             #   top-level parameter); default: "object" when the
                                             #   spec has an object_param, else "flat"
    max_length = 64                          # String / List<String> (each item): characters
    allowed = ["a", "b"]                     # String / Number / List (each item): the values
    max_items = 20                           # List: at most this many items

What is sent, per type (values are trimmed first; an empty optional field is left out):

==============  =====================================  ===========================================
type            inside the object parameter (JSON)     a flat parameter (form text)
==============  =====================================  ===========================================
String          string                                 the text
Number          number (int64)                         the digits
Boolean         ``true`` / ``false``                   ``true`` / ``false``
Date            ``"yyyy-MM-dd HH:mm:ss"``              ``yyyy-MM-dd HH:mm:ss``
List<String>    array of strings                       items joined by ``,``
List<Number>    array of numbers                       items joined by ``,``
==============  =====================================  ===========================================

This follows the official Java SDK: a domain object's list becomes a JSON array, a top-level list
parameter is comma-separated text, and dates are written ``yyyy-MM-dd HH:mm:ss``. Which cells
are accepted for each type is documented in ``importer.records``.

Success is ``true`` at ``success_path`` inside the envelope (``result.success`` by default);
``success = "no_error"`` means any envelope without an ``error_response`` is a success.
``identity`` names the fields whose values identify a row: the journal key and the duplicate
check use them instead of the whole payload (two rows with the same identity are duplicates).
``idempotent = true`` says a call may be repeated without harm (the API is an upsert by a key):
calls whose answer was lost are then sent again by default (``--resend-unknown``).

Every mistake in a spec file is collected and reported at once in a ``SpecError``, one sentence
each.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from importer.errors import SpecError
from importer.i18n import _

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_METHOD = "alibaba.lyservice.group.ticket.customer.save"
FIELD_TYPES = ("String", "Number", "Boolean", "Date", "List<String>", "List<Number>")
LIST_TYPES = {"List<String>": "String", "List<Number>": "Number"}
LOCATIONS = ("object", "flat")
NO_ERROR = "no_error"
# Parameters the request builder sets itself: a flat field must not take one of these names.
SYSTEM_PARAMS = frozenset(
    {"method", "app_key", "timestamp", "format", "v", "sign_method", "sign", "session"}
    | {"partner_id", "simplify", "target_app_key"}
)

_METHOD = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_TOP_KEYS = (
    "method",
    "title",
    "object_param",
    "needs_session",
    "idempotent",
    "response_envelope",
    "success_path",
    "success",
    "identity",
    "fields",
)
_FIELD_KEYS = (
    "name",
    "type",
    "required",
    "aliases",
    "example",
    "location",
    "max_length",
    "allowed",
    "max_items",
)


def normalise_header(text: str) -> str:
    """The form headers are compared in: case-folded, spaces, ``_`` and ``-`` dropped."""
    return re.sub(r"[\s_\-]+", "", str(text)).casefold()


@dataclass(frozen=True)
class FieldSpec:
    """One business field. ``allowed`` holds text (a Number's values as digits)."""

    name: str
    type: str
    required: bool
    aliases: tuple[str, ...] = ()
    example: str = ""
    location: str = "object"  # "object": a key of the object parameter; "flat": a parameter
    max_length: int | None = None
    allowed: tuple[str, ...] = ()
    max_items: int | None = None

    @property
    def headers(self) -> tuple[str, ...]:
        """Every header text that names this field (before normalisation)."""
        return (self.name, *self.aliases)

    @property
    def is_list(self) -> bool:
        return self.type in LIST_TYPES

    @property
    def item_type(self) -> str:
        """The type of one value: the list's item type, or the field's own type."""
        return LIST_TYPES.get(self.type, self.type)

    @property
    def is_flat(self) -> bool:
        return self.location == "flat"

    def rules(self) -> str:
        """The limits beyond the type, in words ("" when there are none)."""
        each = "each item " if self.is_list else ""
        parts = []
        if self.max_items is not None:
            parts.append(f"at most {self.max_items} items")
        if self.max_length is not None:
            parts.append(f"{each}at most {self.max_length} characters")
        if self.allowed:
            parts.append(f"{each}one of: {', '.join(self.allowed)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ApiSpec:
    """One TOP method. ``object_param`` is None when every field is a flat parameter;
    ``success_path`` is "" when any envelope without ``error_response`` is a success."""

    method: str
    object_param: str | None
    fields: tuple[FieldSpec, ...]
    response_envelope: str
    success_path: str = "result.success"
    needs_session: bool = False
    title: str = ""
    identity: tuple[str, ...] = ()
    idempotent: bool = False  # a repeated call does no harm: --resend-unknown by default

    @property
    def required_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.required)

    @property
    def flat_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.is_flat)

    def success_rule(self) -> str:
        if not self.success_path:
            return f"{self.response_envelope} without an error_response"
        return f"{self.response_envelope}.{self.success_path} is true"

    def describe(self) -> str:
        """What ``top-import apis`` prints: the method, how it is called, its fields and headers."""
        lines = [f"{self.method}  {self.title}".rstrip()]
        if self.object_param:
            lines.append(f"  object parameter: {self.object_param} (JSON)")
        if self.flat_fields:
            lines.append("  flat parameters: " + ", ".join(f.name for f in self.flat_fields))
        lines.append(
            "  session: needed (TOP_SESSION)" if self.needs_session else "  session: not needed"
        )
        lines.append(f"  success: {self.success_rule()}")
        key = ", ".join(self.identity) if self.identity else "the whole payload"
        lines.append(f"  journal and duplicate key: {key}")
        lines.append(
            "  idempotent: yes (a call whose answer was lost is sent again)"
            if self.idempotent
            else "  idempotent: no (a call whose answer was lost is not sent again without "
            "--resend-unknown)"
        )
        for f in self.fields:
            flag = "required" if f.required else "optional"
            lines.append(
                f"  {f.name:<22} {f.location:<6} {f.type:<12} {flag:<9} "
                f"columns: {', '.join(f.headers)}"
            )
            if f.rules():
                lines.append(f"  {'':<22} {f.rules()}")
        return "\n".join(lines)

    def header_index(self) -> dict[str, str]:
        """Normalised header text -> field name, for every name and alias."""
        index: dict[str, str] = {}
        for f in self.fields:
            for header in f.headers:
                index[normalise_header(header)] = f.name
        return index


def _builtin_dir():
    """The built-in spec files: data in the package's ``specs`` folder."""
    return resources.files("importer") / "specs"


def builtin_methods() -> list[str]:
    """Methods of the specs shipped inside the package, sorted."""
    return sorted(
        p.name[: -len(".toml")] for p in _builtin_dir().iterdir() if p.name.endswith(".toml")
    )


def load_spec(api: str | None) -> ApiSpec:
    """A built-in method name (default: the ticket API) or a path to a ``.toml`` spec file."""
    if api is None:
        api = DEFAULT_METHOD
    if api.endswith(".toml"):
        path = Path(api)
        if not path.is_file():
            raise SpecError(
                _("API spec file {path} does not exist; give a path to a .toml spec.").format(
                    path=api
                )
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(
                _("API spec file {path} cannot be read as UTF-8 text: {why}.").format(
                    path=api, why=exc
                )
            ) from None
        return parse_spec(text, source=api)
    resource = _builtin_dir() / f"{api}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_methods())
        raise SpecError(
            _(
                "Unknown API {api}; built-in APIs are: {known} (or give a path to a .toml spec)."
            ).format(api=repr(api), known=known)
        )
    return parse_spec(resource.read_text(encoding="utf-8"), source=api)


def parse_spec(text: str, source: str = "spec") -> ApiSpec:
    """The spec in ``text``; a ``SpecError`` listing every mistake (``source`` names the file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(
            _("API spec {source} is not valid TOML: {why}.").format(source=source, why=exc)
        ) from None
    mistakes: list[str] = []
    spec = _Parser(mistakes.append).spec(data)
    if mistakes:
        if len(mistakes) == 1:
            raise SpecError(
                _("API spec {source}: {mistake}").format(source=source, mistake=mistakes[0])
            )
        listed = "\n".join(f"  - {m}" for m in mistakes)
        raise SpecError(
            _("API spec {source} has {count} mistakes:\n{listed}").format(
                source=source, count=len(mistakes), listed=listed
            )
        )
    assert spec is not None
    return spec


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    """Reads a spec's TOML data, reporting each mistake as one sentence and carrying on."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report

    def spec(self, data: dict) -> ApiSpec | None:
        report = self.report
        for key in data:
            if key not in _TOP_KEYS:
                report(
                    _("unknown key {key}; the keys of a spec are: {keys}.").format(
                        key=repr(key), keys=", ".join(_TOP_KEYS)
                    )
                )
        method = data.get("method")
        if not isinstance(method, str) or not method.strip():
            report(_('there is no method; add method = "the.top.method" (a string).'))
            method = ""
        elif not _METHOD.match(method):
            report(
                _(
                    "method {method} is not a TOP method name; write dotted words such as "
                    '"taobao.item.get".'
                ).format(method=repr(method))
            )
        object_param = data.get("object_param")
        if object_param is not None and (
            not isinstance(object_param, str) or not _NAME.match(object_param)
        ):
            report(
                _(
                    "object_param {name} is not a parameter name; use letters, digits and _, or "
                    "leave object_param out when every field is a flat parameter."
                ).format(name=repr(object_param))
            )
            object_param = None
        fields = self.fields(data.get("fields"), object_param)
        names = {f.name for f in fields}
        if object_param and fields and not any(not f.is_flat for f in fields):
            report(
                _(
                    'object_param {name} has no fields; give some fields location = "object" or '
                    "leave object_param out."
                ).format(name=repr(object_param))
            )
        if object_param and object_param in names:
            report(
                _("field {name} has the name of the object parameter.").format(
                    name=repr(object_param)
                )
            )
        needs_session = data.get("needs_session", False)
        if not isinstance(needs_session, bool):
            report(
                _("{key} is {value}; write true or false.").format(
                    key="needs_session", value=repr(needs_session)
                )
            )
            needs_session = False
        idempotent = data.get("idempotent", False)
        if not isinstance(idempotent, bool):
            report(
                _("{key} is {value}; write true or false.").format(
                    key="idempotent", value=repr(idempotent)
                )
            )
            idempotent = False
        envelope = data.get("response_envelope")
        if envelope is None:
            envelope = method.replace(".", "_") + "_response"
        elif not isinstance(envelope, str) or not _NAME.match(envelope):
            report(
                _("response_envelope {value} is not a JSON key name.").format(value=repr(envelope))
            )
            envelope = ""
        title = data.get("title", "")
        if not isinstance(title, str):
            report(_("title {value} must be a string.").format(value=repr(title)))
            title = ""
        return ApiSpec(
            method=method,
            object_param=object_param,
            fields=tuple(fields),
            response_envelope=envelope,
            success_path=self.success(data),
            needs_session=needs_session,
            title=title,
            identity=self.identity(data.get("identity"), names),
            idempotent=idempotent,
        )

    def success(self, data: dict) -> str:
        path = data.get("success_path")
        rule = data.get("success")
        if rule is not None:
            if path is not None:
                self.report(_("give either success_path or success, not both."))
            if rule != NO_ERROR:
                self.report(
                    _(
                        'success is {value}; the only rule is success = "no_error" (any envelope '
                        'without error_response succeeds); for a path write success_path = "a.b".'
                    ).format(value=repr(rule))
                )
            return ""
        if path is None:
            return "result.success"
        if not isinstance(path, str) or not _PATH.match(path):
            self.report(
                _(
                    "success_path {value} is not a dotted path of JSON keys such as "
                    '"result.success"; for "no error_response means success" write '
                    'success = "no_error".'
                ).format(value=repr(path))
            )
            return "result.success"
        return path

    def identity(self, value: object, names: set[str]) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.report(
                _(
                    'identity must be a list of field names, such as ["case_id"], not {value}.'
                ).format(value=repr(value))
            )
            return ()
        for name in value:
            if names and name not in names:
                self.report(
                    _("identity names {name}, which is not a field of the spec.").format(
                        name=repr(name)
                    )
                )
        if len(set(value)) != len(value):
            self.report(_("identity names a field twice."))
        return tuple(value)

    def fields(self, raw_fields: object, object_param: str | None) -> list[FieldSpec]:
        report = self.report
        if raw_fields is None or raw_fields == []:
            report(_("there are no [[fields]]; add one [[fields]] table per parameter."))
            return []
        if not isinstance(raw_fields, list) or not all(isinstance(r, dict) for r in raw_fields):
            report(_("fields must be [[fields]] tables, one per parameter."))
            return []
        fields: list[FieldSpec] = []
        headers: dict[str, str] = {}
        for i, raw in enumerate(raw_fields, start=1):
            spec = self.field(i, raw, object_param)
            if spec is None:
                continue
            if any(f.name == spec.name for f in fields):
                report(_("field {name} is defined twice.").format(name=repr(spec.name)))
                continue
            for header in spec.headers:
                other = headers.setdefault(normalise_header(header), spec.name)
                if other != spec.name:
                    report(
                        _("header {header} names both {first} and {second}.").format(
                            header=repr(header), first=repr(other), second=repr(spec.name)
                        )
                    )
            fields.append(spec)
        return fields

    def field(self, i: int, raw: dict, object_param: str | None) -> FieldSpec | None:
        report = self.report
        name = raw.get("name")
        named = isinstance(name, str) and bool(name)
        if not named:  # its other mistakes are still listed, under its number
            report(_('field #{number} has no name; add name = "the_parameter".').format(number=i))
            # the field as every later sentence about it names it
            name, label = "", _("field #{number}").format(number=i)
        else:
            label = _("field {name}").format(name=repr(name))
            if not _NAME.match(name):
                report(
                    _(
                        "{field}: the name is not a parameter name; use letters, digits and _."
                    ).format(field=label)
                )
        for key in raw:
            if key in _TOP_KEYS and key not in _FIELD_KEYS:
                report(
                    _(
                        "{field} has the key {key} of the spec itself; put the spec's own keys "
                        "above the first [[fields]] (TOML puts every key below it into that table)."
                    ).format(field=label, key=repr(key))
                )
            elif key not in _FIELD_KEYS:
                report(
                    _("{field} has an unknown key {key}; its keys are: {keys}.").format(
                        field=label, key=repr(key), keys=", ".join(_FIELD_KEYS)
                    )
                )
        ftype = raw.get("type")
        if ftype is None:
            report(
                _("{field} has no type; use one of {types}.").format(
                    field=label, types=", ".join(FIELD_TYPES)
                )
            )
            ftype = "String"
        elif ftype not in FIELD_TYPES:
            hint = ""
            close = [
                t for t in FIELD_TYPES if t.casefold() == str(ftype).replace(" ", "").casefold()
            ]
            if close:
                hint = _(" (types are case-sensitive: {type})").format(type=repr(close[0]))
            elif str(ftype).casefold().startswith("list"):
                hint = _(" (a list is List<String> or List<Number>)")
            report(
                _("{field} has type {type}; use one of {types}{hint}.").format(
                    field=label, type=repr(ftype), types=", ".join(FIELD_TYPES), hint=hint
                )
            )
            ftype = "String"
        required = raw.get("required", False)
        if not isinstance(required, bool):
            report(
                _("{field}: required must be true or false, not {value}.").format(
                    field=label, value=repr(required)
                )
            )
            required = False
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list) or not all(
            isinstance(a, str) and a.strip() for a in aliases
        ):
            report(
                _('{field}: aliases must be a list of column headers, such as ["caseId"].').format(
                    field=label
                )
            )
            aliases = []
        example = raw.get("example", "")
        if isinstance(example, bool):
            example = "true" if example else "false"
        elif isinstance(example, list):
            example = ",".join(str(e) for e in example)
        location = raw.get("location", "object" if object_param else "flat")
        if location not in LOCATIONS:
            report(
                _('{field} has location {value}; use "object" or "flat".').format(
                    field=label, value=repr(location)
                )
            )
            location = "flat"
        elif location == "object" and not object_param:
            report(
                _(
                    "{field} is in the object parameter but the spec has no object_param; add "
                    'object_param = "the_request" or set location = "flat".'
                ).format(field=label)
            )
        if location == "flat" and name in SYSTEM_PARAMS:
            report(
                _("{field} is a flat parameter named like a system parameter; rename it.").format(
                    field=label
                )
            )
        max_length = self.limit(label, raw, "max_length", ("String", "List<String>"))
        allowed = self.allowed(label, raw.get("allowed"), ftype)
        max_items = self.limit(label, raw, "max_items", tuple(LIST_TYPES))
        if not named:
            return None
        return FieldSpec(
            name=name,
            type=ftype,
            required=required,
            aliases=tuple(aliases),
            example=str(example),
            location=location,
            max_length=max_length,
            allowed=allowed,
            max_items=max_items,
        )

    def limit(self, label: str, raw: dict, key: str, types: tuple[str, ...]) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if not _is_int(value) or value < 1:
            self.report(
                _("{field}: {key} must be a whole number of at least 1, not {value}.").format(
                    field=label, key=key, value=repr(value)
                )
            )
            return None
        if raw.get("type") in FIELD_TYPES and raw.get("type") not in types:
            self.report(
                _("{field}: {key} applies to {types} fields only.").format(
                    field=label, key=key, types=" and ".join(types)
                )
            )
            return None
        return value

    def allowed(self, label: str, value: object, ftype: str) -> tuple[str, ...]:
        if value is None:
            return ()
        item_type = LIST_TYPES.get(ftype, ftype)
        if item_type not in ("String", "Number"):
            self.report(
                _("{field}: allowed applies to String, Number and List fields only.").format(
                    field=label
                )
            )
            return ()
        if not isinstance(value, list) or not value:
            self.report(
                _("{field}: allowed must be a non-empty list of values.").format(field=label)
            )
            return ()
        out: list[str] = []
        for v in value:
            if item_type == "Number":
                if _is_int(v) or (isinstance(v, str) and re.fullmatch(r"-?\d{1,19}", v.strip())):
                    out.append(str(int(v)))
                    continue
                self.report(
                    _("{field}: allowed value {value} is not a whole number.").format(
                        field=label, value=repr(v)
                    )
                )
            elif isinstance(v, str) and v.strip():
                out.append(v.strip())
            else:
                self.report(
                    _("{field}: allowed value {value} is not a non-empty string.").format(
                        field=label, value=repr(v)
                    )
                )
        return tuple(dict.fromkeys(out))
