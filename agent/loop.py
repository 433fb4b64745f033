"""The tool-calling loop: limits, one model turn, its tool calls, repeat.

Control flow ends through `Stop`; a model's malformed tool call comes back to it as an error
message (the tools decide), never as a crash. The loop knows nothing about kernels.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from kopt.agent.messages import Message, ModelResponse, ToolCall, ToolMessage, ToolSpec, UserMessage
from kopt.agent.model import Model, ModelError, ModelUnavailable

NUDGE = ("You replied without calling a tool. Keep working through the tools; call finish(summary) when you "
         "are done.")


class Stop(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class Outcome(Protocol):
    content: str
    is_error: bool
    finish: str | None


class Tools(Protocol):
    def specs(self) -> list[ToolSpec]: ...

    def execute(self, call: ToolCall) -> Outcome: ...


class Recorder(Protocol):
    def model_request(self, messages: list[Message]) -> None: ...

    def model_response(self, response: ModelResponse) -> None: ...

    def user_message(self, message: UserMessage) -> None: ...

    def tool_call(self, call: ToolCall) -> None: ...

    def tool_result(self, call: ToolCall, outcome: Any, duration_s: float) -> None: ...


class Agent:
    def __init__(self, model: Model, tools: Tools, recorder: Recorder, context: list[Message],
                 check_limits: Callable[[], None]):
        self.model, self.tools, self.recorder = model, tools, recorder
        self.context = context
        self.check_limits = check_limits  # raises Stop

    def run(self) -> Stop:
        try:
            while True:
                self.step()
        except Stop as stop:
            return stop

    def step(self) -> None:
        self.check_limits()
        self.recorder.model_request(self.context)
        try:
            response = self.model.complete(self.context, self.tools.specs())
        except ModelError as exc:
            raise Stop("model_error", str(exc)) from None
        except ModelUnavailable as exc:
            raise Stop("provider_outage", str(exc)) from None
        self.recorder.model_response(response)
        self.context.append(response.message)
        if not response.message.tool_calls:
            nudge = UserMessage(content=NUDGE)
            self.recorder.user_message(nudge)
            self.context.append(nudge)
            return
        for call in response.message.tool_calls:
            self.run_tool(call)

    def run_tool(self, call: ToolCall) -> None:
        self.recorder.tool_call(call)
        start = time.monotonic()
        outcome = self.tools.execute(call)
        self.recorder.tool_result(call, outcome, time.monotonic() - start)
        self.context.append(ToolMessage(tool_call_id=call.id, name=call.name, content=outcome.content,
                                        is_error=outcome.is_error))
        if outcome.finish is not None:
            raise Stop("finished", outcome.finish)
