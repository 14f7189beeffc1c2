"""The HTTP side: one aiohttp session, and the one place aiohttp errors become ``Reply`` values.

``Gateway.post`` never raises for a network problem: a timeout, a refused or reset connection, a
truncated body all come back as a transient ``Reply`` whose text is safe to show. The query
string holds ``sign`` (and ``session``), so no error text ever includes the request URL.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from yarl import URL

from importer.protocol import FORM_CONTENT_TYPE, Reply, SignedRequest, classify, transport_failure
from importer.specs import ApiSpec

_URL_QUERY = re.compile(r"\?[^\s'\"<>)]*")


class Gateway:
    """``async with Gateway(url, concurrency=8, timeout=15) as gw: reply = await gw.post(...)``."""

    def __init__(self, url: str, *, concurrency: int, timeout: float) -> None:
        self.url = url
        self.concurrency = concurrency
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        state = "open" if self._session and not self._session.closed else "closed"
        return (
            f"<Gateway {self.url} concurrency={self.concurrency} timeout={self.timeout:g}s {state}>"
        )

    async def __aenter__(self) -> Gateway:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency, limit_per_host=self.concurrency, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Content-Type": FORM_CONTENT_TYPE, "Accept-Encoding": "gzip, deflate"},
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
            async with self._session.post(url, data=request.body) as response:
                body = await response.read()
                status = response.status
        except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError is one too
            return transport_failure(f"timeout after {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return transport_failure(f"connection error: {self._safe_text(exc, request)}")
        return classify(status, body, spec)

    def _safe_text(self, exc: BaseException, request: SignedRequest) -> str:
        """The exception's text without any URL query (which holds sign and session)."""
        text = str(exc).replace(request.query, "")
        text = _URL_QUERY.sub("", text).strip()
        name = type(exc).__name__
        return f"{name}: {text}" if text else name
