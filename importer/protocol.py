"""The TOP wire protocol, pure: build a signed request, and read a response into a ``Reply``.

Requests follow the official SDKs: system parameters in the query string, the business
parameters (the spec's object parameter as compact JSON, and its flat parameters as text) as a
form body, all signed together (reference §1, §3). Responses are classified per the design's
table (reference §5) and the spec's success rule, so the dispatcher only has to act on
``Reply.kind``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from urllib.parse import quote, urlencode

from importer.errors import UsageError
from importer.i18n import N_, _
from importer.rows import RequestRecord
from importer.signing import sign
from importer.spec import ApiSpec

# The platform's clock is Beijing time; a fixed offset (China has no DST) needs no tz database.
# The hosts plain HTTP may go to (a simulator on this machine): anything else gets https only,
# the session key and a robot's token never cross a network in clear.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
GMT8 = timezone(timedelta(hours=8), "GMT+8")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"

THROTTLE_CODES = frozenset({"4", "5", "6", "7", "8"})
FATAL_CODES = frozenset({"9", "11", "12", "13", *(str(c) for c in range(21, 35))})
_BAN = re.compile(r"ban will last for (\d+(?:\.\d+)?) more seconds?", re.IGNORECASE)


def format_timestamp(now: datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in GMT+8, whatever zone ``now`` (an aware datetime) is in."""
    return now.astimezone(GMT8).strftime(TIMESTAMP_FORMAT)


@dataclass(frozen=True)
class Credentials:
    app_key: str
    secret: str = field(repr=False)
    session: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    query: str  # url-encoded system parameters, sign included
    body: bytes  # url-encoded form with the business parameters


class RequestBuilder:
    """Signs one API's calls with one set of credentials; ``build`` is called once per attempt.

    A spec with ``needs_session`` and credentials without a session is a ``UsageError`` here,
    before any row is read or sent.
    """

    def __init__(
        self,
        spec: ApiSpec,
        credentials: Credentials,
        sign_method: str = "hmac-sha256",
        partner_id: str | None = None,
    ) -> None:
        if spec.needs_session and not (credentials.session or "").strip():
            raise UsageError(
                _(
                    "{method} needs a user session: set TOP_SESSION (or session in importer.toml) "
                    "to the session key the user authorised."
                ).format(method=spec.method)
            )
        for name, value in (
            ("TOP_APP_KEY", credentials.app_key),
            ("TOP_APP_SECRET", credentials.secret),
            ("TOP_SESSION", credentials.session or ""),
        ):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes from the environment that are not text
                raise UsageError(
                    _(
                        "{variable} holds bytes that are not UTF-8 text; set it again (its value "
                        "is not shown)."
                    ).format(variable=name)
                ) from None
        self.spec = spec
        self._secret = credentials.secret
        self._sign_method = sign_method
        self._static = {
            "method": spec.method,
            "app_key": credentials.app_key,
            "format": "json",
            "v": "2.0",
            "sign_method": sign_method,
        }
        if credentials.session:
            self._static["session"] = credentials.session
        if partner_id:
            self._static["partner_id"] = partner_id

    def __repr__(self) -> str:
        return f"RequestBuilder(method={self.spec.method!r}, sign_method={self._sign_method!r})"

    def business(self, payload: str | RequestRecord) -> dict[str, str]:
        """The business parameters of a record (or of an object parameter's JSON alone)."""
        if isinstance(payload, RequestRecord):
            payload_json, flat = payload.payload_json, payload.flat
        else:
            payload_json, flat = payload, ()
        business: dict[str, str] = {}
        if self.spec.object_param is not None:
            business[self.spec.object_param] = payload_json
        # A blank flat value is neither signed nor sent (the validator leaves empties out).
        business.update((k, v) for k, v in flat if v.strip())
        return business

    def params(self, payload: str | RequestRecord, now: datetime) -> dict[str, str]:
        """Every signed parameter, ``sign`` included (system and business together)."""
        system = dict(self._static, timestamp=format_timestamp(now))
        # A blank value is left out of the signature (reference §2), so it must not be sent
        # either: the gateway would sign it and the signatures would differ.
        system = {k: v for k, v in system.items() if v.strip()}
        business = self.business(payload)
        system["sign"] = sign({**system, **business}, self._secret, self._sign_method)
        return {**system, **business}

    def build(self, payload: str | RequestRecord, now: datetime) -> SignedRequest:
        """A signed request for a ``RequestRecord`` (object JSON and flat parameters), or for an
        object parameter's JSON alone."""
        business = self.business(payload)
        params = self.params(payload, now)
        for name in business:
            del params[name]
        query = urlencode(params, quote_via=quote)
        body = "&".join(
            quote(name, safe="") + "=" + quote(value, safe="") for name, value in business.items()
        ).encode("ascii")
        return SignedRequest(query=query, body=body)


class AnswerKind(str, Enum):
    """What a reply to one call is (what the run does with it: ``steps.next_step``)."""

    ACCEPTED = "accepted"  # the platform did what the row asked
    DECLINED = "declined"  # the API's envelope said no (result.success false)
    REJECTED = "rejected"  # an error answer for this row (isv.*, a bad parameter): no retry
    THROTTLED = "throttled"  # over the quota: wait the ban (all workers), then retry
    TRANSIENT = "transient"  # not sent, or answered with a passing error: retry with backoff
    UNCERTAIN = "uncertain"  # sent, but no readable answer: the platform may have acted
    FATAL = "fatal"  # every further call would fail the same way: stop the run


@dataclass(frozen=True, slots=True)
class Reply:
    kind: AnswerKind
    code: str = ""
    msg: str = ""
    sub_code: str = ""
    sub_msg: str = ""
    request_id: str = ""
    system_time: str = ""
    ban_seconds: float = 0.0
    error: str = ""  # transport-level description, when there was no platform answer
    sent: bool = True  # False: the request never left the machine (no connection)


def transport_failure(description: str) -> Reply:
    """A call that certainly did not act: nothing left the machine, or the gateway said it
    failed before the API (HTTP 502, 503, 429). Safe to retry."""
    return Reply(AnswerKind.TRANSIENT, error=description)


def not_sent(description: str) -> Reply:
    """A call that never left the machine: refused, DNS, TLS, a connect timeout."""
    return Reply(AnswerKind.TRANSIENT, error=description, sent=False)


def uncertain(description: str) -> Reply:
    """A call that was sent but got no readable answer: a read timeout, a connection closed
    after the request was written, an HTTP 200 that is not the API's envelope, a body over
    ``MAX_BODY_BYTES``, HTTP 504. The platform may have acted on it, so a retry could act twice:
    it is retried only when the user chose at-least-once (``--resend-unknown``)."""
    return Reply(AnswerKind.UNCERTAIN, error=description)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _dig(obj: object, path: str) -> object:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


# The gateway (or a proxy before it) said the call did not reach the API: retry. Any other
# 5xx (a 500 from the API itself, a 504 gateway timeout) may come after the API acted.
NOT_ACTED_STATUSES = frozenset({429, 502, 503})
MAX_BODY_BYTES = 1 << 20  # the platform's answers are a few hundred bytes


def classify(status: int, body: bytes, spec: ApiSpec) -> Reply:
    """One HTTP answer -> one ``Reply``."""
    if status in NOT_ACTED_STATUSES:
        return transport_failure(N_("HTTP {status} from the gateway").format(status=status))
    if status >= 500:
        return uncertain(
            N_("HTTP {status} from the gateway, after the call was sent").format(status=status)
        )
    if status != 200:
        # A 3xx/4xx from the gateway URL itself (wrong path, a proxy refusing us) repeats for
        # every row: stop rather than fail each row the same way.
        return Reply(
            AnswerKind.FATAL,
            error=N_("HTTP {status} from the gateway; check --gateway / TOP_GATEWAY").format(
                status=status
            ),
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        snippet = body[:60].decode("utf-8", "replace").strip()
        if not snippet:
            return uncertain(N_("unreadable answer (an empty body)"))
        return uncertain(N_("unreadable answer ({snippet})").format(snippet=repr(snippet)))
    if not isinstance(doc, dict):
        return uncertain(N_("unexpected answer: not a JSON object"))
    error = doc.get("error_response")
    if isinstance(error, dict):
        return classify_error(error)
    envelope = doc.get(spec.response_envelope)
    if not isinstance(envelope, dict):
        return uncertain(
            N_("unexpected answer: neither error_response nor {envelope}").format(
                envelope=spec.response_envelope
            )
        )
    # code, msg and system_time sit beside the success flag (result.success -> result).
    parent = spec.success_path.rpartition(".")[0] if spec.success_path else "result"
    result = _dig(envelope, parent) if parent else envelope
    if not isinstance(result, dict):
        result = {}
    common = {
        "code": _text(result.get("code")),
        "msg": _text(result.get("msg") or result.get("message")),
        "request_id": _text(envelope.get("request_id")),
        "system_time": _text(result.get("system_time")),
    }
    if not spec.success_path:  # success = "no_error": the envelope itself is the success
        return Reply(AnswerKind.ACCEPTED, **common)
    success = _dig(envelope, spec.success_path)
    if success is True or (isinstance(success, str) and success.lower() == "true"):
        return Reply(AnswerKind.ACCEPTED, **common)
    return Reply(AnswerKind.DECLINED, **common)


def classify_error(error: dict) -> Reply:
    """An ``error_response`` body -> throttled, transient, fatal or failed (reference §5)."""
    code = _text(error.get("code"))
    sub_code = _text(error.get("sub_code"))
    msg = _text(error.get("msg"))
    sub_msg = _text(error.get("sub_msg"))
    fields = {
        "code": code,
        "msg": msg,
        "sub_code": sub_code,
        "sub_msg": sub_msg,
        "request_id": _text(error.get("request_id")),
    }
    if code in THROTTLE_CODES or sub_code.startswith("accesscontrol."):
        return Reply(AnswerKind.THROTTLED, ban_seconds=ban_seconds(sub_msg or msg), **fields)
    if sub_code.startswith("isp.") or code == "10":
        return Reply(AnswerKind.TRANSIENT, **fields)
    if code in FATAL_CODES:
        return Reply(AnswerKind.FATAL, **fields)
    return Reply(AnswerKind.REJECTED, **fields)


def ban_seconds(text: str) -> float:
    """Seconds from "This ban will last for N more seconds"; 1 when the platform gives none."""
    match = _BAN.search(text or "")
    return float(match.group(1)) if match else 1.0


def platform_stamp(epoch: float) -> str:
    """A moment on the platform's clock, for people: ``2026-11-30 16:05:09 GMT+8``."""
    return datetime.fromtimestamp(epoch, GMT8).strftime("%Y-%m-%d %H:%M:%S GMT+8")


def describe(reply: Reply) -> str:
    """What the platform said, in one line, for messages (never includes credentials)."""
    if not reply.code:
        return reply.error or N_("no answer")
    if reply.msg:
        text = N_("code {code} {msg}").format(code=reply.code, msg=reply.msg)
    else:
        text = N_("code {code}").format(code=reply.code)
    if reply.sub_code:
        text += f" ({reply.sub_code}: {reply.sub_msg})" if reply.sub_msg else f" ({reply.sub_code})"
    return text
