"""The HTTP side: one aiohttp session, and the one place aiohttp errors become ``Reply`` values.

``Gateway.post`` never raises for a network problem. What went wrong decides the kind of reply,
because it decides whether the platform may have acted on the call:

* **not sent** (refused, DNS, TLS, a connect timeout: the request never left the machine) and
  answers that say the API was not reached (HTTP 502/503/429) are transient: safe to retry;
* **uncertain** (the request was written but no readable answer came: a read timeout, a
  connection closed after the write, a body over ``MAX_BODY_BYTES``, an HTTP 200 that is not the
  API's envelope, HTTP 5xx otherwise): the platform may have acted, so a retry may act twice.

Whether the request may have left is told by aiohttp's public exception types: a
``ClientConnectorError`` (refused, DNS, TLS, proxy) and a ``ConnectionTimeoutError`` (the
connect part of the timeout, half of ``--timeout``) come before anything is written; every other
failure may come after. (A trace signal on headers-sent would be exact but cost 5-15 % of the
send rate; ``tests/test_exactly_once.py`` pins the types.) Redirects are never followed (a
redirect would carry the signed query, session included, to another host): a 3xx is a fatal
reply naming the Location.
The query string holds ``sign`` (and ``session``), so no error text includes the request URL.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from importer.i18n import N_
from importer.protocol import (
    FORM_CONTENT_TYPE,
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    AnswerKind,
    Reply,
    SignedRequest,
    classify,
    not_sent,
    uncertain,
)
from importer.spec import ApiSpec

_URL_QUERY = re.compile(r"\?[^\s'\"<>)]*")
# An idle keep-alive connection is closed on our side long before a server, proxy or NAT drops
# it silently: a request written into a dead connection would be an uncertain call.
KEEPALIVE_SECONDS = 10.0


class Gateway:
    """``async with Gateway(url, concurrency=8, timeout=15) as gw: reply = await gw.post(...)``."""

    def __init__(self, url: str, *, concurrency: int, timeout: float) -> None:
        self.url = url
        self.concurrency = concurrency
        self.timeout = timeout
        host = urlsplit(url).hostname or ""
        # HTTPS_PROXY / NO_PROXY as users behind a corporate proxy expect; never for a
        # simulator on this machine.
        self.trust_env = host not in LOOPBACK_HOSTS
        self.proxy = _proxy_for(url) if self.trust_env else ""
        self.where = urlsplit(url).netloc + (f" via proxy {self.proxy}" if self.proxy else "")
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        state = "open" if self._session and not self._session.closed else "closed"
        return (
            f"<Gateway {self.url} concurrency={self.concurrency} timeout={self.timeout:g}s {state}>"
        )

    async def __aenter__(self) -> Gateway:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=self.concurrency,
            ttl_dns_cache=300,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # The connect part ends first, so a timeout while connecting is always a
            # ConnectionTimeoutError (not sent), never the total (which may be after sending).
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.timeout / 2),
            headers={"Content-Type": FORM_CONTENT_TYPE, "Accept-Encoding": "gzip, deflate"},
            trust_env=self.trust_env,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, request: SignedRequest, spec: ApiSpec) -> Reply:
        """POST url?query with the form body; the answer classified, never an exception."""
        if self._session is None:
            raise RuntimeError("Gateway.post outside 'async with Gateway(...)'")
        url = URL(f"{self.url}?{request.query}", encoded=True)
        try:
            async with self._session.post(
                url, data=request.body, allow_redirects=False
            ) as response:
                status = response.status
                if 300 <= status < 400:
                    return _redirect(status, response.headers.get("Location", ""))
                body = await _read_bounded(response)
        except aiohttp.ConnectionTimeoutError:
            # a row's texts are kept in English in the journal (i18n.shown shows them)
            within = f"{self.timeout / 2:g}"
            return not_sent(N_("could not connect within {seconds} s").format(seconds=within))
        except aiohttp.ClientConnectorError as exc:
            text = self._safe_text(exc, request)
            return not_sent(N_("connection error: {why}").format(why=text))
        except asyncio.TimeoutError:  # aiohttp's SocketTimeoutError is one too
            timeout = f"{self.timeout:g}"
            return uncertain(N_("no answer within --timeout {seconds} s").format(seconds=timeout))
        except (aiohttp.ClientError, OSError) as exc:
            text = self._safe_text(exc, request)
            return uncertain(N_("connection lost after the call was sent: {why}").format(why=text))
        if body is None:
            larger = N_("an answer larger than {size} bytes (not read)")
            return uncertain(larger.format(size=f"{MAX_BODY_BYTES:,}"))
        return classify(status, body, spec)

    def _safe_text(self, exc: BaseException, request: SignedRequest) -> str:
        """The exception's text without any URL query (which holds sign and session)."""
        text = str(exc).replace(request.query, "")
        text = _URL_QUERY.sub("", text).strip()
        name = type(exc).__name__
        return f"{name}: {text}" if text else name


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None once it passes ``MAX_BODY_BYTES`` (the rest is never read)."""
    if (response.content_length or 0) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _proxy_for(url: str) -> str:
    """The proxy the environment names for ``url`` (credentials left out), or ""."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return ""
    proxy = urllib.request.getproxies().get(parts.scheme, "")
    if not proxy:
        return ""
    shown = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return f"{shown.scheme}://{shown.hostname}" + (f":{shown.port}" if shown.port else "")


def _redirect(status: int, location: str) -> Reply:
    """A 3xx: never followed. Its target is named without a query (it may echo ours)."""
    target = _URL_QUERY.sub("", location).strip() or "no Location"
    return Reply(
        AnswerKind.FATAL,
        error=N_(
            "HTTP {status} redirect to {target} (not followed: the signed query would go with "
            "it); point --gateway / TOP_GATEWAY at the gateway itself"
        ).format(status=status, target=target),
    )
