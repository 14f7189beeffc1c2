"""A message when a command ends (``--notify URL``): group robots and plain JSON webhooks.

The receiver follows the URL's host (``--notify-format`` overrides it): a DingTalk custom robot
(``oapi.dingtalk.com``), a Feishu/Lark bot (``open.feishu.cn``, ``open.larksuite.com``), a WeCom
group robot (``qyapi.weixin.qq.com``), else a generic webhook that gets the ``--summary-json``
document. The robots get a short markdown text: the inputs, their counts per status, the top
sub_codes with an example row, the exit code and what it means, and where each workbook is. With
``TOP_NOTIFY_SECRET`` the DingTalk and Feishu bodies are signed as each vendor documents
(``../shared/reference/notify.md``).

A notification never changes the exit code and never holds the run up for long: one attempt,
``TIMEOUT_S`` at most, and a receiver that is down or answers an error is one warning line. The
message holds counts, codes and row numbers, never a secret, a session or a row's data; the
webhook URL is a credential too (its token), so warnings name only its host.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import aiohttp

from importer.exits import ExitCode
from importer.i18n import _, pgettext
from importer.summary import FileSummary, summary_document

WHEN = ("always", "failure")
TIMEOUT_S = 5.0
_TOP_CODES = 5


class Receiver:
    """One kind of receiver: the hosts it is known by, the body it reads (signed with
    ``TOP_NOTIFY_SECRET`` where the vendor signs), and how its answer says it refused.
    ``RECEIVERS`` is the one table: ``FORMATS``, the config check and the CLI's choices
    derive from it."""

    name = ""
    hosts: tuple[str, ...] = ()
    code_field = "errcode"  # where a JSON answer says whether it took the message

    def request(
        self, url: str, title: str, text: str, code: int, secret: str | None, now: float
    ) -> tuple[str, dict]:
        """(the URL to post to, the JSON body) of the robot message ``title``/``text``."""
        raise NotImplementedError

    def refused(self, data: dict) -> str | None:
        """Why a JSON answer is a refusal (None: it took the message)."""
        code = data.get(self.code_field, 0)
        if code in (0, "0"):
            return None
        said = data.get("msg") or data.get("errmsg") or ""
        return f"{self.code_field} {_printable(str(code))}: {_printable(str(said))}".rstrip(": ")


class _DingTalk(Receiver):
    name, hosts = "dingtalk", ("oapi.dingtalk.com",)

    def request(self, url, title, text, code, secret, now):
        body: dict = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        if secret:
            stamp = str(int(now * 1000))
            sign = _hmac(secret.encode(), f"{stamp}\n{secret}".encode())
            url += f"{'&' if '?' in url else '?'}timestamp={stamp}&sign={quote(sign, safe='')}"
        return url, body


class _Feishu(Receiver):
    name, hosts = "feishu", ("open.feishu.cn", "open.larksuite.com")
    code_field = "code"

    def request(self, url, title, text, code, secret, now):
        body = {"msg_type": "interactive", "card": _feishu_card(title, text, code)}
        if secret:
            stamp = str(int(now))
            body.update(timestamp=stamp, sign=_hmac(f"{stamp}\n{secret}".encode(), b""))
        return url, body


class _WeCom(Receiver):
    name, hosts = "wecom", ("qyapi.weixin.qq.com",)

    def request(self, url, title, text, code, secret, now):
        return url, {"msgtype": "markdown", "markdown": {"content": text}}


class _Json(Receiver):
    """Any other webhook: the ``--summary-json`` document; any 2xx answer took it."""

    name = "json"


RECEIVERS: dict[str, Receiver] = {r.name: r for r in (_DingTalk(), _Feishu(), _WeCom(), _Json())}
FORMATS = tuple(RECEIVERS)
_BY_HOST = {host: r.name for r in RECEIVERS.values() for host in r.hosts}


def receiver(url: str, override: str | None = None) -> str:
    """The format a URL's receiver reads: ``--notify-format``, else by its host."""
    return override or _BY_HOST.get((urlsplit(url).hostname or "").lower(), "json")


def where(url: str) -> str:
    """The URL as messages may show it: scheme and host only (the path holds the token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def message(
    command: str, summaries: Sequence[FileSummary], code: int, error: str = ""
) -> tuple[str, str]:
    """(title, markdown text) of a command's end, for the robots; ``error``: the sentence of
    the error that stopped it before any input (a missing credential, an unreadable spec)."""
    exit_code = ExitCode(code)
    # in the command's language (a group chat reads it); the command, the sub_codes and the
    # stop reason's word stay as the machine says them
    title = _("top-import {command}: exit {code}").format(command=command, code=code)
    lines = [f"### {title}", f"{exit_code.meaning}", ""]
    for summary in summaries:
        counts = pgettext("list", ", ").join(
            _("{count} {status}").format(count=f"{n:,}", status=pgettext("status", status.value))
            for status, n in summary.counts.most_common()
        )
        lines.append(f"- **{summary.input.name}**: {counts or _('no rows')}")
        for sub_code, n in summary.sub_codes.most_common(_TOP_CODES):
            example = summary.sub_code_rows.get(sub_code)
            seen = _(" (e.g. row {row})").format(row=example) if example else ""
            lines.append(f"  - {sub_code} ×{n:,}{seen}")
        if summary.stop_reason.value and summary.stop_reason.value != "interrupted":
            lines.append("  - " + _("stopped: {why}").format(why=summary.stop_reason.value))
        if summary.workbook is not None:
            lines.append("  - " + _("workbook: {path}").format(path=summary.workbook))
    if error:
        lines.append("- " + _("stopped: {why}").format(why=_printable(error, 300)))
    elif not summaries:
        lines.append("- " + _("no input to send"))
    return title, "\n".join(lines)


def request(
    url: str,
    kind: str,
    command: str,
    summaries: Sequence[FileSummary],
    code: int,
    secret: str | None = None,
    now: float | None = None,
    error: str = "",
) -> tuple[str, dict]:
    """(the URL to post to, the JSON body) for one receiver; signed when ``secret`` is set."""
    if kind == "json":
        return url, {**summary_document(summaries, code), **({"error": error} if error else {})}
    title, text = message(command, summaries, code, error)
    now = time.time() if now is None else now
    return RECEIVERS[kind].request(url, title, text, code, secret, now)


def _feishu_card(title: str, text: str, code: int) -> dict:
    """Feishu/Lark renders markdown only inside a message card (a ``text`` message shows ``###``
    and ``**`` raw): the title in the card's header, green for exit 0 and red otherwise, the
    rest as ``lark_md``, which has no headings (the first line, the title, goes)."""
    body = text.split("\n", 1)[1] if text.startswith("### ") else text
    return {
        "config": {"wide_screen_mode": True},
        "header": {
            "title": {"tag": "plain_text", "content": title},
            "template": "green" if code == ExitCode.OK else "red",
        },
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": body.strip()}}],
    }


async def _read(answer: aiohttp.ClientResponse, limit: int = 65536) -> bytes:
    """The answer's body, up to ``limit`` bytes, however it is chunked."""
    body = b""
    while len(body) < limit:
        chunk = await answer.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def delivery_failure(kind: str, status: int, answer: bytes) -> str | None:
    """Why a receiver's answer is a failure (None: it took the message)."""
    if status >= 300:
        return f"HTTP {status}"
    if kind == "json":
        return None
    try:
        data = json.loads(answer)
    except ValueError:
        return _("an answer that is not JSON")
    if not isinstance(data, dict):
        return _("an answer that is not a JSON object")
    return RECEIVERS[kind].refused(data)


def _printable(text: str, limit: int = 120) -> str:
    """A receiver's words on one short line: no control character, no escape sequence."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure(exc: BaseException) -> str:
    """What went wrong, without the exception's own text: aiohttp's messages quote the URL
    (the token, a signature) in forms no redaction can follow, so only the kind is said."""
    if isinstance(exc, asyncio.TimeoutError):
        return _("no answer within {seconds} s").format(seconds=f"{TIMEOUT_S:g}")
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ClientResponseError):
        return _("an answer that is not valid HTTP ({kind})").format(kind=kind)
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        return _("cannot connect ({kind})").format(kind=kind)
    return _("the URL or the request failed ({kind})").format(kind=kind)


async def send(
    urls: Sequence[str],
    override: str | None,
    command: str,
    summaries: Sequence[FileSummary],
    code: int,
    secret: str | None,
    error: str = "",
) -> list[str]:
    """Post the message to every URL at once; the warnings (one per receiver that failed)."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        results = await asyncio.gather(
            *(
                _post(
                    session, url, receiver(url, override), command, summaries, code, secret, error
                )
                for url in urls
            )
        )
    return [warning for warning in results if warning]


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    kind: str,
    command: str,
    summaries: Sequence[FileSummary],
    code: int,
    secret: str | None,
    error: str,
) -> str | None:
    try:
        target, body = request(url, kind, command, summaries, code, secret, error=error)
        async with session.post(target, json=body, allow_redirects=False) as answer:
            why = delivery_failure(kind, answer.status, await _read(answer))
    except Exception as exc:  # a notification never changes how the command ends
        why = _failure(exc)
    if why is None:
        return None
    failed = _("the {kind} notification to {where} was not delivered ({why})")
    return _("warning: {warning}").format(
        warning=failed.format(kind=kind, where=where(url), why=why)
    )


__all__ = [
    "FORMATS",
    "RECEIVERS",
    "WHEN",
    "Receiver",
    "delivery_failure",
    "message",
    "receiver",
    "request",
    "send",
    "where",
]
