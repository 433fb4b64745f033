"""The trajectory's vocabulary: one pydantic model per event type, one adapter (EVENT) for all.

Every line of trajectory.jsonl is one of these, tagged by `type`. Writers build them, readers
get them back typed; `run_start` says which trajectory format the log was written in.
Adding an event type: a class here with its `type` literal, and its name in EVENTS.

Format 1 (kopt before the typed record) is migrated on read (`migrate_v1`); a log of a
format this kopt does not know is refused with a clear message.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError

from kopt.agent.messages import Message, ModelResponse, ToolCall, Usage
from kopt.harness.config import Budgets

TRAJECTORY_FORMAT = "4"
FORMATS = ("1", "2", "3", "4")  # formats this kopt reads: "1" is migrated on read; "2" lacks only what
# format 3 added (evaluation_progress, run_resume.budgets/extends), whose defaults say "not recorded";
# "3" lacks only format 4's `agent` (a run of several agents) and agent_end, absent in a one-agent run
ENVELOPE = ("seq", "type", "time", "elapsed_s", "agent")
Kind = Literal["gpu", "interpreter", "simulated"]


class UnsupportedTrajectory(ValueError):
    """A log written in a trajectory format this kopt does not read."""


class Driver(BaseModel):
    """Who made the tool calls of a session: a model through kopt's loop, or an MCP client."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["model", "mcp"]
    name: str  # the model spec, or the client's name from the MCP handshake
    version: str | None = None


class Base(BaseModel):
    """The envelope every event has; the writer stamps it."""

    model_config = ConfigDict(extra="forbid")
    seq: int = 0
    type: str
    time: float = 0.0  # unix time
    elapsed_s: float = 0.0  # run time, continuous across resumes (downtime excluded)
    agent: int | None = None  # in a run of several agents, whose event it is (None: the run's own, or the one agent)

    @property
    def data(self) -> dict[str, Any]:
        """The event's own fields as JSON data (without the envelope)."""
        return self.model_dump(mode="json", exclude=set(ENVELOPE))


class RunStart(Base):
    type: Literal["run_start"] = "run_start"
    trajectory_format: str  # TRAJECTORY_FORMAT when written; absent (format 1) before
    config: dict[str, Any]  # run.json without its secret
    messages: list[Message]  # the context's fixed head: system prompt and instruction
    model: str
    context_tokens: int
    driver: Driver | None = None  # None in format 1: a model, named by `model`


class RunResume(Base):
    type: Literal["run_resume"] = "run_resume"
    tool_calls: int
    evaluations: int
    pending: list[str]  # tool calls cut off by the interruption, finished now
    removed_stop_file: bool
    driver: Driver | None = None
    budgets: Budgets | None = None  # the budgets from here on, when this segment changed them (totals over the run)
    extends: str | None = None  # the end reason of a run this segment extends (finished, budget, stalled, ...)


class RunEnd(Base):
    type: Literal["run_end"] = "run_end"
    reason: str
    detail: str = ""


class AgentEnd(Base):
    """One agent of several stopped (the others go on; the run ends when all have)."""

    type: Literal["agent_end"] = "agent_end"
    reason: str
    detail: str = ""


class ModelRequest(Base):
    type: Literal["model_request"] = "model_request"
    index: int
    n_messages: int
    chars: int


class ModelResponseEvent(Base):
    type: Literal["model_response"] = "model_response"
    index: int
    response: ModelResponse


class ModelRetry(Base):
    type: Literal["model_retry"] = "model_retry"
    index: int
    attempt: int
    error: str
    status: int | None
    wait_s: float


class UserMessage(Base):
    type: Literal["user_message"] = "user_message"
    content: str


class ToolCallEvent(Base):
    type: Literal["tool_call"] = "tool_call"
    index: int  # tool calls so far, this one included
    call: ToolCall
    pre_sha: str | None = None  # the changed file's hash before a mutating call (exact resume)
    retry: bool = False  # redone after a crash cut it off: counted once


class ToolResult(Base):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool
    duration_s: float
    outcome: Literal["ok", "error", "forbidden"]


class Evaluation(Base):
    """The verdict's summary; the rest is in candidates/NNNN.json (harness.candidates.read)."""

    type: Literal["evaluation"] = "evaluation"
    candidate: int
    sha256: str
    status: Literal["ok", "rejected", "error"]
    score: float | None
    kind: Kind | None  # what the score measures; None when nothing was timed
    note: str = ""
    # From the verdict (harness.traps.facts); None in logs written before kopt recorded them.
    phase: str | None = None  # where a candidate that did not pass stopped: gate, compile, correctness, ...
    traps: list[str] | None = None  # the traps that rejected it (harness.traps keys)
    workloads: dict[str, float] | None = None  # a pass's per-workload speedups (interpreter ratios on CPU)
    measured_on: str | None = None  # the GPU model that timed it (the target, for a simulated device)


class EvaluationProgress(Base):
    """What the evaluation in progress is doing (recorded at most every few seconds): for the live view and
    `kopt status`, never a result. An evaluation cut off by an interruption leaves these behind and no
    `evaluation`; it is redone on resume."""

    type: Literal["evaluation_progress"] = "evaluation_progress"
    candidate: int
    phase: str  # gate | checking | check | timing (verifier.progress)
    done: int = 0  # case runs judged so far
    total: int = 0
    message: str = ""


class EvaluationCached(Base):
    type: Literal["evaluation_cached"] = "evaluation_cached"
    candidate: int


class Forbidden(Base):
    type: Literal["forbidden"] = "forbidden"
    call_id: str
    name: str
    detail: str
    kind: str | None = None  # absolute path, path escape, off-limits file, ... (harness.traps)


class Compaction(Base):
    type: Literal["compaction"] = "compaction"
    drop: int
    tokens_before: int
    tokens_after: int
    summary: str | None = None
    usage: Usage | None = None


class Redesign(Base):
    type: Literal["redesign"] = "redesign"
    number: int
    best: int | None
    since_improvement: int


class StallWarning(Base):
    type: Literal["stall_warning"] = "stall_warning"
    since_improvement: int


class Unknown(Base):
    """An event type this kopt does not know (kept as written; nothing folds it)."""

    model_config = ConfigDict(extra="allow")


EVENTS = (RunStart, RunResume, RunEnd, ModelRequest, ModelResponseEvent, ModelRetry, UserMessage, ToolCallEvent,
          ToolResult, Evaluation, EvaluationProgress, EvaluationCached, Forbidden, Compaction, Redesign, StallWarning, AgentEnd)
BY_TYPE = {cls.model_fields["type"].default: cls for cls in EVENTS}


def _tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BY_TYPE else "unknown"


Event = Annotated[Union[tuple(Annotated[cls, Tag(name)] for name, cls in BY_TYPE.items())  # noqa: UP007
                        + (Annotated[Unknown, Tag("unknown")],)], Discriminator(_tag)]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def make(event_type: str, /, **data: Any) -> Base:
    """An event from its type name and fields, validated (for writers that hold plain data)."""
    return EVENT.validate_python({"type": event_type, **data})


def dump(event: Base) -> bytes:
    return event.model_dump_json(exclude={"agent"} if event.agent is None else None).encode()


def parse(line: bytes) -> Base:
    """One log line as its event: validated as written, else migrated from format 1.

    Raises ValueError (a line that is no event) or UnsupportedTrajectory.
    """
    try:
        event = EVENT.validate_json(line)
    except ValidationError:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object") from None
        check_format(obj)
        try:
            event = EVENT.validate_python(migrate_v1(obj))
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
    if isinstance(event, RunStart):
        check_format({"type": "run_start", "trajectory_format": event.trajectory_format})
    return event


def check_format(obj: dict[str, Any]) -> None:
    if obj.get("type") == "run_start" and obj.get("trajectory_format", "1") not in FORMATS:
        raise UnsupportedTrajectory(
            f"this log is in trajectory format {obj['trajectory_format']!r}, written by a newer kopt; this kopt "
            f"reads formats {', '.join(FORMATS)}: upgrade kopt to resume or inspect this run")


def kind_of_label(label: str | None) -> Kind | None:
    if not label:
        return None
    return "interpreter" if "interpreter" in label else "simulated" if "simulated" in label else "gpu"


def migrate_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A format-1 event in today's shape. Format 1 had no version field and kept a flattened
    verdict in each evaluation event (phase, reason, label, wall time): those stay in the
    candidate's file, which is where every reader now takes them from."""
    kind = obj.get("type")
    if kind == "run_start":
        return {**obj, "trajectory_format": obj.get("trajectory_format", "1")}
    if kind == "evaluation" and "kind" not in obj:
        keep = {k: obj[k] for k in (*ENVELOPE, "candidate", "sha256", "status", "score", "note") if k in obj}
        return {**keep, "kind": kind_of_label(obj.get("score_label"))}
    return obj

