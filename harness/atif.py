"""`kopt export --atif`: a run's trajectory as ATIF (the Agent Trajectory Interchange Format of Harbor).

The `atif` package's pydantic models build and validate the document. Mapping:
- run_start's system and user messages, and later user messages -> system / user steps;
- each model response -> one agent step (text, reasoning, tool calls, token metrics); the
  results of its tool calls are that step's observation, each result's `extra` holding the
  kopt outcome and, for `evaluate`, the evaluation (candidate id, status, score and label);
- every other kopt event (resume, run end, compaction, redesign, stall warning, retry) ->
  a system step whose `extra` holds the event as recorded;
- candidates with their verdict summaries (per-workload speedups, compile figures), the run's
  config (without its secret) and best score -> the trajectory's `extra["kopt"]`.
The builtin model is no LLM: its steps say `llm_call_count: 0` and carry no metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import atif

import kopt
from kopt.agent.messages import ToolCall
from kopt.harness import events as ev
from kopt.harness.candidates import LABELS
from kopt.harness.inspect import RunView, history, load
from kopt.harness.panel import describe
from kopt.harness.tools import TOOLS
from kopt.harness.trajectory import Event

SCHEMA_VERSION = "ATIF-v1.8"
SYSTEM_EVENTS = {"run_resume", "run_end", "compaction", "redesign", "stall_warning", "model_retry"}


def iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone.utc).isoformat().replace("+00:00", "Z")


def tool_call(call: ToolCall) -> atif.ToolCall:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if isinstance(arguments, dict):
        return atif.ToolCall(tool_call_id=call.id, function_name=call.name, arguments=arguments)
    return atif.ToolCall(tool_call_id=call.id, function_name=call.name, arguments={},
                         extra={"raw_arguments": call.arguments})  # malformed: kept verbatim


def evaluation_data(view: RunView, event: ev.Evaluation) -> dict[str, Any]:
    """The evaluation event, with its verdict's phase, reason and label from the candidate's file."""
    phase, reason = view.details(event.candidate)
    return {**event.data, "phase": phase, "reason": reason, "score_label": LABELS.get(event.kind or "", "")}


def steps_of(view: RunView) -> list[dict[str, Any]]:
    """The steps as plain dicts (validated together at the end); tool results join the step of their call."""
    steps: list[dict[str, Any]] = []
    owner: dict[str, dict[str, Any]] = {}  # tool call id -> the agent step that made it
    tool_index: dict[str, int] = {}
    attached: dict[str, dict[str, Any]] = {}  # call id -> evaluation / forbidden data for its result
    last_call: str | None = None
    request: dict[str, Any] | None = None
    deterministic = view.model == "builtin"

    def system(event: Event, message: str, **extra: Any) -> None:
        steps.append({"source": "system", "timestamp": iso(event.time), "message": message,
                      "extra": {"kopt_event": event.type, "seq": event.seq, "elapsed_s": event.elapsed_s, **extra}})

    for event in view.events or []:
        if isinstance(event, ev.RunStart):
            for m in event.messages:
                steps.append({"source": "system" if m.role == "system" else "user", "timestamp": iso(event.time),
                              "message": m.content or "", "extra": {"seq": event.seq}})
        elif isinstance(event, ev.ModelRequest):
            request = {"n_messages": event.n_messages, "chars": event.chars}
        elif isinstance(event, ev.ModelResponseEvent):
            r = event.response
            m, usage = r.message, r.usage
            step = {"source": "agent", "timestamp": iso(event.time), "model_name": r.model,
                    "message": m.content or "", "tool_calls": [tool_call(c) for c in m.tool_calls] or None,
                    "extra": {"seq": event.seq, "elapsed_s": event.elapsed_s, "latency_s": r.latency_s,
                              "stop_reason": r.stop_reason, "request": request}}
            if deterministic:
                step["llm_call_count"] = 0
            else:
                step["reasoning_content"] = m.reasoning
                step["metrics"] = atif.Metrics(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens,
                                               cost_usd=usage.cost_usd)
            for c in m.tool_calls:
                owner[c.id] = step
            steps.append(step)
            request = None
        elif isinstance(event, ev.ToolCallEvent):
            last_call = event.call.id
            tool_index[last_call] = event.index
        elif isinstance(event, ev.Evaluation) and last_call is not None and last_call not in attached:
            attached[last_call] = {"evaluation": evaluation_data(view, event)}
        elif isinstance(event, ev.Forbidden):
            attached[event.call_id] = {"forbidden": event.detail}
        elif isinstance(event, ev.ToolResult):
            call_id = event.call_id
            extra = {"seq": event.seq, "tool": event.name, "is_error": event.is_error, "outcome": event.outcome,
                     "duration_s": event.duration_s, "tool_call_index": tool_index.get(call_id),
                     **attached.pop(call_id, {})}
            step = owner.get(call_id)
            if step is None:  # a result without a recorded call (an MCP client's, or cut off): a system step
                system(event, event.content, call_id=call_id, **extra)
                continue
            step.setdefault("results", []).append(atif.ObservationResult(
                source_call_id=call_id, content=event.content, extra=extra))
        elif isinstance(event, ev.UserMessage):
            steps.append({"source": "user", "timestamp": iso(event.time), "message": event.content,
                          "extra": {"seq": event.seq}})
        elif isinstance(event, ev.Evaluation):
            system(event, describe(event), **evaluation_data(view, event))
        elif event.type in SYSTEM_EVENTS:
            system(event, describe(event), **event.data)
    return steps


def export(root: Path) -> atif.Trajectory:
    view = load(root, keep_events=True)
    steps = []
    for number, step in enumerate(steps_of(view), 1):
        results = step.pop("results", None)
        steps.append(atif.Step(step_id=number, observation=atif.Observation(results=results) if results else None,
                               **{k: v for k, v in step.items() if v is not None}))
    c, best = view.counters, view.best
    config = {k: v for k, v in view.config.items() if k != "secret"}  # the verifier's seed secret stays home
    candidates = [asdict(row) for row in history(view)]
    summary = {"tool_calls": c.tool_calls, "evaluations": c.evaluations, "failed_evaluations": c.failed_evaluations,
               "forbidden": c.forbidden, "model_retries": c.retries, "redesigns": view.redesigns,
               "elapsed_s": view.elapsed_s, "end": list(view.end) if view.end else None,
               "best_candidate": best.candidate if best else None, "best_score": best.score if best else None,
               "score_label": view.label}
    tools = [{"type": "function", "function": {"name": s.name, "description": s.description,
                                               "parameters": s.parameters}} for s in (t.spec for t in TOOLS.values())]
    return atif.Trajectory(
        schema_version=SCHEMA_VERSION, session_id=view.run_id,
        agent=atif.Agent(name="kopt", version=kopt.__version__, model_name=view.model, tool_definitions=tools),
        steps=steps, notes="kopt run exported from trajectory.jsonl; kopt-specific data is under `extra`.",
        final_metrics=atif.FinalMetrics(total_prompt_tokens=c.input_tokens, total_completion_tokens=c.output_tokens,
                                        total_cost_usd=c.cost_usd, total_steps=len(steps), extra=summary),
        extra={"kopt": {"run_id": view.run_id, "task": view.task, "config": config, "summary": summary,
                        "candidates": candidates}})


def write(root: Path, out: Path) -> Path:
    document = export(root)
    Path(out).write_text(json.dumps(document.to_json_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    return Path(out)
