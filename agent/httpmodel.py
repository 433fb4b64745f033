"""What every HTTP model client shares: the httpx client, the key's redaction and hint, one
request with retries timed from its last attempt, the preflight and close.

A provider module (agent/openai.py, agent/anthropic.py) only maps messages to its wire format
and parses its reply.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx

from kopt.agent import preflight
from kopt.agent.messages import AssistantMessage, ModelResponse, Usage
from kopt.agent.model import Pricing, RetryHook
from kopt.agent.retry import RetryPolicy, call_with_retry

# A parser's result: the message, input and output tokens, the stop reason, the model that answered.
Parsed = tuple[AssistantMessage, int, int, "str | None", "str | None"]


class HttpModel:
    def __init__(self, model: str, base_url: str, path: str, models_path: str, headers: dict[str, str],
                 api_key: str | None, api_key_env: str | None, pricing: Pricing, timeout_s: float,
                 retry: RetryPolicy, on_retry: RetryHook | None, transport: httpx.BaseTransport | None,
                 sleep: Callable[[float], None], clock: Callable[[], float]):
        self.name = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + path
        self._models_url = self.base_url + models_path
        self.pricing, self.retry, self.on_retry = pricing, retry, on_retry
        self.sleep, self.clock = sleep, clock
        self._secret = api_key
        self._key_hint = (f"check the API key in ${api_key_env}" if api_key_env
                          else "no API key was given" if api_key is None else "check the API key")
        self._http = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)

    def _request(self, payload: dict[str, Any], parse: Callable[[Any], Parsed]) -> ModelResponse:
        """POST `payload` with retries; latency is the last attempt's, not the waits between."""
        started = 0.0

        def send() -> httpx.Response:
            nonlocal started
            started = time.perf_counter()
            return self._http.post(self.url, json=payload)

        message, input_tokens, output_tokens, stop_reason, model = call_with_retry(
            send, parse, policy=self.retry, on_retry=self.on_retry, sleep=self.sleep, clock=self.clock,
            label=f"{self.model} at {self.url}", key_hint=self._key_hint, secret=self._secret)
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                      cost_usd=self.pricing.cost(input_tokens, output_tokens))
        return ModelResponse(message=message, usage=usage, model=model or self.model,
                             latency_s=time.perf_counter() - started, stop_reason=stop_reason)

    def preflight(self) -> None:
        """Before a run: the endpoint answers and takes the key (GET its models list), else ModelError."""
        preflight.check(self._http, self._models_url, self.base_url, self._key_hint, self._secret)

    def close(self) -> None:
        self._http.close()
