"""The platform's request signature (reference §2). Pure: no clock, no I/O.

Every parameter that is sent except ``sign`` takes part, sorted by key in byte order and
joined as ``key1value1key2value2`` with the raw UTF-8 values; empty and whitespace-only values
are dropped (the Java SDK sends none of them either). The digest is upper-case hex.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGN_METHODS = ("md5", "hmac", "hmac-sha256")


def signing_string(params: Mapping[str, str]) -> bytes:
    """The bytes that are signed: sorted ``keyvalue`` pairs, blanks and ``sign`` left out."""
    pairs = sorted(
        (k.encode("utf-8"), str(v).encode("utf-8"))
        for k, v in params.items()
        if k != "sign" and v is not None and str(v).strip()
    )
    return b"".join(k + v for k, v in pairs)


def sign(params: Mapping[str, str], secret: str, method: str) -> str:
    """Upper-case hex signature of ``params`` with ``secret``; ``method`` is one of SIGN_METHODS."""
    message = signing_string(params)
    key = secret.encode("utf-8")
    if method == "md5":
        digest = hashlib.md5(key + message + key).hexdigest()
    elif method == "hmac":
        digest = hmac.new(key, message, hashlib.md5).hexdigest()
    elif method == "hmac-sha256":
        digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    else:
        raise ValueError(f"unknown sign method {method!r}; use one of {', '.join(SIGN_METHODS)}")
    return digest.upper()
