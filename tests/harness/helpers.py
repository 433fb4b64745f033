"""Builders for harness tests: a run directory on a real task, a canned verdict, a scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from kopt.agent.messages import AssistantMessage, Message, ModelResponse, ToolCall, ToolSpec, Usage
from kopt.harness.workspace import Budgets, RunConfig, Workspace
from kopt.verifier.task import load_task
from kopt.verifier.verdict import CompileReport, Timing, Verdict


def make_workspace(root: Path, task_name: str = "rmsnorm", budgets: Budgets = Budgets()) -> Workspace:
    task = load_task(task_name)
    config = RunConfig(run_id="test", task=str(task.root), task_hash=task.hash,
                       editable_file=task.config.editable_file, model="scripted", budgets=budgets, secret=7)
    return Workspace.create(root, config, task.baseline_path, task.instruction_text())


def verdict(ok: bool = True, ratio: float = 1.0, reason: str | None = None, gpu: bool = False) -> Verdict:
    timing = Timing(label="gpu", geomean_speedup=ratio, noise_band=0.01) if gpu else \
        Timing(label="interpreter (CPU)", interpreter_ratio=ratio)
    return Verdict(status="ok" if ok else "rejected", reason=reason, task="rmsnorm", task_hash="x", kernel_sha256="y",
                   device="cuda" if gpu else "cpu", target="sm_90", phase=None if ok else "correctness",
                   timing=timing if ok else None)


class FakeVerifier:
    """Scores a source by a number found in it (so tests control rankings); records every call."""

    def __init__(self, gpu: bool = False):
        self.calls: list[tuple[str, int]] = []
        self.gpu = gpu  # GPU speedups, else interpreter ratios

    def evaluate(self, source: str, candidate_id: int) -> Verdict:
        self.calls.append((source, candidate_id))
        if "BROKEN" in source:
            return verdict(False, reason="correctness: wrong result", gpu=self.gpu)
        ratio = 1.0 + 0.1 * source.count("FAST")
        return verdict(True, ratio, gpu=self.gpu)

    def compile(self, source: str) -> CompileReport:
        return CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True)


def call(name: str, args: Any = None, raw: str | None = None, cid: str | None = None) -> ToolCall:
    return ToolCall(id=cid or f"c-{name}", name=name, arguments=raw if raw is not None else json.dumps(args or {}))


class ScriptedModel:
    """Plays a list of turns; each turn is a list of tool calls or a callable(messages) -> turn."""

    name = "scripted"

    def __init__(self, turns: list[Any]):
        self.turns = turns
        self.seen: list[list[Message]] = []

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        self.seen.append(list(messages))
        index = sum(isinstance(m, AssistantMessage) for m in messages)
        turn = self.turns[index] if index < len(self.turns) else [call("finish", {"summary": "script over"},
                                                                         cid=f"end-{index}")]
        if callable(turn):
            turn = turn(messages)
        if isinstance(turn, str):
            return ModelResponse(message=AssistantMessage(content=turn), model=self.name,
                                 usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.001))
        calls = [c.model_copy(update={"id": f"{c.id}-{index}"}) for c in turn]
        return ModelResponse(message=AssistantMessage(content=f"turn {index}", tool_calls=calls), model=self.name,
                             usage=Usage(input_tokens=100, output_tokens=20, cost_usd=0.01))


Turn = list[ToolCall] | str | Callable[[list[Message]], Any]
