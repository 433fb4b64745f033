"""Any OpenAI-compatible chat-completions endpoint with tool calling, over httpx.

Tested against the protocol OpenAI, Alibaba Model Studio (compatible mode), vLLM, SGLang and
Ollama speak: `POST {base_url}/chat/completions`, a Bearer key only when one is given.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import httpx

from kopt.agent.messages import (AssistantMessage, Message, ModelResponse, SystemMessage, ToolCall,
                                 ToolMessage, ToolSpec, UserMessage)
from kopt.agent.httpmodel import HttpModel
from kopt.agent.model import Pricing, RetryHook
from kopt.agent.retry import MalformedResponse, RetryPolicy


def sendable_arguments(call: ToolCall) -> str:
    """The arguments as resent in history: raw when a JSON object, else "{}".

    Servers such as vLLM parse history arguments and reject the whole request (a fatal 400)
    on malformed JSON; the tool's error message, which quotes the raw text, keeps the lesson.
    """
    try:
        return call.arguments if isinstance(json.loads(call.arguments), dict) else "{}"
    except ValueError:
        return "{}"


def to_openai(message: Message) -> dict[str, Any]:
    if isinstance(message, (SystemMessage, UserMessage)):
        return {"role": message.role, "content": message.content}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": sendable_arguments(c)}}
                             for c in message.tool_calls]
    return out  # reasoning is kept in the trajectory, never resent


def parse_completion(body: Any, turn: int) -> tuple[AssistantMessage, int, int, str | None, str | None]:
    """(message, input tokens, output tokens, finish reason, model) from a completion body."""
    try:
        choice = body["choices"][0]
        raw = choice["message"]
        calls = []
        for index, call in enumerate(raw.get("tool_calls") or []):
            function = call["function"]
            arguments = function.get("arguments")
            if not isinstance(arguments, str):  # some servers send an object
                arguments = "" if arguments is None else json.dumps(arguments)
            calls.append(ToolCall(id=call.get("id") or f"call_{turn}_{index}",
                                  name=function["name"], arguments=arguments))
        content = raw.get("content")
        reasoning = raw.get("reasoning_content") or raw.get("reasoning")
        message = AssistantMessage(content=content if isinstance(content, str) else None,
                                   tool_calls=calls,
                                   reasoning=reasoning if isinstance(reasoning, str) else None)
        usage = body.get("usage") or {}
        return (message, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                choice.get("finish_reason"), body.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        error = body.get("error") if isinstance(body, dict) else None
        raise MalformedResponse(f"no usable choices[0].message ({type(exc).__name__}: {exc}); "
                                f"body starts {json.dumps(error or body)[:200]}") from None


class OpenAIModel(HttpModel):
    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", api_key: str | None = None,
                 pricing: Pricing = Pricing(), timeout_s: float = 600.0, retry: RetryPolicy = RetryPolicy(),
                 on_retry: RetryHook | None = None, extra_body: dict[str, Any] | None = None,
                 max_tokens: int | None = None, transport: httpx.BaseTransport | None = None,
                 api_key_env: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(model, base_url, "/chat/completions", "/models", headers, api_key, api_key_env, pricing,
                         timeout_s, retry, on_retry, transport, sleep, clock)
        self.extra_body = dict(extra_body or {})
        self.max_tokens = max_tokens

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        payload: dict[str, Any] = {"model": self.model, "messages": [to_openai(m) for m in messages]}
        if tools:
            payload["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}} for t in tools]
            payload["tool_choice"] = "auto"
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        payload.update(self.extra_body)
        turn = sum(isinstance(m, AssistantMessage) for m in messages)
        return self._request(payload, lambda body: parse_completion(body, turn))
