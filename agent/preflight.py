"""One cheap request before a run starts: is the endpoint there, and does it take the key?

A run that cannot reach its model should fail in a second with a sentence saying why, not retry
for hours (the outage policy is for a run already under way). Only what waiting cannot cure fails
here: a refused connection, an unknown host, no answer to the connection at all, a refused key.
Anything else (no /models route, a 5xx, a rate limit) lets the run start; its own calls then
retry or stop as usual.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

import httpx

from kopt.agent.model import ModelError
from kopt.agent.retry import error_text

CONNECT_TIMEOUT_S = 10.0


def check(http: httpx.Client, url: str, base_url: str, key_hint: str, secret: str | None = None) -> None:
    """GET `url` (a listing of models) with the client's headers; ModelError for what cannot be cured."""
    host = urlsplit(base_url).hostname or base_url
    try:
        response = http.get(url, timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT_S))
    except httpx.ConnectTimeout:
        raise ModelError(f"cannot reach {base_url}: no answer from {host} within {CONNECT_TIMEOUT_S:.0f} s (a "
                         "firewall, or the wrong address?); check --base-url") from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ModelError(f"cannot reach {base_url}: {why(exc, host)}; check --base-url") from None
    except httpx.HTTPError:  # reached, but the answer was slow or odd: the run's own calls will say more
        return
    if response.status_code in (401, 403):
        text = error_text(response)
        if secret:
            text = text.replace(secret, "***")
        raise ModelError(f"{base_url} refused the API key ({response.status_code}): {text}; {key_hint}")


def why(exc: Exception, host: str) -> str:
    """A connection failure in words: refused, unknown host, or the transport's own message."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause) \
                or "nodename nor servname" in str(cause) or "Temporary failure in name resolution" in str(cause):
            return f"unknown host {host!r} (no DNS entry: a typo in the URL?)"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED \
                or "Connection refused" in str(cause):
            return f"connection refused by {host} (is the server running, and on this port?)"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}"
