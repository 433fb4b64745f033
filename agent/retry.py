"""Provider outages: one retry policy shared by the model clients.

A request is retried on HTTP 408, 409, 429 and 5xx, on transport failures (connect errors,
timeouts, a dropped connection) and on a body that is not the JSON the client expects (a
truncated response). Waits grow as capped exponential backoff; a Retry-After header can only
lengthen a wait (it is the server's lower bound, our backoff still grows through a long
outage), and no wait exceeds the cap. Retrying stops once the next wait would carry the time
since this call's first failure past the outage budget: then ModelUnavailable, which the run
treats as a resumable stop. Any other 4xx is a configuration fault: ModelError at once.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TypeVar

import httpx

from kopt.agent.model import ModelError, ModelUnavailable, RetryEvent, RetryHook

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
ERROR_TEXT_CHARS = 500
# Transport failures worth another try; UnsupportedProtocol / LocalProtocolError are our bugs.
TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
             httpx.ProxyError, httpx.DecodingError)


class MalformedResponse(Exception):
    """A 2xx body that lacks what the client needs (truncated, or a stray error object): retried."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 1.0  # first wait; doubles with each consecutive failure
    cap_s: float = 60.0  # no single wait is longer, Retry-After included
    outage_budget_s: float = 7200.0  # give up once failures of one call would outlast this

    def backoff_s(self, failures: int) -> float:
        """The wait after the `failures`-th consecutive failure (1-based)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 64))

    def wait_s(self, failures: int, retry_after_s: float | None) -> float:
        return min(self.cap_s, max(self.backoff_s(failures), retry_after_s or 0.0))


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP-date."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def error_text(response: httpx.Response) -> str:
    """The provider's own words: OpenAI/DashScope/vLLM/Ollama/Anthropic error shapes, else the raw body."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    text = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            text = err.get("message")
            kind = err.get("type") or err.get("code")
            if text and kind:
                text = f"{text} [{kind}]"
        elif isinstance(err, str):
            text = err
        text = text or body.get("message") or body.get("detail")
    if not isinstance(text, str) or not text:
        text = response.text.strip() or response.reason_phrase or "(empty body)"
    return " ".join(text.split())[:ERROR_TEXT_CHARS]


def out_of_quota(response: httpx.Response) -> bool:
    """A 429 that waiting cannot cure: the account's quota or credit is spent (OpenAI's shape)."""
    return response.status_code == 429 and "insufficient_quota" in error_text(response)


def fatal_error(status: int, text: str, *, label: str, key_hint: str) -> ModelError:
    if status in (401, 403):
        what = "authentication failed" if status == 401 else "permission denied"
        return ModelError(f"{label}: {what} ({status}): {text}; {key_hint}")
    if status == 404:
        return ModelError(f"{label}: not found (404): {text}; check the base URL and the model name")
    if status in (400, 422):
        return ModelError(f"{label}: bad request ({status}): {text}")
    if status == 429:
        return ModelError(f"{label}: quota exhausted (429): {text}; check the account's plan and billing")
    return ModelError(f"{label}: request rejected ({status}): {text}")


def call_with_retry(send: Callable[[], httpx.Response], parse: Callable[[Any], T], *,
                    policy: RetryPolicy, on_retry: RetryHook | None = None,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic,
                    label: str = "model provider", key_hint: str = "check the API key",
                    secret: str | None = None) -> T:
    """send() until a 2xx body parses (parse raises MalformedResponse for a bad one), retrying outages.

    Raises ModelError (fatal status or unusable URL), ModelUnavailable (outage budget spent);
    exceptions raised by on_retry or sleep propagate, so a caller can abort a long wait.
    """

    def redact(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    label = redact(label)
    failures = 0
    first_failure: float | None = None
    while True:
        status: int | None = None
        wait_hint: float | None = None
        try:
            response = send()
        except TRANSIENT as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise ModelError(redact(f"{label}: cannot send the request: {exc}")) from None
        else:
            status = response.status_code
            if 200 <= status < 300:
                try:
                    return parse(response.json())
                except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                    error = f"HTTP {status} with a body that is not JSON ({exc}): {response.text[:200]!r}"
                except MalformedResponse as exc:
                    error = f"HTTP {status} with an unusable body: {exc}"
            elif (status in RETRY_STATUSES or 500 <= status < 600) and not out_of_quota(response):
                error = f"HTTP {status}: {error_text(response)}"
                wait_hint = retry_after_s(response.headers)
            else:
                raise fatal_error(status, redact(error_text(response)), label=label, key_hint=key_hint)
        error = redact(error)
        failures += 1
        now = clock()
        if first_failure is None:
            first_failure = now
        elapsed = now - first_failure
        wait = policy.wait_s(failures, wait_hint)
        if elapsed + wait > policy.outage_budget_s:
            raise ModelUnavailable(f"{label}: unavailable after {failures} failed attempts over "
                                   f"{elapsed:.0f} s (outage budget {policy.outage_budget_s:.0f} s); "
                                   f"last error: {error}")
        if on_retry is not None:
            on_retry(RetryEvent(attempt=failures, error=error, status=status, wait_s=wait))
        sleep(wait)
