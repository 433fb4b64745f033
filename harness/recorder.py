"""The recorder: the one place a run's events are written, folded and checkpointed.

Every driver of the tools (kopt's own loop, the MCP server) records through it, so each
writes the same trajectory and resumes the same way: `call` is the whole life of one tool
call (tool_call, what the tool records itself: evaluation, forbidden; tool_result; checkpoint).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from kopt.agent.context import Compaction
from kopt.agent.messages import Message, ModelResponse, ToolCall, UserMessage
from kopt.agent.model import RetryEvent
from kopt.harness import events as ev
from kopt.harness.candidates import LABELS
from kopt.harness.fold import Fold, belongs
from kopt.harness.interrupts import StopNow
from kopt.harness.tools import ToolBox, ToolOutcome, sha_of
from kopt.harness.trajectory import TRAJECTORY, Writer, write_atomic

CHECKPOINT_EVERY_S = 5.0
STATE = "state.json"


class Recorder:
    def __init__(self, root: Path, fold: Fold, on_event: Callable[[ev.Base], None] | None = None):
        """`fold`: of the events the log already holds; the writer continues after them."""
        self.root = root
        self.fold = fold
        last = self.fold.last
        self.writer = Writer(root / TRAJECTORY, next_seq=(last.seq + 1) if last else 0,
                             elapsed_offset_s=last.elapsed_s if last else 0.0)
        self.on_event = on_event
        self.checkpointed = 0.0
        self.lock = threading.RLock()  # the verifier's threads record an evaluation's progress
        self.totals = fold  # the run's counts (tool call and request indices), whoever records
        self.agent: int | None = None
        self.lanes: dict[int, Fold] = {}  # agent -> its fold, in a run of several agents
        self.closed = False

    def lane(self, agent: int, fold: Fold) -> "Lane":
        """The recorder as one agent of several uses it: its events stamped with its id, folded into its
        fold as well as the run's."""
        self.lanes[agent] = fold
        return Lane(self, agent, fold)

    @property
    def elapsed_s(self) -> float:
        return self.writer.elapsed_s

    def record(self, event: ev.Base) -> ev.Base:
        with self.lock:
            if self.closed:  # an agent's thread left running by a stop-now: nothing after the run's end
                raise StopNow("the run has stopped: this event is not recorded (its step is redone on resume)")
            self.writer.append(event)
            self.fold.apply(event)
            for agent, fold in self.lanes.items():
                if belongs(event, agent):
                    fold.apply(event)
            if self.on_event:
                self.on_event(event)
        return event

    # ---- a tool call, from any driver
    def call(self, tools: ToolBox, call: ToolCall) -> ToolOutcome:
        retry = call.id in self.fold.started  # started before a crash, never answered: redone, counted once
        target = tools.target_of(call)
        index = self.totals.counters.tool_calls + (0 if retry else 1)
        tools.tool_index = index
        self.record(ev.ToolCallEvent(index=index, call=call, pre_sha=sha_of(target) if target is not None else None,
                                     retry=retry))
        start = time.monotonic()
        outcome = tools.execute(call)
        self.tool_result(call, outcome, time.monotonic() - start)
        return outcome

    def tool_result(self, call: ToolCall, outcome: ToolOutcome, duration_s: float) -> None:
        self.record(ev.ToolResult(call_id=call.id, name=call.name, content=outcome.content, is_error=outcome.is_error,
                                  duration_s=round(duration_s, 4),
                                  outcome="forbidden" if outcome.forbidden else "error" if outcome.is_error else "ok"))
        if call.name == "evaluate" or time.monotonic() - self.checkpointed >= CHECKPOINT_EVERY_S:
            self.checkpoint()  # derived data: the log alone is enough to resume, so not on every step

    # ---- the model's side (the agent loop's Recorder protocol)
    def model_request(self, messages: list[Message]) -> None:
        self.record(ev.ModelRequest(index=self.totals.counters.model_requests, n_messages=len(messages),
                                    chars=sum(len(getattr(m, "content", None) or "") for m in messages)))

    def model_response(self, response: ModelResponse) -> None:
        self.record(ev.ModelResponseEvent(index=self.totals.counters.model_responses, response=response))

    def user_message(self, message: UserMessage) -> None:
        self.record(ev.UserMessage(content=message.content))

    def compaction(self, compaction: Compaction, usage: Any) -> None:
        self.record(ev.Compaction(drop=compaction.drop, tokens_before=compaction.tokens_before,
                                  tokens_after=compaction.tokens_after, summary=compaction.summary, usage=usage))

    def model_retry(self, retry: RetryEvent) -> None:
        self.record(ev.ModelRetry(index=self.totals.counters.model_requests - 1, **asdict(retry)))
        self.checkpoint()

    # ---- sessions
    def run_end(self, reason: str, detail: str) -> None:
        self.record(ev.RunEnd(reason=reason, detail=detail[:4000]))
        self.checkpoint()

    def checkpoint(self) -> None:
        """state.json: a small summary of the fold and where the log ends (the log alone can rebuild it)."""
        with self.lock:  # (agents of one run checkpoint from their own threads)
            self._checkpoint()

    def _checkpoint(self) -> None:
        self.checkpointed = time.monotonic()
        best = self.fold.best
        write_atomic(self.root / STATE, json.dumps({
            "seq": self.writer.seq, "offset": self.writer.offset(), "elapsed_s": round(self.writer.elapsed_s, 3),
            "counters": asdict(self.fold.counters),
            "best": {"candidate": best.candidate if best else None, "score": best.score if best else None,
                     "label": LABELS.get(best.kind or "", "") if best else ""}}, indent=1))

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.writer.close()


class Lane(Recorder):
    """One agent's view of the run's recorder (Recorder.lane): the same log, lock and checkpoint."""

    def __init__(self, base: Recorder, agent: int, fold: Fold):
        self.base, self.agent, self.fold, self.totals = base, agent, fold, base.fold
        self.root, self.writer, self.lock = base.root, base.writer, base.lock

    def record(self, event: ev.Base) -> ev.Base:
        if event.agent is None:
            event.agent = self.agent
        return self.base.record(event)

    def checkpoint(self) -> None:
        self.base.checkpoint()

    @property
    def checkpointed(self) -> float:
        return self.base.checkpointed

    @property
    def closed(self) -> bool:
        return self.base.closed

    def close(self) -> None:
        pass  # the run's recorder closes the log


class Recorded:
    """A ToolBox seen through the recorder: what a driver offers a model and calls."""

    def __init__(self, tools: ToolBox, recorder: Recorder):
        self.tools, self.recorder = tools, recorder

    def specs(self):
        return self.tools.specs()

    def execute(self, call: ToolCall) -> ToolOutcome:
        return self.recorder.call(self.tools, call)
