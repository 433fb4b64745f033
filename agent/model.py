"""The model boundary: one method, typed messages in, one assistant message plus usage out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from kopt.agent.messages import Message, ModelResponse, ToolSpec


class ModelError(Exception):
    """The run cannot go on with this model (authentication, configuration): stop with this message."""


class ModelUnavailable(Exception):
    """The provider kept failing past the outage budget: stop resumably, nothing is lost."""


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; explicit, from config (0 = unknown/free, reported as such)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class RetryEvent:
    """One failed attempt that will be retried: recorded in the trajectory by the caller."""

    attempt: int
    error: str
    status: int | None
    wait_s: float


RetryHook = Callable[[RetryEvent], None]


class Model(Protocol):
    name: str

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        """One model turn. Raises ModelError (fatal) or ModelUnavailable (outage budget spent)."""
