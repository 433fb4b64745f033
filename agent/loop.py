"""The tool-calling loop: limits, compaction, one model turn, its tool calls, repeat.

Control flow ends through `Stop`; a model's malformed tool call comes back to it as an error
message (the tools decide), never as a crash. The loop knows nothing about kernels. The tools
it is given record their own calls (the harness's recorder); the loop records the model's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from kopt.agent.context import Compaction, Context, transcript
from kopt.agent.messages import (Message, ModelResponse, SystemMessage, ToolCall, ToolMessage, ToolSpec,
                                 UserMessage)
from kopt.agent.model import Model, ModelError, ModelUnavailable

NUDGE = ("You replied without calling a tool. Keep working through the tools; call finish(summary) when you "
         "are done.")
SUMMARY_PROMPT = ("You are compacting the memory of a long-running optimisation agent. Summarise the transcript "
                  "below in at most 300 words: what was tried, what worked and what failed and why, the current "
                  "state of the file, and what looked promising next. Facts only.")


@dataclass(frozen=True)
class Prompts:
    """What the loop says on its own: data a caller (a task) may override."""

    nudge: str = NUDGE  # after a reply without a tool call
    summary: str = SUMMARY_PROMPT  # the system prompt of a compaction's summary request


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

    def compaction(self, compaction: Compaction, usage: Any) -> None: ...


class Agent:
    def __init__(self, model: Model, tools: Tools, recorder: Recorder, context: Context,
                 before_request: Callable[["Agent"], None], status: Callable[[], str | None] = lambda: None,
                 summarize: bool = True, prompts: Prompts = Prompts()):
        self.model, self.tools, self.recorder = model, tools, recorder
        self.prompts = prompts
        self.context = context
        self.before_request = before_request  # limits and policies; raises Stop
        self.status = status
        self.summarize = summarize

    def run(self) -> Stop:
        try:
            while True:
                self.step()
        except Stop as stop:
            return stop

    def say(self, text: str) -> None:
        """A user message from the harness (stall warnings, redesign requests), recorded."""
        message = UserMessage(content=text)
        self.recorder.user_message(message)
        self.context.append(message)

    def step(self) -> None:
        self.before_request(self)
        self.compact()
        request = self.context.request(self.status())
        self.recorder.model_request(request)
        try:
            response = self.model.complete(request, self.tools.specs())
        except ModelError as exc:
            raise Stop("model_error", str(exc)) from None
        except ModelUnavailable as exc:
            raise Stop("provider_outage", str(exc)) from None
        self.recorder.model_response(response)
        self.context.append(response.message)
        if not response.message.tool_calls:
            self.say(self.prompts.nudge)
            return
        for call in response.message.tool_calls:
            self.run_tool(call)

    def compact(self) -> None:
        plan = self.context.plan_compaction()
        if plan is None:
            return
        usage = None
        if self.summarize:
            dropped = self.context.window[:plan.drop]
            earlier = f"Earlier summary:\n{self.context.summary}\n\n" if self.context.summary else ""
            try:
                reply = self.model.complete([SystemMessage(content=self.prompts.summary),
                                             UserMessage(content=earlier + transcript(dropped))], [])
                plan.summary, usage = (reply.message.content or "").strip()[:6000] or None, reply.usage
            except (ModelError, ModelUnavailable):
                plan.summary = None  # the status block still carries the facts
        self.recorder.compaction(plan, usage)
        self.context.apply(plan)

    def run_tool(self, call: ToolCall) -> None:
        outcome = self.tools.execute(call)
        self.context.append(ToolMessage(tool_call_id=call.id, name=call.name, content=outcome.content,
                                        is_error=outcome.is_error))
        if outcome.finish is not None:
            raise Stop("finished", outcome.finish)
