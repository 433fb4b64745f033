"""One optimisation run: the recorder, budgets, context rebuild and exact resume.

Everything the run knows is in trajectory.jsonl; state.json is a small checkpoint derived
from it. Resuming reads the log once, rebuilds the agent's context message by message,
finishes a tool call that was cut off, and goes on with counters and elapsed time intact.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from kopt.agent.loop import Agent, Stop
from kopt.agent.messages import (MESSAGES, AssistantMessage, Message, ModelResponse, SystemMessage, ToolCall,
                                 ToolMessage, UserMessage)
from kopt.agent.model import Model, RetryEvent
from kopt.harness import trajectory
from kopt.harness.candidates import CandidateStore, score
from kopt.harness.tools import ToolBox, ToolOutcome, sha_of
from kopt.harness.trajectory import Event, write_atomic
from kopt.harness.workspace import STOP_FILE, RunConfig, Workspace

TERMINAL = {"finished", "budget", "model_error"}  # a run that ended so is not resumed
SYSTEM_PROMPT = """You are a GPU kernel engineer optimising a Triton kernel, working unattended through tools.
Your editable file is {editable}. Change only it (and NOTES.md, your notes, which survive resets).
Workflow: read the kernel, form a hypothesis, edit, evaluate. `evaluate` runs a verifier you cannot see or
change: it compiles the kernel, checks it against a reference on many hidden shapes, and times it against the
baseline. Only a kernel that passes every check counts; the best passing candidate is kept. Use revert to go
back to an earlier candidate, history to see them all, compile_report for registers/spills/shared memory.
Call finish(summary) when you are done."""


@dataclass
class Counters:
    tool_calls: int = 0
    evaluations: int = 0
    model_requests: int = 0
    model_responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    forbidden: int = 0
    retries: int = 0
    failed_evaluations: int = 0

    def apply(self, event: Event) -> None:
        d = event.data
        if event.type == "tool_call":
            self.tool_calls += 1
        elif event.type == "evaluation":
            self.evaluations += 1
            self.failed_evaluations += d.get("status") != "ok"
        elif event.type == "model_request":
            self.model_requests += 1
        elif event.type == "model_response":
            usage = d["response"]["usage"]
            self.model_responses += 1
            self.input_tokens += usage["input_tokens"]
            self.output_tokens += usage["output_tokens"]
            self.cost_usd += usage["cost_usd"]
        elif event.type == "forbidden":
            self.forbidden += 1
        elif event.type == "model_retry":
            self.retries += 1


@dataclass
class Rebuilt:
    """What the log says: the context, the counters, a cut-off tool call, how the last session ended."""

    context: list[Message] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    pending: list[tuple[ToolCall, str | None]] = field(default_factory=list)  # (call, pre-call sha)
    end_reason: str | None = None
    finished: bool = False
    last: Event | None = None


def rebuild(events: list[Event]) -> Rebuilt:
    state = Rebuilt()
    started: dict[str, str | None] = {}  # tool call id -> pre-call sha, until its result arrives
    open_calls: list[ToolCall] = []
    for event in events:
        state.counters.apply(event)
        d = event.data
        if event.type == "run_start":
            state.context = list(MESSAGES.validate_python(d["messages"]))
        elif event.type == "model_response":
            message = AssistantMessage.model_validate(d["response"]["message"])
            state.context.append(message)
            open_calls = list(message.tool_calls)
        elif event.type == "user_message":
            state.context.append(UserMessage(content=d["content"]))
        elif event.type == "tool_call":
            started[d["call"]["id"]] = d.get("pre_sha")
        elif event.type == "tool_result":
            started.pop(d["call_id"], None)
            if d["name"] == "finish" and not d["is_error"]:
                state.finished = True  # even if the crash came before run_end was written
            open_calls = [c for c in open_calls if c.id != d["call_id"]]
            state.context.append(ToolMessage(tool_call_id=d["call_id"], name=d["name"], content=d["content"],
                                             is_error=d["is_error"]))
        elif event.type == "run_end":
            state.end_reason = d["reason"]
        elif event.type in ("run_resume",):
            state.end_reason = None
    state.pending = [(c, started.get(c.id)) for c in open_calls]
    state.last = events[-1] if events else None
    return state


class Run:
    def __init__(self, ws: Workspace, model: Model, evaluate: Callable, compile_report: Callable,
                 on_event: Callable[[Event, "Run"], None] | None = None, approve: Callable | None = None):
        self.ws, self.model = ws, model
        self.path = ws.root / trajectory.TRAJECTORY
        events, _ = trajectory.read(self.path)  # drops a torn last line
        self.state = rebuild(events)
        self.counters = self.state.counters
        last = self.state.last
        self.writer = trajectory.Writer(self.path, next_seq=(last.seq + 1) if last else 0,
                                        elapsed_offset_s=last.elapsed_s if last else 0.0)
        self.store = CandidateStore(ws.root)
        self.tools = ToolBox(ws, self.store, evaluate, compile_report, self.record, approve)
        self.on_event = on_event
        self.stop_requested: str | None = None
        self.last_event: Event | None = last
        self.fresh = last is None

    # ---- recording
    def record(self, kind: str, **data: Any) -> Event:
        event = self.writer.append(kind, **data)
        self.counters.apply(event)
        self.last_event = event
        if self.on_event:
            self.on_event(event, self)
        return event

    def model_request(self, messages: list[Message]) -> None:
        self.record("model_request", index=self.counters.model_requests, n_messages=len(messages),
                    chars=sum(len(getattr(m, "content", None) or "") for m in messages))

    def model_response(self, response: ModelResponse) -> None:
        self.record("model_response", index=self.counters.model_responses, response=response.model_dump(mode="json"))

    def user_message(self, message: UserMessage) -> None:
        self.record("user_message", content=message.content)

    def tool_call(self, call: ToolCall) -> None:
        target = self.tools.target_of(call)
        self.tools.tool_index = self.counters.tool_calls + 1
        self.record("tool_call", index=self.counters.tool_calls + 1, call=call.model_dump(),
                    pre_sha=sha_of(target) if target is not None else None)

    def tool_result(self, call: ToolCall, outcome: ToolOutcome, duration_s: float) -> None:
        self.record("tool_result", call_id=call.id, name=call.name, content=outcome.content,
                    is_error=outcome.is_error, duration_s=round(duration_s, 4),
                    outcome="forbidden" if outcome.forbidden else "error" if outcome.is_error else "ok")
        self.checkpoint()

    def model_retry(self, event: RetryEvent) -> None:
        self.record("model_retry", index=self.counters.model_requests - 1, **asdict(event))

    # ---- budgets and stop requests: checked before every model call
    def check_limits(self) -> None:
        if self.stop_requested:
            raise Stop("interrupted", self.stop_requested)
        if (self.ws.root / STOP_FILE).exists():
            raise Stop("interrupted", f"{STOP_FILE} file in the run directory")
        b, c = self.ws.config.budgets, self.counters
        checks = [("max_hours", b.max_hours, self.writer.elapsed_s / 3600.0),
                  ("max_tool_calls", b.max_tool_calls, c.tool_calls), ("max_evals", b.max_evals, c.evaluations),
                  ("max_usd", b.max_usd, c.cost_usd), ("max_tokens", b.max_tokens, c.input_tokens + c.output_tokens)]
        for name, limit, used in checks:
            if limit is not None and used >= limit:
                raise Stop("budget", f"{name} reached ({used:.4g} of {limit:g})")

    def checkpoint(self) -> None:
        best = self.store.best()
        value, label = score(best.verdict) if best else (None, "")
        write_atomic(self.ws.root / "state.json", json.dumps({
            "seq": self.writer.seq, "offset": self.writer.offset(), "elapsed_s": round(self.writer.elapsed_s, 3),
            "counters": asdict(self.counters), "best": {"candidate": best.id if best else None, "score": value,
                                                        "label": label}}, indent=1))

    # ---- the run
    def execute(self) -> Stop:
        if self.state.end_reason in TERMINAL:
            return Stop("already_ended", self.state.end_reason)
        if self.state.finished:  # finish was recorded but the run died before run_end
            stop = self._end(Stop("finished", "recorded before an interruption"))
            self.writer.close()
            return stop
        if self.fresh:
            context: list[Message] = [
                SystemMessage(content=SYSTEM_PROMPT.format(editable=self.ws.config.editable_file)),
                UserMessage(content=self.ws.root.joinpath("instruction.md").read_text())]
            self.record("run_start", config=self.ws.config.model_dump(mode="json", exclude={"secret"}),
                        messages=[m.model_dump() for m in context], model=self.model.name)
        else:
            context = self.state.context
            stop_file = self.ws.root / STOP_FILE
            consumed = stop_file.exists()
            if consumed:
                stop_file.unlink()
            self.record("run_resume", tool_calls=self.counters.tool_calls, evaluations=self.counters.evaluations,
                        pending=[c.id for c, _ in self.state.pending], removed_stop_file=consumed)
        agent = Agent(self.model, self.tools, self, context, self.check_limits)
        handlers = self._install_signals()
        try:
            try:
                self._finish_pending(agent)
            except Stop as stop:
                return self._end(stop)
            return self._end(agent.run())
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.writer.close()

    def _finish_pending(self, agent: Agent) -> None:
        """A tool call cut off by a crash: redo it, unless its file change already happened."""
        for call, pre_sha in self.state.pending:
            target = self.tools.target_of(call)
            if target is not None and pre_sha is not None and sha_of(target) != pre_sha:
                self.record("tool_result", call_id=call.id, name=call.name, is_error=False, duration_s=0.0,
                            outcome="ok", content=f"{call.name} was applied before an interruption; "
                                                  f"{target.name} now holds its result")
                agent.context.append(ToolMessage(tool_call_id=call.id, name=call.name, content=(
                    f"{call.name} was applied before an interruption; {target.name} now holds its result")))
                continue
            agent.run_tool(call)

    def _end(self, stop: Stop) -> Stop:
        self.record("run_end", reason=stop.reason, detail=stop.detail[:4000])
        self.checkpoint()
        return stop

    def _install_signals(self) -> dict:
        def request_stop(signum, _frame):
            self.stop_requested = f"{signal.Signals(signum).name} received"
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread (tests): no handlers
                pass
        return previous


def resumable_summary(ws: Workspace) -> dict[str, Any]:
    state = ws.root / "state.json"
    return json.loads(state.read_text()) if state.exists() else {}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
