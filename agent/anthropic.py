"""Anthropic's Messages API, over httpx: `POST {base_url}/v1/messages`.

The Messages API is stricter than chat completions, so the mapping keeps every request valid:
leading system messages become the top-level `system`; roles strictly alternate (adjacent
user-role content, tool results included, is merged into one message, tool results first);
no text block is empty; a tool_use input is always an object.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import httpx

from kopt.agent.messages import (AssistantMessage, Message, ModelResponse, SystemMessage, ToolCall,
                                 ToolMessage, ToolSpec)
from kopt.agent.httpmodel import HttpModel
from kopt.agent.model import Pricing, RetryHook
from kopt.agent.retry import MalformedResponse, RetryPolicy

API_VERSION = "2023-06-01"
EMPTY_TURN = "(no response)"  # stands in for an assistant turn with neither text nor tool calls


def tool_input(call: ToolCall) -> dict[str, Any]:
    """The recorded arguments as an object; {} when malformed (the tool's error message quotes them)."""
    try:
        value = json.loads(call.arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def blocks_of(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, ToolMessage):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id,
                                 "is_error": message.is_error}
        if message.content:
            block["content"] = message.content
        return "user", [block]
    if isinstance(message, AssistantMessage):
        blocks = [{"type": "text", "text": message.content}] if (message.content or "").strip() else []
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c)}
                   for c in message.tool_calls]
        return "assistant", blocks or [{"type": "text", "text": EMPTY_TURN}]
    # a user message, or a system message after the conversation started: user-role text
    return "user", [{"type": "text", "text": message.content}] if message.content.strip() else []


def to_anthropic(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, alternating messages) for the Messages API."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage) and not turns:
            system.append(message.content)
            continue
        role, blocks = blocks_of(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # the API wants tool results ahead of any text in a user message
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return ("\n\n".join(system) or None), turns


def parse_message(body: Any) -> tuple[AssistantMessage, int, int, str | None, str | None]:
    """(message, input tokens, output tokens, stop reason, model) from a Messages API body."""
    try:
        texts, calls, thoughts = [], [], []
        for block in body["content"]:
            kind = block["type"]
            if kind == "text":
                texts.append(block["text"])
            elif kind == "tool_use":
                calls.append(ToolCall(id=block["id"], name=block["name"],
                                       arguments=json.dumps(block.get("input") or {})))
            elif kind == "thinking":
                thoughts.append(block.get("thinking") or "")
        usage = body.get("usage") or {}
        input_tokens = sum(int(usage.get(k) or 0) for k in
                           ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        message = AssistantMessage(content="\n".join(texts) if texts else None, tool_calls=calls,
                                   reasoning="\n".join(thoughts) if thoughts else None)
        return (message, input_tokens, int(usage.get("output_tokens") or 0),
                body.get("stop_reason"), body.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponse(f"no usable content blocks ({type(exc).__name__}: {exc}); "
                                f"body starts {json.dumps(body)[:200]}") from None


class AnthropicModel(HttpModel):
    def __init__(self, model: str, base_url: str = "https://api.anthropic.com", api_key: str | None = None,
                 pricing: Pricing = Pricing(), timeout_s: float = 600.0, retry: RetryPolicy = RetryPolicy(),
                 on_retry: RetryHook | None = None, max_tokens: int = 8192,
                 transport: httpx.BaseTransport | None = None, api_key_env: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(model, base_url, "/v1/messages", "/v1/models", headers, api_key, api_key_env, pricing,
                         timeout_s, retry, on_retry, transport, sleep, clock)
        self.max_tokens = max_tokens

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        system, turns = to_anthropic(messages)
        payload: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": turns}
        if system:
            payload["system"] = system
        if tools:
            payload["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                                for t in tools]
            payload["tool_choice"] = {"type": "auto"}
        return self._request(payload, parse_message)
