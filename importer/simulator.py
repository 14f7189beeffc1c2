"""The TOP gateway as an aiohttp.web app: the fake that tests, `simulate` and `run --simulate` use.

It speaks ``POST /router/rest`` for every API spec it is given (default: the built-in ones) and
checks a call in the platform's order, answering each failure with the platform's
``error_response`` envelope (HTTP 200)::

    method (21/22) -> app_key (28/29) -> timestamp (30/31) -> v (32/33/34) -> format (23)
    -> sign (24), sign_method and signature (25) -> session, if the spec needs one (26)
    -> throttle (7) -> object parameter, then every field of the spec (40/41) -> bad tenant (50)
    -> faults: drop, HTTP 502, isp (15) -> ACCEPT -> lost response, an HTML 200, a huge body,
    or the success envelope

The checks come from the spec: the fields, where they sit (a key of the object parameter's
JSON, or a flat parameter), their types, ``required``, ``max_length``, ``allowed`` and
``max_items``. One test knob knows a field by name: ``bad_tenants`` answers code 50 for a
Number field called ``tenant_id``, in any spec that has one.

Inside the object a Boolean is a JSON boolean, a Date the text ``yyyy-MM-dd HH:mm:ss`` and a
List a JSON array; as a flat parameter a Boolean is ``true``/``false``, a Date the same text
and a List comma-separated text. A missing required field is code 40
``isv.missing-parameter:<field>``, a value that breaks a rule code 41
``isv.invalid-parameter:<field>``.

Parameters come from the query string and the form body, merged (the body wins on a clash).
Leniencies, where the real gateway is unknown or does more: an absent ``format`` is taken as
json (the platform would answer xml), an absent ``sign_method`` as md5, a String field given as
a JSON number is accepted (the platform's JSON binder stringifies it), as is a Number given as
digit text, parameters and JSON keys the spec does not know are ignored, and a throttle rejects
only the calls beyond ``qps`` in that clock second (the announced ban is not enforced afterwards).

Every accepted payload is kept in a Counter (normalised JSON of the object, and of the flat
parameters when the spec has some) to count duplicate accepts, so
memory grows with accepted calls: fine for a test tool. The access log is off: query strings
carry signatures and session keys.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from importer.protocol import GMT8, TIMESTAMP_FORMAT
from importer.signing import SIGN_METHODS, sign
from importer.spec import ApiSpec, FieldSpec, builtin_methods, load_spec

DEFAULT_APP_KEY = "12345678"
DEFAULT_SECRET = "sim-secret-0123456789"  # printed at start: not a real secret
PER_SECOND_KEPT = 600  # seconds of per-second call counts kept for /_sim/stats

_INT64 = (-(2**63), 2**63 - 1)
_DIGITS = re.compile(r"^-?\d+$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_BAD_GATEWAY_HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    "</center><hr><center>Tengine</center></body></html>"
)


@dataclass(frozen=True)
class SimulatorSettings:
    app_key: str = DEFAULT_APP_KEY
    secret: str = DEFAULT_SECRET
    qps: int | None = None  # per-app-key calls allowed per clock second; None = unlimited
    ban_seconds: int = 1  # the ban announced on a throttle
    throttle_all: bool = False  # every call that passes the auth checks gets code 7
    latency_ms: float = 0.0  # added to every answer
    jitter_ms: float = 0.0  # + uniform(0, jitter_ms)
    isp_rate: float = 0.0  # share answered code 15 isp.service-unavailable (not accepted)
    http502_rate: float = 0.0  # share answered HTTP 502 with an HTML body (not accepted)
    drop_rate: float = 0.0  # share whose connection is closed without an answer (not accepted)
    lost_response_rate: float = 0.0  # share accepted, then closed without an answer
    garbled_rate: float = 0.0  # share accepted, then answered HTTP 200 with an HTML page
    huge_rate: float = 0.0  # share accepted, then answered with a body of huge_body_bytes
    huge_body_bytes: int = 8 << 20
    bad_tenants: frozenset[int] = frozenset()  # tenant_id values answered code 50 (not accepted)
    decline_rate: float = 0.0  # share declined as a business error, isv.* (not accepted, final)
    max_skew_s: float = 600.0
    seed: int | None = None  # seeds the fault injection


class _Reject(Exception):
    """A call answered with ``error_response`` (raised inside the checks, never escapes)."""

    def __init__(self, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


class _Stats:
    def __init__(self) -> None:
        self.calls = 0
        self.rejected: Counter[int] = Counter()
        self.http_502 = 0
        self.dropped = 0
        self.lost_responses = 0
        self.garbled = 0
        self.huge = 0
        self.payloads: Counter[str] = Counter()
        self.per_second: Counter[int] = Counter()
        self.max_calls_in_a_second = 0

    def count_in_second(self, second: int) -> int:
        """Count one call against ``second``; return the calls counted in it so far."""
        if second not in self.per_second:
            for old in [s for s in self.per_second if s <= second - PER_SECOND_KEPT]:
                del self.per_second[old]
        self.per_second[second] += 1
        n = self.per_second[second]
        self.max_calls_in_a_second = max(self.max_calls_in_a_second, n)
        return n

    def as_dict(self) -> dict:
        accepts = self.payloads.values()
        return {
            "calls": self.calls,
            "accepted": sum(accepts),
            "accepted_payloads": len(self.payloads),
            "duplicate_accepts": sum(1 for n in accepts if n > 1),
            "max_accepts_per_payload": max(accepts, default=0),
            "rejected": {str(code): n for code, n in sorted(self.rejected.items())},
            "http_502": self.http_502,
            "dropped": self.dropped,
            "lost_responses": self.lost_responses,
            "garbled": self.garbled,
            "huge": self.huge,
            "per_second": {str(s): n for s, n in sorted(self.per_second.items())},
            "max_calls_in_a_second": self.max_calls_in_a_second,
        }


class _Platform:
    """The simulator's state and its decisions; the handlers below only do the I/O."""

    def __init__(
        self, settings: SimulatorSettings, specs: Iterable[ApiSpec], clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.specs = {spec.method: spec for spec in specs}
        self.clock = clock
        self.rng = random.Random(settings.seed)
        self.stats = _Stats()

    def __repr__(self) -> str:
        s = self.stats
        accepted = sum(s.payloads.values())
        return f"<simulator calls={s.calls} accepted={accepted} qps={self.settings.qps}>"

    def check(self, params: dict[str, str]) -> tuple[ApiSpec, str]:
        """Every check a call must pass to be accepted; returns (spec, normalised payload)."""
        spec = self._check_auth(params)
        self._throttle()
        return spec, self._check_payload(spec, params)

    def _check_auth(self, params: dict[str, str]) -> ApiSpec:
        method = params.get("method", "").strip()
        if not method:
            raise _Reject(21, "Missing method")
        spec = self.specs.get(method)
        if spec is None:
            raise _Reject(22, f"Invalid method {method}")
        app_key = params.get("app_key", "").strip()
        if not app_key:
            raise _Reject(28, "Missing app key")
        if app_key != self.settings.app_key:
            raise _Reject(29, "Invalid app key")
        self._check_timestamp(params.get("timestamp", "").strip())
        version = params.get("v", "").strip()
        if not version:
            raise _Reject(32, "Missing version")
        if not _VERSION.match(version):
            raise _Reject(33, "Invalid version")
        if version != "2.0":
            raise _Reject(34, "Unsupported version")
        if params.get("format", "json").strip().lower() != "json":
            raise _Reject(23, "Invalid format", "", "the simulator answers json only")
        signature = params.get("sign", "").strip()
        if not signature:
            raise _Reject(24, "Missing signature")
        sign_method = params.get("sign_method", "md5").strip()
        if sign_method not in SIGN_METHODS:
            raise _Reject(
                25, f"Invalid signature method {sign_method}; use md5, hmac or hmac-sha256"
            )
        if signature.upper() != sign(params, self.settings.secret, sign_method):
            raise _Reject(25, "Invalid signature")
        if spec.needs_session and not params.get("session", "").strip():
            raise _Reject(26, "Missing session")
        return spec

    def _check_timestamp(self, text: str) -> None:
        if not text:
            raise _Reject(30, "Missing timestamp")
        try:
            if text.isdigit():  # epoch milliseconds, as the old official Python SDK sends
                sent = int(text) / 1000
            else:
                sent = datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=GMT8).timestamp()
        except (ValueError, OverflowError):
            raise _Reject(
                31, f"Invalid timestamp {text!r}: use yyyy-MM-dd HH:mm:ss (GMT+8) or epoch ms"
            ) from None
        now = self.clock()
        if abs(now - sent) > self.settings.max_skew_s:
            raise _Reject(
                31,
                f"Invalid timestamp {text}: {now - sent:+.0f} s from the gateway's time "
                f"{_gmt8(now)} (GMT+8); at most {self.settings.max_skew_s:.0f} s of skew allowed",
            )

    def _throttle(self) -> None:
        calls = self.stats.count_in_second(int(self.clock()))
        qps = self.settings.qps
        if self.settings.throttle_all or (qps is not None and calls > qps):
            raise _Reject(
                7,
                "App Call Limited",
                "accesscontrol.limited-by-app-access-count",
                f"This ban will last for {self.settings.ban_seconds} more seconds",
            )

    def _check_payload(self, spec: ApiSpec, params: dict[str, str]) -> str:
        obj: dict = {}
        if spec.object_param is not None:
            obj = _object_param(spec.object_param, params.get(spec.object_param, ""))
        flat: dict[str, str] = {}
        for field in spec.fields:
            value = params.get(field.name) if field.is_flat else obj.get(field.name)
            if value is None or (isinstance(value, str) and not value.strip()):
                if field.required:
                    raise _Reject(
                        40,
                        "Missing required arguments",
                        f"isv.missing-parameter:{field.name}",
                        f"{field.name} 不能为空",
                    )
                continue
            problem = _field_problem(field, value)
            if problem:
                raise _Reject(
                    41,
                    "Invalid arguments",
                    f"isv.invalid-parameter:{field.name}",
                    f"{field.name} {problem}: {value!r}",
                )
            if field.is_flat:
                flat[field.name] = str(value)
        tenant = next(
            (
                (flat.get(f.name) if f.is_flat else obj.get(f.name))
                for f in spec.fields
                if f.name == "tenant_id" and f.type == "Number"
            ),
            None,
        )
        if tenant is not None and int(tenant) in self.settings.bad_tenants:
            raise _Reject(50, "Remote service error", "isv.invalid-parameter", "非法参数")
        if self.chance(self.settings.decline_rate):
            raise _Reject(50, "Remote service error", "isv.invalid-parameter", "非法参数")
        accepted: object = {"object": obj, "flat": flat} if spec.flat_fields else obj
        return json.dumps(accepted, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def delay(self) -> float:
        s = self.settings
        jitter = self.rng.uniform(0, s.jitter_ms) if s.jitter_ms > 0 else 0.0
        return (s.latency_ms + jitter) / 1000

    def error(self, reject: _Reject) -> dict:
        self.stats.rejected[reject.code] += 1
        body: dict[str, object] = {"code": reject.code, "msg": reject.msg}
        if reject.sub_code:
            body["sub_code"] = reject.sub_code
        if reject.sub_msg:
            body["sub_msg"] = reject.sub_msg
        body["request_id"] = _request_id()
        return {"error_response": body}

    def success(self, spec: ApiSpec) -> dict:
        result = {"system_time": _gmt8(self.clock()), "code": "200", "success": True}
        return {spec.response_envelope: {"result": result, "request_id": _request_id()}}


def _object_param(name: str, text: str) -> dict:
    if not text.strip():
        raise _Reject(
            40, f"Missing required arguments:{name}", "isv.missing-parameter", f"{name} 不能为空"
        )
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise _Reject(
            41, f"Invalid arguments:{name}", "isv.invalid-parameter", f"{name} 不是JSON对象"
        )
    return obj


def _field_problem(field: FieldSpec, value: object) -> str:
    """Why ``value`` (a JSON value, or a flat parameter's text) breaks the field's rules, or ""."""
    if field.is_list:
        if field.is_flat:
            items: object = [item.strip() for item in str(value).split(",")]
        else:
            items = value
        if not isinstance(items, list) or not all(v is not None and str(v).strip() for v in items):
            return f"必须是{field.type}"
        if field.max_items is not None and len(items) > field.max_items:
            return f"最多{field.max_items}项"
    else:
        items = [value]
    for item in items:
        if isinstance(item, str):
            item = item.strip()
        if not _type_ok(field.item_type, item, field.is_flat):
            return f"必须是{field.type}"
        text = str(int(item)) if field.item_type == "Number" else str(item)
        if field.max_length is not None and len(text) > field.max_length:
            return f"长度不能超过{field.max_length}"
        if field.allowed and text not in field.allowed:
            return "不在允许的取值中: " + ", ".join(field.allowed)
    return ""


def _type_ok(field_type: str, value: object, flat: bool = False) -> bool:
    if field_type == "Boolean":
        if flat or isinstance(value, str):
            return isinstance(value, str) and value.lower() in ("true", "false")
        return isinstance(value, bool)
    if field_type == "Date":
        try:
            datetime.strptime(value, TIMESTAMP_FORMAT)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True
    if field_type == "String":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    # Number: a Java Long. Whole JSON numbers and digit strings bind; fractions and text do not.
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        if not value.is_integer():
            return False
        value = int(value)
    elif isinstance(value, str) and _DIGITS.match(value.strip()):
        if len(value.strip().lstrip("-").lstrip("0")) > 19:  # int() refuses > 4300 digits
            return False
        value = int(value)
    return isinstance(value, int) and _INT64[0] <= value <= _INT64[1]


def _gmt8(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, GMT8).strftime(TIMESTAMP_FORMAT)


def _request_id() -> str:
    return secrets.token_hex(7)


_GATEWAY = web.AppKey("gateway", _Platform)


async def _params(request: web.Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in request.query.items():
        params.setdefault(key, value)
    form = await request.post()  # empty unless the body is a form
    body: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(value, str):
            body.setdefault(key, value)
    params.update(body)
    return params


def _json(doc: dict) -> web.Response:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=text, content_type="application/json", charset="utf-8")


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection without an answer: the client sees a disconnect."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)  # never reaches the client


async def _router_rest(request: web.Request) -> web.StreamResponse:
    gw = request.app[_GATEWAY]
    gw.stats.calls += 1
    try:
        params = await _params(request)
    except ValueError:  # an undecodable form body
        return web.Response(status=400, text="unreadable form body\n")
    settings = gw.settings
    # Decide synchronously (no await between the throttle count and the verdict), then wait.
    try:
        spec, payload = gw.check(params)
    except _Reject as reject:
        answer = gw.error(reject)
        await asyncio.sleep(gw.delay())
        return _json(answer)
    if gw.chance(settings.drop_rate):
        gw.stats.dropped += 1
        await asyncio.sleep(gw.delay())
        return _hang_up(request)
    if gw.chance(settings.http502_rate):
        gw.stats.http_502 += 1
        await asyncio.sleep(gw.delay())
        return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
    if gw.chance(settings.isp_rate):
        answer = gw.error(
            _Reject(15, "Remote service error", "isp.service-unavailable", "服务不可用")
        )
        await asyncio.sleep(gw.delay())
        return _json(answer)
    gw.stats.payloads[payload] += 1  # accepted: from here on, every answer is one that
    # the client cannot read, although the platform acted
    lost = gw.chance(settings.lost_response_rate)
    garbled = not lost and gw.chance(settings.garbled_rate)
    huge = not lost and not garbled and gw.chance(settings.huge_rate)
    answer = gw.success(spec)
    await asyncio.sleep(gw.delay())
    if lost:
        gw.stats.lost_responses += 1
        return _hang_up(request)
    if garbled:
        gw.stats.garbled += 1
        return web.Response(status=200, text=_BAD_GATEWAY_HTML, content_type="text/html")
    if huge:
        gw.stats.huge += 1
        return await _stream_huge(request, settings.huge_body_bytes)
    return _json(answer)


async def _stream_huge(request: web.Request, size: int) -> web.StreamResponse:
    """A body of ``size`` bytes, streamed in blocks (what a broken proxy may send)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    block = b" " * (64 << 10)
    try:
        for _ in range(size // len(block)):
            await response.write(block)
    except (ConnectionError, RuntimeError):  # the client stopped reading, as it should
        pass
    return response


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[_GATEWAY].stats.as_dict())


async def _reset(request: web.Request) -> web.Response:
    gw = request.app[_GATEWAY]
    gw.stats = _Stats()
    return _json(gw.stats.as_dict())


def builtin_specs() -> list[ApiSpec]:
    return [load_spec(method) for method in builtin_methods()]


def make_app(
    settings: SimulatorSettings,
    *,
    specs: Iterable[ApiSpec] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The simulator app. ``specs`` defaults to the built-in ones; ``clock`` is epoch seconds."""
    if specs is None:
        specs = builtin_specs()
    app = web.Application()
    app[_GATEWAY] = _Platform(settings, specs, clock)
    app.router.add_post("/router/rest", _router_rest)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/reset", _reset)
    return app


class Simulator:
    """The simulator on a loopback port for the length of an ``async with`` (port 0: a free one)."""

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        specs: Iterable[ApiSpec] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or SimulatorSettings()
        self._app = make_app(self.settings, specs=specs, clock=clock)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"<Simulator {self._url or 'not started'} {self._app[_GATEWAY]!r}>"

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not running; use it in `async with`")
        return self._url

    def stats(self) -> dict:
        return self._app[_GATEWAY].stats.as_dict()

    def accepted(self) -> dict[str, int]:
        """Every accepted payload (normalised JSON) and how often it was accepted."""
        return dict(self._app[_GATEWAY].stats.payloads)

    async def __aenter__(self) -> Simulator:
        self._runner, self._url = await _start(self._app, self._host, self._port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._url = None


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    return runner, f"http://{bound_host}:{bound_port}/router/rest"


async def serve_forever(
    settings: SimulatorSettings,
    host: str = "127.0.0.1",
    port: int = 8787,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled (`top-import simulate`); ``on_ready(url)`` once listening."""
    runner, url = await _start(make_app(settings), host, port)
    try:
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
