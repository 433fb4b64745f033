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

from collections import deque

from kopt.agent.context import Compaction, Context
from kopt.agent.loop import Agent, Stop
from kopt.agent.messages import (MESSAGES, AssistantMessage, Message, ModelResponse, SystemMessage, ToolCall,
                                 ToolMessage, UserMessage)
from kopt.agent.model import Model, RetryEvent
from kopt.harness import trajectory
from kopt.harness.candidates import CandidateStore, score
from kopt.harness.tools import ToolBox, ToolOutcome, sha_of
from kopt.harness.trajectory import Event, write_atomic
from kopt.harness.workspace import STOP_FILE, Workspace

TERMINAL = {"finished", "budget", "model_error", "stalled"}
RECENT_EVALUATIONS = 15
NOTES_IN_STATUS_CHARS = 3000
CHECKPOINT_EVERY_S = 5.0  # a run that ended so is not resumed
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
        if event.type == "tool_call" and not d.get("retry"):  # a call redone after a crash counts once
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
        elif event.type == "compaction" and d.get("usage"):
            self.input_tokens += d["usage"]["input_tokens"]
            self.output_tokens += d["usage"]["output_tokens"]
            self.cost_usd += d["usage"]["cost_usd"]
        elif event.type == "forbidden":
            self.forbidden += 1
        elif event.type == "model_retry":
            self.retries += 1


@dataclass
class Progress:
    """What the stall policy and the failure budgets look at, derived from events."""

    best: float | None = None
    since_improvement: int = 0
    redesigns: int = 0
    redesigns_without_progress: int = 0
    warned: bool = False
    failed_in_row: int = 0
    model_errors_in_row: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVALUATIONS))

    def apply(self, event: Event) -> None:
        d = event.data
        if event.type == "evaluation":
            value = d.get("score")
            self.failed_in_row = 0 if d["status"] == "ok" else self.failed_in_row + 1
            if value is not None and (self.best is None or value > self.best):
                self.best, self.since_improvement, self.redesigns_without_progress = value, 0, 0
                self.warned = False
            else:
                self.since_improvement += 1
            outcome = f"{value:.4f}" if value is not None else f"{d['status']}: {d.get('reason', '')[:140]}"
            self.recent.append(f"{d['candidate']:04d} {outcome}" + (f" [{d['note'][:100]}]" if d.get("note") else ""))
        elif event.type == "evaluation_cached":
            self.since_improvement += 1
        elif event.type == "model_retry":
            self.model_errors_in_row += 1
        elif event.type == "model_response":
            self.model_errors_in_row = 0
        elif event.type == "stall_warning":
            self.warned = True
        elif event.type == "redesign":
            self.redesigns += 1
            self.redesigns_without_progress += 1
            self.since_improvement, self.warned = 0, False


@dataclass
class Rebuilt:
    """What the log says: the context, the counters, a cut-off tool call, how the last session ended."""

    head: list[Message] = field(default_factory=list)
    window: list[Message] = field(default_factory=list)
    summary: str | None = None
    counters: Counters = field(default_factory=Counters)
    progress: Progress = field(default_factory=Progress)
    pending: list[tuple[ToolCall, str | None]] = field(default_factory=list)  # (call, pre-call sha)
    end_reason: str | None = None
    finished: bool = False
    evaluated: set[int] = field(default_factory=set)  # candidates with an evaluation event
    started: set[str] = field(default_factory=set)  # tool calls with a tool_call event but no result
    last: Event | None = None


def rebuild(events: list[Event]) -> Rebuilt:
    """Replay the log: the same head, window and summary the agent had, and the counters.

    The window is kept as raw records and only its final contents become messages: a long run
    compacts away most of what it ever said, so resume time stays proportional to the log.
    """
    state = Rebuilt()
    started: dict[str, str | None] = {}  # tool call id -> pre-call sha, until its result arrives
    open_calls: list[dict] = []
    window: list[tuple[str, dict]] = []
    for event in events:
        state.counters.apply(event)
        state.progress.apply(event)
        d = event.data
        kind = event.type
        if kind == "run_start":
            state.head = list(MESSAGES.validate_python(d["messages"]))
        elif kind == "model_response":
            message = d["response"]["message"]
            window.append(("assistant", message))
            open_calls = list(message.get("tool_calls") or [])
        elif kind == "user_message":
            window.append(("user", d))
        elif kind == "tool_call":
            started[d["call"]["id"]] = d.get("pre_sha")
        elif kind == "tool_result":
            started.pop(d["call_id"], None)
            open_calls = [c for c in open_calls if c["id"] != d["call_id"]]
            window.append(("tool", d))
            if d["name"] == "finish" and not d["is_error"]:
                state.finished = True  # even if the crash came before run_end was written
        elif kind == "evaluation":
            state.evaluated.add(d["candidate"])
        elif kind == "compaction":
            window = window[d["drop"]:]
            state.summary = d.get("summary") or state.summary
        elif kind == "redesign":
            window, state.summary = [], None
        elif kind == "run_end":
            state.end_reason = d["reason"]
        elif kind == "run_resume":
            state.end_reason = None
    state.window = [AssistantMessage.model_validate(d) if role == "assistant" else
                    UserMessage(content=d["content"]) if role == "user" else
                    ToolMessage(tool_call_id=d["call_id"], name=d["name"], content=d["content"], is_error=d["is_error"])
                    for role, d in window]
    state.pending = [(ToolCall.model_validate(c), started.get(c["id"])) for c in open_calls]
    state.started = set(started)
    state.last = events[-1] if events else None
    return state


class Run:
    def __init__(self, ws: Workspace, model: Model, evaluate: Callable, compile_report: Callable,
                 on_event: Callable[[Event, "Run"], None] | None = None, approve: Callable | None = None,
                 context_tokens: int = 32_000, summarize: bool = True):
        self.ws, self.model = ws, model
        self.path = ws.root / trajectory.TRAJECTORY
        events, _ = trajectory.read(self.path)  # drops a torn last line
        self.state = rebuild(events)
        self.counters = self.state.counters
        self.progress = self.state.progress
        self.context_tokens, self.summarize = context_tokens, summarize
        last = self.state.last
        self.writer = trajectory.Writer(self.path, next_seq=(last.seq + 1) if last else 0,
                                        elapsed_offset_s=last.elapsed_s if last else 0.0)
        self.store = CandidateStore(ws.root)
        self.tools = ToolBox(ws, self.store, evaluate, compile_report, self.record, approve,
                             logged=self.state.evaluated)
        self.on_event = on_event
        self.stop_requested: str | None = None
        self.checkpointed = 0.0
        self.retrying = self.state.started  # calls cut off by a crash: redone, not counted again
        self.last_event: Event | None = last
        self.fresh = last is None

    # ---- recording
    def record(self, kind: str, **data: Any) -> Event:
        event = self.writer.append(kind, **data)
        self.counters.apply(event)
        self.progress.apply(event)
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
        retry = call.id in self.retrying
        target = self.tools.target_of(call)
        index = self.counters.tool_calls + (0 if retry else 1)
        self.tools.tool_index = index
        self.record("tool_call", index=index, call=call.model_dump(),
                    pre_sha=sha_of(target) if target is not None else None, **({"retry": True} if retry else {}))

    def tool_result(self, call: ToolCall, outcome: ToolOutcome, duration_s: float) -> None:
        self.record("tool_result", call_id=call.id, name=call.name, content=outcome.content,
                    is_error=outcome.is_error, duration_s=round(duration_s, 4),
                    outcome="forbidden" if outcome.forbidden else "error" if outcome.is_error else "ok")
        if call.name == "evaluate" or time.monotonic() - self.checkpointed >= CHECKPOINT_EVERY_S:
            self.checkpoint()  # derived data: the log alone is enough to resume, so not on every step

    def model_retry(self, event: RetryEvent) -> None:
        """Called by the client before each wait: an outage is recorded, and can be interrupted."""
        self.record("model_retry", index=self.counters.model_requests - 1, **asdict(event))
        self.checkpoint()
        self.check_stop()
        limit = self.ws.config.budgets.max_model_errors_in_row
        if limit is not None and self.progress.model_errors_in_row >= limit:
            raise Stop("budget", f"max_model_errors_in_row reached ({self.progress.model_errors_in_row})")

    def compaction(self, compaction: Compaction, usage: Any) -> None:
        self.record("compaction", drop=compaction.drop, tokens_before=compaction.tokens_before,
                    tokens_after=compaction.tokens_after, summary=compaction.summary,
                    usage=usage.model_dump() if usage is not None else None)

    # ---- budgets, stop requests and the stall policy: checked before every model call
    def check_stop(self) -> None:
        if self.stop_requested:
            raise Stop("interrupted", self.stop_requested)
        if (self.ws.root / STOP_FILE).exists():
            raise Stop("interrupted", f"{STOP_FILE} file in the run directory")

    def before_request(self, agent: Agent) -> None:
        self.check_stop()
        b, c, p = self.ws.config.budgets, self.counters, self.progress
        checks = [("max_hours", b.max_hours, self.writer.elapsed_s / 3600.0),
                  ("max_tool_calls", b.max_tool_calls, c.tool_calls), ("max_evals", b.max_evals, c.evaluations),
                  ("max_usd", b.max_usd, c.cost_usd), ("max_tokens", b.max_tokens, c.input_tokens + c.output_tokens),
                  ("max_failed_evals_in_row", b.max_failed_evals_in_row, p.failed_in_row)]
        for name, limit, used in checks:
            if limit is not None and used >= limit:
                raise Stop("budget", f"{name} reached ({used:.4g} of {limit:g})")
        self.apply_stall_policy(agent)

    def apply_stall_policy(self, agent: Agent) -> None:
        policy, p = self.ws.config.stall, self.progress
        best = self.store.best()
        if p.since_improvement >= policy.redesign_after:
            if p.redesigns_without_progress >= policy.max_redesigns:
                raise Stop("stalled", f"{p.redesigns_without_progress} redesigns without improving on the best")
            if best is not None:
                self.ws.kernel.write_text(self.store.path(best.id).read_text())
            self.record("redesign", number=p.redesigns + 1, best=best.id if best else None,
                        since_improvement=p.since_improvement)
            agent.context.reset()
            tried = "\n".join(f"- {line}" for line in p.recent)
            agent.say(f"Redesign {p.redesigns}: {policy.redesign_after} evaluations in a row did not improve on the "
                      "best candidate. Your earlier context was cleared and the kernel file was reset to "
                      f"{'candidate %04d' % best.id if best else 'the baseline'}. Recent attempts:\n{tried}\n"
                      "Take a substantially different approach from these; read the kernel first.")
        elif p.since_improvement >= policy.warn_after and not p.warned:
            self.record("stall_warning", since_improvement=p.since_improvement)
            agent.say(f"{p.since_improvement} evaluations without improving on the best candidate. Step back: "
                      "check your notes and the compile report, and consider a different kind of change. After "
                      f"{policy.redesign_after} your context restarts from the best candidate.")

    def status_text(self) -> str:
        """Regenerated for every request: what the agent must not lose when old turns are compacted."""
        c, b, p = self.counters, self.ws.config.budgets, self.progress
        lines = ["[Run status, regenerated every turn]",
                 f"Elapsed {self.writer.elapsed_s / 60:.1f} min; tool calls {c.tool_calls}; evaluations "
                 f"{c.evaluations} ({c.failed_evaluations} did not pass)."]
        left = [f"{name} {limit - used:g}" for name, limit, used in (
            ("evaluations", b.max_evals, c.evaluations), ("tool calls", b.max_tool_calls, c.tool_calls),
            ("hours", b.max_hours, round(self.writer.elapsed_s / 3600, 2)), ("USD", b.max_usd, round(c.cost_usd, 4)))
            if limit is not None]
        if left:
            lines.append("Budget left: " + ", ".join(left) + ".")
        best = self.store.best()
        if best is not None:
            from kopt.harness.tools import leaderboard_text
            value, label = score(best.verdict)
            lines.append(f"Best: candidate {best.id:04d}, {label} {value:.4f}.")
            t = best.verdict.timing
            if t is not None and t.geomean_speedup is not None:
                lines.append("  per workload: " + ", ".join(f"{w.workload} {w.speedup:.3f}x" for w in t.workloads))
            lines.append(leaderboard_text(self.store))
        else:
            lines.append("No passing candidate yet.")
        if p.recent:
            lines.append("Recent evaluations (oldest first):\n" + "\n".join(f"  {r}" for r in p.recent))
        if p.since_improvement:
            lines.append(f"Evaluations since the last improvement: {p.since_improvement} (warning at "
                         f"{self.ws.config.stall.warn_after}, context restart at {self.ws.config.stall.redesign_after}).")
        notes = tail(self.ws.notes, NOTES_IN_STATUS_CHARS)  # the tail only: NOTES.md grows all run long
        if notes.strip() and notes.strip() != "# Notes":
            lines.append("NOTES.md (end):\n" + notes)
        return "\n".join(lines)

    def checkpoint(self) -> None:
        self.checkpointed = time.monotonic()
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
            self.record("run_resume", tool_calls=self.counters.tool_calls, evaluations=self.counters.evaluations,
                        pending=[], removed_stop_file=False)
            stop = self._end(Stop("finished", "recorded before an interruption"))
            self.writer.close()
            return stop
        if self.fresh:
            head: list[Message] = [
                SystemMessage(content=SYSTEM_PROMPT.format(editable=self.ws.config.editable_file)),
                UserMessage(content=self.ws.root.joinpath("instruction.md").read_text())]
            self.record("run_start", config=self.ws.config.model_dump(mode="json", exclude={"secret"}),
                        messages=[m.model_dump() for m in head], model=self.model.name,
                        context_tokens=self.context_tokens)
            context = Context(self.context_tokens, head)
        else:
            context = Context(self.context_tokens, self.state.head, self.state.window, self.state.summary)
            stop_file = self.ws.root / STOP_FILE
            consumed = stop_file.exists()
            if consumed:
                stop_file.unlink()
            self.record("run_resume", tool_calls=self.counters.tool_calls, evaluations=self.counters.evaluations,
                        pending=[c.id for c, _ in self.state.pending], removed_stop_file=consumed)
        agent = Agent(self.model, self.tools, self, context, self.before_request, self.status_text, self.summarize)
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


def tail(path: Path, max_chars: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - max_chars))
        return f.read().decode(errors="replace")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
