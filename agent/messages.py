"""Typed messages: the one vocabulary between the loop, the model clients and the trajectory.

Every record round-trips through JSON with one adapter (MESSAGE), so the trajectory can
rebuild exactly the context a model saw.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCall(Record):
    id: str
    name: str
    arguments: str  # the raw JSON text the model produced: may be malformed, parsed by the loop

    def parsed(self) -> dict[str, Any]:
        """The arguments as a dict, or ValueError with a message meant for the model."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments of {self.name} are not valid JSON ({exc.msg} at char {exc.pos}): "
                             f"{self.arguments[:200]!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"arguments of {self.name} must be a JSON object, got {type(value).__name__}")
        return value


class SystemMessage(Record):
    role: Literal["system"] = "system"
    content: str


class UserMessage(Record):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(Record):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reasoning: str | None = None  # provider reasoning text, when one is returned (kept, not resent)


class ToolMessage(Record):
    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage], Field(discriminator="role")]
MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)
MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


class ToolSpec(Record):
    """A tool as offered to a model: JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


class Usage(Record):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ModelResponse(Record):
    message: AssistantMessage
    usage: Usage = Field(default_factory=Usage)
    model: str
    latency_s: float = 0.0
    stop_reason: str | None = None
