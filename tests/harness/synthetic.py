"""Synthetic run directories for the inspection tests and benchmark: a known history, written fast.

Events are the real event models (harness.events) written by the real trajectory.Writer (fsync
off) with a settable clock, candidates go through the real CandidateStore, so the files have
exactly the format a run writes, and a test knows every number in them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kopt.agent.messages import AssistantMessage, ModelResponse, SystemMessage, ToolCall, Usage, UserMessage
from kopt.harness import events as ev
from kopt.harness import traps
from kopt.harness.candidates import CandidateStore, score
from kopt.harness.trajectory import TRAJECTORY, Writer
from kopt.harness.workspace import RUN_JSON, Budgets, RunConfig
from kopt.verifier.verdict import (INTERPRETER_LABEL, CaseResult, CompileReport, KernelResources, Timing, Verdict,
                                   WorkloadTiming)

WORKLOADS = ("W1", "W2", "W3")
BASELINE = "import triton\n\nBLOCK = 64\nNUM_WARPS = 4\n\n\ndef kernel_fn(x):\n    return x\n"


@dataclass
class RunSpec:
    """One synthetic run: what each evaluation gives, and what happens around it."""

    # per evaluation: a passing score, or the phase a failure stopped in; "gate:import+host-read" names the
    # gate's rules, "correctness:R2+hidden" the cases that failed, "timing:integrity" an integrity rejection
    outcomes: list[float | str]
    model: str = "openai:alpha"
    task: str = "rmsnorm"
    gpu: bool = False  # GPU geomean speedups, else interpreter (CPU) ratios
    gpu_name: str = "NVIDIA H100"  # the GPU model that timed a GPU run
    simulated: bool = False  # simulated ratios (neither GPU nor interpreter)
    stall_warnings: int = 0  # stall_warning events, after the last evaluation
    facts: bool = True  # evaluation events carry the verdict's facts (False: a log written before they existed)
    calls_per_eval: int = 3  # tool calls per evaluation, the evaluate call included
    seconds_per_call: float = 10.0
    tokens: tuple[int, int] = (100, 20)  # (input, output) per model response
    cost_usd: float = 0.01  # per model response
    forbidden: int = 0  # forbidden attempts, made before the first evaluation
    redesigns: int = 0  # redesign events, after the last evaluation
    end: str | None = "budget"  # run_end reason; None: the run stopped without one (killed)
    budgets: Budgets = field(default_factory=lambda: Budgets(max_evals=1000, max_tool_calls=100_000))
    content_chars: int = 200  # size of each read_file result
    agents: list[int] | None = None  # a run of several agents: the agent of each evaluation (None: one agent)
    agent_ends: dict[int, str] = field(default_factory=dict)  # agent -> its agent_end reason (recorded before run_end)


class ClockWriter(Writer):
    """A Writer whose run clock the generator sets, so elapsed times are known."""

    now_s = 0.0
    agent: int | None = None  # the agent whose events are being written (a run of several)

    @property
    def elapsed_s(self) -> float:
        return self.now_s

    def append(self, event, /, **data):
        if self.agent is not None and not isinstance(event, str) and event.agent is None and not isinstance(
                event, (ev.RunStart, ev.RunResume, ev.RunEnd)):
            event.agent = self.agent
        return super().append(event, **data)


def rejection(outcome: str, index: int) -> dict:
    phase, _, detail = outcome.partition(":")
    names = detail.split("+") if detail else []
    if phase == "gate" and names:
        return {"phase": "gate", "reason": "static gate: " + "; ".join(f"line {i + 3}: [{n}] not allowed"
                                                                       for i, n in enumerate(names))}
    if phase == "correctness" and names:
        cases = [CaseResult(case=f"hidden-{i}" if n == "hidden" else n, dtype="float32", hidden=n == "hidden",
                            passed=False, reason="mismatch") for i, n in enumerate(names)]
        cases.append(CaseResult(case="R9", dtype="float32", passed=True))
        return {"phase": "correctness", "reason": f"{len(names)} of {len(cases)} case runs failed", "cases": cases}
    if phase == "timing":
        return {"phase": "timing", "reason": "timing integrity on W1: faster than the roofline floor"}
    return {"phase": outcome, "reason": f"{outcome}: case {index} failed"}


def verdict_for(outcome: float | str, index: int, gpu: bool, gpu_name: str = "NVIDIA H100",
                simulated: bool = False) -> Verdict:
    compile_ = CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True, kernels=[
        KernelResources(name="_k", num_warps=4, num_stages=2, shared_bytes=1024 * (1 + index % 4),
                        registers=32 + index % 64, spill_bytes=index % 3 * 8, compile_s=0.1),
        KernelResources(name="_k2", num_warps=4, num_stages=2, shared_bytes=512, registers=40, spill_bytes=4,
                        compile_s=0.1)])
    common = dict(task="rmsnorm", task_hash="h", kernel_sha256=f"s{index}", device="cuda" if gpu else "cpu",
                  target="sm_90", compile=compile_, versions={"gpu_name": gpu_name} if gpu else {})
    if isinstance(outcome, str):
        return Verdict(status="rejected", **rejection(outcome, index), **common)
    if simulated:
        workloads = [WorkloadTiming(workload=w, label="simulated", baseline_ms=1.0, candidate_ms=1.0 / outcome,
                                    speedup=outcome) for w in WORKLOADS]
        timing = Timing(label="simulated", kind="simulated", workloads=workloads, geomean_speedup=outcome)
        return Verdict(status="ok", timing=timing, **common)
    label = "gpu" if gpu else INTERPRETER_LABEL
    # per-workload speedups whose geometric mean is the score: s/f, s, s*f
    workloads = [WorkloadTiming(workload=w, label=label, baseline_ms=1.0, candidate_ms=1.0 / v, speedup=v)
                 for w, v in zip(WORKLOADS, (outcome / 1.1, outcome, outcome * 1.1))]
    timing = Timing(label=label, workloads=workloads, geomean_speedup=outcome if gpu else None,
                    interpreter_ratio=None if gpu else outcome, noise_band=0.01 if gpu else None)
    return Verdict(status="ok", timing=timing, **common)


def make_run(root: Path, spec: RunSpec) -> Path:
    root.mkdir(parents=True)
    config = RunConfig(run_id=root.name, task=f"/elsewhere/kernels/{spec.task}", task_hash="h",
                       editable_file="kernel.py", model=spec.model, budgets=spec.budgets, secret=7,
                       agents=max(spec.agents) + 1 if spec.agents else 1)
    (root / RUN_JSON).write_text(config.model_dump_json(indent=2))
    (root / "kernel.py").write_text(BASELINE)
    store = CandidateStore(root)
    w = ClockWriter(root / TRAJECTORY, fsync=False)
    messages = [SystemMessage(content="You are a GPU kernel engineer."), UserMessage(content="Make the kernel fast.")]
    w.append(ev.RunStart(trajectory_format=ev.TRAJECTORY_FORMAT, config=json.loads(config.model_dump_json()), messages=messages, model=spec.model,
                         context_tokens=32000))
    counter = {"calls": 0, "responses": 0}

    def turn(name: str, arguments: dict, content: str | None = None, forbidden: str | None = None,
             evaluate=None) -> None:
        counter["calls"] += 1
        call = ToolCall(id=f"c{counter['calls']}", name=name, arguments=json.dumps(arguments))
        w.now_s += spec.seconds_per_call / 2
        w.append(ev.ModelRequest(index=counter["responses"], n_messages=2 + 2 * counter["calls"], chars=1000))
        w.append(ev.ModelResponseEvent(index=counter["responses"], response=ModelResponse(
            message=AssistantMessage(content=f"step {counter['calls']}", tool_calls=[call]),
            usage=Usage(input_tokens=spec.tokens[0], output_tokens=spec.tokens[1], cost_usd=spec.cost_usd),
            model=spec.model, latency_s=1.0, stop_reason="tool_calls")))
        counter["responses"] += 1
        w.append(ev.ToolCallEvent(index=counter["calls"], call=call))
        w.now_s += spec.seconds_per_call / 2
        if forbidden:
            w.append(ev.Forbidden(call_id=call.id, name=name, detail=forbidden,
                                  kind="path escape" if spec.facts else None))
        if evaluate is not None:
            content = evaluate()
        w.append(ev.ToolResult(call_id=call.id, name=name, content=content or "", is_error=bool(forbidden),
                               duration_s=0.01, outcome="forbidden" if forbidden else "ok"))

    for k in range(spec.forbidden):
        turn("read_file", {"path": "../verifier/check.py"}, "refused", forbidden="../verifier/check.py leaves the "
                                                                                 "workspace")
    for i, outcome in enumerate(spec.outcomes, 1):
        w.agent = spec.agents[i - 1] if spec.agents else None
        for _ in range(spec.calls_per_eval - 1):
            turn("read_file", {"path": "kernel.py"}, "x" * spec.content_chars)

        def evaluate(i=i, outcome=outcome) -> str:
            candidate = store.snapshot(BASELINE + f"# candidate {i}\n")
            v = verdict_for(outcome, i, spec.gpu, spec.gpu_name, spec.simulated)
            meta = {"note": f"try {i}", "tool_index": counter["calls"],
                    "parent": candidate.id - 1 if candidate.id > 1 else None}
            if w.agent is not None:
                meta["agent"] = w.agent
            store.record(candidate.id, v, meta)
            w.append(ev.Evaluation(candidate=candidate.id, sha256=candidate.sha256, status=v.status, score=score(v)[0],
                                   kind=v.timing.kind if v.timing else None, note=f"try {i}",
                                   **(traps.facts(v) if spec.facts else {})))
            return f"candidate {candidate.id:04d}: {v.status}"
        turn("evaluate", {"note": f"try {i}"}, evaluate=evaluate)
    w.agent = None
    for agent, reason in sorted(spec.agent_ends.items()):
        w.append(ev.AgentEnd(reason=reason, detail=f"{reason} detail", agent=agent))
    for _ in range(spec.stall_warnings):
        w.append(ev.StallWarning(since_improvement=5))
    for n in range(spec.redesigns):
        w.append(ev.Redesign(number=n + 1, best=None, since_improvement=10))
    if spec.end:
        w.append(ev.RunEnd(reason=spec.end, detail=f"{spec.end} detail"))
    w.close()
    return root


def big_run(root: Path, candidates: int = 500, calls_per_eval: int = 5) -> Path:
    """About 21 events per candidate: 500 candidates make a 10,500-event log."""
    outcomes: list[float | str] = []
    for i in range(candidates):
        outcomes.append("correctness" if i % 7 == 3 else 0.8 + 0.002 * i + 0.05 * (i % 5))
    return make_run(root, RunSpec(outcomes=outcomes, calls_per_eval=calls_per_eval, seconds_per_call=3.0,
                                  content_chars=2000))
