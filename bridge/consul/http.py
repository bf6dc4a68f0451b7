"""py-consul's HTTP layer as the bridge needs it: which errors are passing faults and which
are refusals, Consul's rate limiting (429) made visible with its Retry-After, and failures
explained in words an operator acts on.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import ssl
import time
from typing import Any

import aiohttp
import consul
import consul.aio
import consul.exceptions

REJECTIONS = (
    consul.exceptions.BadRequest,
    consul.exceptions.ACLDisabled,
    consul.exceptions.ACLPermissionDenied,
    consul.exceptions.NotFound,
    consul.exceptions.ClientError,
)
MAX_RETRY_AFTER = 30.0  # a Retry-After longer than this is capped: the pass retries later


class RateLimited(Exception):
    """Consul answered 429 Too Many Requests (its rate limiting, 1.15+)."""

    def __init__(self, retry_after: float | None, body: str) -> None:
        super().__init__(f"429 Too Many Requests {body}".strip())
        self.retry_after = retry_after


FAULTS = (aiohttp.ClientError, consul.ConsulException, TimeoutError, OSError, RateLimited)
TLS_FAULTS = (aiohttp.ClientSSLError, ssl.SSLError)


def is_passing_fault(exc: BaseException) -> bool:
    return isinstance(exc, FAULTS) and not isinstance(exc, REJECTIONS)


_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _retry_after(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from a Retry-After header: delay-seconds (what Consul sends) or an
    HTTP-date (RFC 9110 10.2.3), reckoned from `now` (the wall clock, time.time()); a date
    already past is 0. At most MAX_RETRY_AFTER. None when there is none or it cannot be
    read: then the client backs off as usual."""
    text = (header or "").strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" or the asctime form: HTTP dates are in GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


class RateLimitingHTTP(consul.aio.HTTPClient):  # type: ignore[misc]
    """py-consul's client, with 429 made visible: py-consul turns it into a ClientError
    (a refusal) and drops the Retry-After header, and a rate-limited write is neither
    refused nor lost: it is to be sent again, later."""

    async def _request(self, callback: Any, *args: Any, **kwargs: Any) -> Any:
        def checked(response: Any) -> Any:
            if response.code == 429:
                headers = response.headers or {}
                raise RateLimited(_retry_after(headers.get("Retry-After")), response.body)
            return callback(response)

        return await super()._request(checked, *args, **kwargs)


class PyConsul(consul.aio.Consul):  # type: ignore[misc]
    def http_connect(self, *args: Any, **kwargs: Any) -> RateLimitingHTTP:
        kwargs.update(
            loop=self.loop,
            connections_limit=self.connections_limit,
            connections_timeout=self.connections_timeout,
        )
        return RateLimitingHTTP(*args, **kwargs)


# An unreadable TLS file: ssl raises the plain OSError of open(), without the file's name.
# Told by type, not by words: "Permission denied" is also what an ACL refusal says.
_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError)
_UNREADABLE = "cannot read a TLS file (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)"


# Causes an operator can act on, by what the error says (TLS and ACL failures read as
# riddles otherwise); the error itself follows.
_CAUSES = (
    (
        "certificate verify failed",
        "TLS: Consul's certificate does not verify against CONSUL_CACERT",
    ),
    ("certificate expired", "TLS: Consul refused the client certificate, which has expired"),
    ("certificate required", "TLS: Consul wants a client certificate (CONSUL_CLIENT_CERT/_KEY)"),
    ("bad certificate", "TLS: Consul refused the client certificate (CONSUL_CLIENT_CERT/_KEY)"),
    ("unknown ca", "TLS: Consul does not know the client certificate's CA"),
    ("no such file", _UNREADABLE),  # the same, wrapped in another error
    ("permission denied", "the token lacks a permission (its policy: docs/operations.md)"),
    ("acl not found", "Consul does not know the token (CONSUL_HTTP_TOKEN)"),
    ("429 too many requests", "rate limited by Consul"),
)


def explain(exc: BaseException, client_cert: str | None = None) -> str:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, _FILE_ERRORS):
        cause: str | None = _UNREADABLE
    else:
        cause = next((c for words, c in _CAUSES if words in lowered), None)
    if cause and "client certificate" in cause and client_cert:
        cause += _expiry(client_cert)
    return f"{cause} ({text})" if cause else text


def _expiry(path: str) -> str:
    """', it expired on …' when the certificate at `path` has; Consul's TLS alert does not
    say why it refused a client certificate, and an expired one is the usual reason."""
    try:
        # The stdlib's certificate reader (ssl has no public one for a file).
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (OSError, ValueError, KeyError, AttributeError):
        return ""
    if not_after < time.time():
        return f": it expired on {decoded['notAfter']}"
    return ""
