"""The retry policy on its own: which failures are retried, how long it waits, when it gives up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from kopt.agent.model import ModelError, ModelUnavailable, RetryEvent
from kopt.agent.retry import MalformedResponse, RetryPolicy, call_with_retry, retry_after_s
from tests.agent.server import FakeTime, openai_error

OK = httpx.Response(200, json={"ok": True})


def run(outcomes: list[Any], policy: RetryPolicy = RetryPolicy(), **kwargs: Any):
    """call_with_retry over scripted outcomes (a Response, or an exception to raise)."""
    time_, events, sent = FakeTime(), [], []

    def send() -> httpx.Response:
        outcome = outcomes[min(len(sent), len(outcomes) - 1)]
        sent.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def parse(body: Any) -> Any:
        if not isinstance(body, dict) or "ok" not in body:
            raise MalformedResponse("no 'ok'")
        return body["ok"]

    try:
        result = call_with_retry(send, parse, policy=policy, on_retry=events.append, sleep=time_.sleep,
                                 clock=time_.clock, label="m at http://x", **kwargs)
    except (ModelError, ModelUnavailable) as exc:
        result = exc
    return result, time_.sleeps, events, len(sent)


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(base_s=1.0, cap_s=10.0)
    assert [policy.backoff_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.backoff_s(5000) == 10  # no overflow after days of failures


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status):
    result, sleeps, events, sent = run([httpx.Response(status, json=openai_error("busy")), OK])
    assert result is True and sent == 2 and sleeps == [1.0]
    assert events == [RetryEvent(attempt=1, error=f"HTTP {status}: busy [invalid_request_error]",
                                 status=status, wait_s=1.0)]


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("timed out"),
                                 httpx.WriteTimeout("w"), httpx.PoolTimeout("p"),
                                 httpx.RemoteProtocolError("Server disconnected"), httpx.ReadError("reset")])
def test_transport_errors_are_retried(exc):
    result, sleeps, events, _ = run([exc, exc, OK])
    assert result is True and sleeps == [1.0, 2.0]
    assert [e.status for e in events] == [None, None]
    assert events[0].error.startswith(type(exc).__name__)


@pytest.mark.parametrize("response", [httpx.Response(200, content=b'{"ok": tr'),
                                      httpx.Response(200, content=b"<html>proxy</html>"),
                                      httpx.Response(200, json={"error": {"message": "later"}})])
def test_unusable_bodies_are_retried(response):
    result, _, events, sent = run([response, OK])
    assert result is True and sent == 2 and events[0].status == 200


def test_retry_after_is_honoured_and_never_shortens_the_backoff():
    busy = [httpx.Response(429, headers={"Retry-After": "7"}) for _ in range(4)]
    slow = httpx.Response(503, headers={"Retry-After": "1000"})
    _, sleeps, _, _ = run(busy + [slow, OK], RetryPolicy(base_s=2.0, cap_s=30.0))
    assert sleeps == [7.0, 7.0, 8.0, 16.0, 30.0]  # max(backoff, Retry-After), capped


def test_retry_after_forms():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_s({"retry-after": "2.5"}) == 2.5
    assert retry_after_s({"retry-after": format_datetime(now + timedelta(seconds=30), usegmt=True)}, now) == 30
    assert retry_after_s({"retry-after": format_datetime(now - timedelta(seconds=30), usegmt=True)}, now) == 0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_outage_budget_then_model_unavailable_naming_the_last_error():
    down = httpx.Response(503, json=openai_error("overloaded"))
    result, sleeps, events, sent = run([down], RetryPolicy(base_s=1.0, cap_s=60.0, outage_budget_s=10.0))
    assert isinstance(result, ModelUnavailable)
    assert sleeps == [1.0, 2.0, 4.0] and sent == 4  # 7 s elapsed; waiting 8 more would pass 10
    assert [e.attempt for e in events] == [1, 2, 3]
    assert "HTTP 503: overloaded" in str(result) and "4 failed attempts" in str(result)


def test_zero_budget_means_no_retry():
    result, sleeps, events, sent = run([httpx.ConnectError("refused"), OK], RetryPolicy(outage_budget_s=0))
    assert isinstance(result, ModelUnavailable) and sent == 1 and not sleeps and not events
    assert "ConnectError: refused" in str(result)


@pytest.mark.parametrize("status, words", [(401, "authentication failed (401)"), (403, "permission denied (403)"),
                                           (404, "not found (404)"), (400, "bad request (400)"),
                                           (422, "bad request (422)"), (413, "request rejected (413)")])
def test_client_errors_are_fatal_at_once_and_hide_the_key(status, words):
    body = openai_error("Incorrect API key provided: sk-secret-123")
    result, sleeps, events, sent = run([httpx.Response(status, json=body), OK], secret="sk-secret-123",
                                       key_hint="check the API key in $QWEN_KEY")
    assert isinstance(result, ModelError) and sent == 1 and not sleeps and not events
    assert words in str(result) and "Incorrect API key provided" in str(result)
    assert "sk-secret-123" not in str(result)
    assert ("$QWEN_KEY" in str(result)) == (status in (401, 403))


def test_spent_quota_is_fatal():
    body = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota"}}
    result, _, _, sent = run([httpx.Response(429, json=body), OK])
    assert isinstance(result, ModelError) and sent == 1 and "quota exhausted (429)" in str(result)


def test_unusable_url_is_fatal():
    result, _, _, sent = run([httpx.UnsupportedProtocol("Request URL is missing a protocol"), OK])
    assert isinstance(result, ModelError) and sent == 1


def test_hook_exceptions_abort_the_wait():
    def stop(event: RetryEvent) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_retry(lambda: httpx.Response(503), lambda body: body, policy=RetryPolicy(), on_retry=stop,
                        sleep=lambda s: None)
