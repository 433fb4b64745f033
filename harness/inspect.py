"""Reading run directories after the fact or while a run writes them: status, history, compare.

Everything comes from the run directory's own files (run.json, trajectory.jsonl, candidates/),
never from the paths run.json names, so a run copied from another machine reads the same.
The log is streamed with `trajectory.iter_events`, which stops at a torn last line and never
repairs it: reading is safe while `kopt run` appends.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from kopt.harness import events as ev
from kopt.harness import traps
from kopt.harness.candidates import read as read_candidate
from kopt.harness.candidates import score
from kopt.harness.config import Budgets
from kopt.harness.fold import Counters, Evaluated, Fold, budgets_of
from kopt.harness.trajectory import TRAJECTORY, Event, UnsupportedTrajectory, iter_events
from kopt.harness.workspace import RUN_JSON, STOP_FILE
from kopt.verifier.verdict import INTERPRETER_LABEL

QUIET_S = 900.0  # no run_end and no event for this long (plus a retry's announced wait): stopped, not running
REACH = 0.9  # compare: effort to reach this fraction of the run's best score
KIND_NAMES = {"gpu": "GPU", "interpreter": INTERPRETER_LABEL, "simulated": "simulated"}
Evaluation = Evaluated  # one evaluation event and where in the run it happened (harness.fold)

__all__ = ["RunView", "NotARun", "load", "history", "compare", "metrics", "read_candidate", "CandidateRow",
           "Counters", "Evaluation", "AgentView"]


@dataclass
class AgentView:
    """One agent of a run of several, from the fold: its evaluations, its best, and how it ended."""

    agent: int
    evaluations: int  # evaluation events it recorded (failed ones included)
    failed: int  # of those, the ones that did not pass
    best: Evaluated | None  # its best passing evaluation (None: nothing passed yet)
    end: tuple[str, str] | None  # (reason, detail) of its agent_end; None: no end recorded
    state: str  # "live", "ended: REASON", or the run's state when the run stopped without the agent's end

    @property
    def name(self) -> str:
        return f"agent {self.agent}"


@dataclass
class RunView:
    """What a run directory says: its config and the fold of its log (harness.fold), read in one pass."""

    root: Path
    config: dict[str, Any]
    fold: Fold = field(default_factory=Fold)
    events: list[Event] | None = None  # every event, when asked for (the report's transcript)

    # the fold's figures, by the names readers use
    counters = property(lambda self: self.fold.counters)
    evaluations = property(lambda self: self.fold.evaluations)
    best = property(lambda self: self.fold.best)
    redesigns = property(lambda self: self.fold.redesigns)
    stall_warnings = property(lambda self: self.fold.stall_warnings)
    resumes = property(lambda self: self.fold.resumes)
    failed_in_row = property(lambda self: self.fold.failed_in_row)
    end = property(lambda self: self.fold.end)
    last = property(lambda self: self.fold.last)
    recent = property(lambda self: self.fold.recent)

    @property
    def run_id(self) -> str:
        return self.config.get("run_id") or self.root.name

    @property
    def model(self) -> str:
        """The model, or for a run driven over MCP `mcp:CLIENT` (compare groups by it)."""
        driver = self.fold.driver
        if driver is not None and driver.kind == "mcp":
            return f"mcp:{driver.name}"
        return self.config.get("model", "?")

    @property
    def task(self) -> str:
        return Path(self.config.get("task", "?")).name  # an absolute path on the machine that ran it

    @property
    def elapsed_s(self) -> float:
        return self.last.elapsed_s if self.last else 0.0

    @property
    def label(self) -> str:
        """What the scores are: 'GPU geomean speedup', the interpreter's ratio, or '' before any pass."""
        return next((e.label for e in self.evaluations if e.label), "")

    @property
    def kind(self) -> str:
        """GPU or interpreter (CPU): the two are never compared with each other."""
        if self.fold.kind:
            return KIND_NAMES[self.fold.kind]
        for path in sorted((self.root / "candidates").glob("[0-9][0-9][0-9][0-9].json"))[:1]:  # none passed
            verdict, _ = read_candidate(path)
            if verdict is not None:
                return INTERPRETER_LABEL if verdict.device == "cpu" else "GPU"
        return INTERPRETER_LABEL if self.config.get("device") == "cpu" else "unknown"

    def state(self, now: float | None = None) -> tuple[str, str]:
        """('ended', why) | ('running', ...) | ('stopped', ...) | ('not started', ...), from files alone."""
        if self.end is not None:
            return "ended", f"{self.end[0]}" + (f": {self.end[1]}" if self.end[1] else "")
        if self.last is None:
            return "not started", "no event in the trajectory yet"
        quiet = (now or time.time()) - self.last.time
        wait = float(getattr(self.last, "wait_s", 0) or 0)  # a retry announces its wait
        stopping = " (STOP file present: stopping)" if (self.root / STOP_FILE).exists() else ""
        if quiet <= QUIET_S + wait:
            return "running", f"last event {quiet:.0f} s ago{stopping}"
        return "stopped", (f"no run_end and no event for {quiet / 60:.0f} min: killed or crashed; "
                           f"`kopt resume {self.root}` continues it")

    @property
    def agent_ids(self) -> list[int]:
        """The agents of a run of several (run.json's count, and any the log names); [] for a one-agent run."""
        n = self.config.get("agents") or 1
        ids = set(range(n)) if n > 1 else set()
        ids |= set(self.fold.best_of) | set(self.fold.agent_ends)
        ids |= {e.agent for e in self.evaluations if e.agent is not None}
        return sorted(ids)

    @property
    def several_agents(self) -> bool:
        return bool(self.agent_ids)

    def agents(self, now: float | None = None) -> list[AgentView]:
        """Per agent of a run of several: evaluations, best and end; [] for a one-agent run."""
        ids = self.agent_ids
        if not ids:
            return []
        run_state = self.state(now)[0]
        done = Counter(e.agent for e in self.evaluations)
        failed = Counter(e.agent for e in self.evaluations if e.status != "ok")
        views = []
        for a in ids:
            end = self.fold.agent_ends.get(a)
            state = (f"ended: {end[0]}" if end is not None else "live" if run_state == "running" else
                     f"no end recorded (run {run_state})")
            views.append(AgentView(a, done[a], failed[a], self.fold.best_of.get(a), end, state))
        return views

    def best_found(self) -> str:
        """Who found the run's best and when: 'agent 1 at 2.5 min' ('' when nothing passed or one agent ran)."""
        best = self.best
        if best is None or best.agent is None:
            return ""
        return f"agent {best.agent} at {clock(best.elapsed_s)}"

    def budgets_left(self) -> list[tuple[str, float, float]]:
        """(budget, limit, used) for every budget in force (run.json's, or a later segment's)."""
        budgets = self.fold.budgets or budgets_of(self.config.get("budgets") or {}) or Budgets()
        return self.fold.budget_use(budgets, self.elapsed_s)

    def details(self, candidate: int) -> tuple[str | None, str]:
        """(phase, reason) of a candidate's verdict, from its file."""
        verdict, _ = read_candidate(self.root / "candidates" / f"{candidate:04d}.json")
        return (verdict.phase, verdict.reason or "") if verdict else (None, "")


def clock(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


class NotARun(Exception):
    """The directory holds no readable run.json."""


def read_config(root: Path) -> dict[str, Any]:
    path = root / RUN_JSON
    if not path.is_file():
        raise NotARun(f"{root} is not a kopt run directory (no {RUN_JSON})")
    try:
        config = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise NotARun(f"{path} is unreadable: {exc}") from None
    if not isinstance(config, dict):
        raise NotARun(f"{path} does not hold a run configuration")
    return config


def load(root: Path, keep_events: bool = False) -> RunView:
    """Read a run directory: config and one pass over the complete events of its log."""
    root = Path(root)
    view = RunView(root, read_config(root), events=[] if keep_events else None)
    path = root / TRAJECTORY
    if path.exists():
        try:
            for event in iter_events(path):
                event = complete(event, root)
                view.fold.apply(event)
                if view.events is not None:
                    view.events.append(event)
        except UnsupportedTrajectory as exc:
            raise NotARun(str(exc)) from None
    return view


def complete(event: Event, root: Path) -> Event:
    """An evaluation event from a log written before kopt recorded its verdict's facts (phase, traps,
    per-workload speedups, GPU model), completed from its candidate file so the fold counts them."""
    if not isinstance(event, ev.Evaluation) or event.traps is not None:
        return event
    verdict, _ = read_candidate(root / "candidates" / f"{event.candidate:04d}.json")
    return event if verdict is None else event.model_copy(update=traps.facts(verdict))


# ---- history: every candidate

@dataclass
class CandidateRow:
    id: int
    parent: int | None  # the candidate its source derives from (the fold's lineage; its file's for one never logged)
    elapsed_s: float | None  # run time at its evaluation event (None: its event was never written)
    tool_index: int | None  # tool calls so far at its evaluation
    status: str  # ok | rejected | error | evaluating | interrupted (source snapshotted, no verdict)
    phase: str | None
    reason: str
    score: float | None
    label: str
    workloads: dict[str, float]  # per-workload speedup (an interpreter ratio on CPU)
    max_registers: int | None
    total_spill_bytes: int | None
    max_shared_bytes: int | None
    note: str
    new_best: bool  # raised the best-so-far when it was evaluated
    best: bool  # the run's best
    rescored: list[str] = field(default_factory=list)  # `kopt rescore` results, each with its device
    agent: int | None = None  # the agent that evaluated it, in a run of several (its file's for one never logged)


def history(view: RunView) -> list[CandidateRow]:
    last_eval = {e.candidate: e for e in view.evaluations}  # a re-verified infra error: its latest event
    best_id = view.best.candidate if view.best else None
    new_best = {e.candidate for e in view.evaluations if e.new_best}
    rows = []
    from kopt.harness.rescore import latest
    rescores = latest(view.root)
    sources = sorted((view.root / "candidates").glob("[0-9][0-9][0-9][0-9].py"))
    # a source without a verdict: being verified now, or cut off by a crash
    unjudged = "evaluating" if view.state()[0] == "running" else "interrupted"
    for py in sources:
        cid = int(py.stem)
        verdict, meta = read_candidate(py.with_suffix(".json"))
        e = last_eval.get(cid)
        value, label = score(verdict)
        kernels = verdict.compile.kernels if verdict and verdict.compile else []
        registers = [k.registers for k in kernels if k.registers is not None]
        spills = [k.spill_bytes for k in kernels if k.spill_bytes is not None]
        status = verdict.status if verdict else e.status if e else unjudged if py == sources[-1] else "interrupted"
        rows.append(CandidateRow(
            cid, view.fold.parents[cid] if cid in view.fold.parents else meta.get("parent"), e.elapsed_s if e else None, e.tool_calls if e else meta.get("tool_index"),
            status, verdict.phase if verdict else None, (verdict.reason if verdict else "") or "",
            value if verdict else (e.score if e else None), label or (e.label if e else ""),
            {w.workload: w.speedup for w in verdict.timing.workloads} if verdict and verdict.timing else {},
            max(registers) if registers else None, sum(spills) if spills else None,
            max(k.shared_bytes for k in kernels) if kernels else None,
            meta.get("note") or (e.note if e else ""), cid in new_best, cid == best_id,
            [f"{r.score:.3f} {r.label} on {r.where}" if r.score is not None else f"{r.status} on {r.where}"
             for r in rescores.get(cid, [])],
            e.agent if e is not None and e.agent is not None else meta.get("agent")))
    return rows


# ---- compare: repeated runs per (model, task)

@dataclass
class RunMetrics:
    """One run's figures for `kopt compare`.

    Reaching: scores are positive time ratios (baseline / candidate), higher is better, and a
    run's best may be below 1 (it never beat the baseline). The target is `reach * best` on
    that same ratio scale, i.e. within 10% of the best multiplicatively for reach = 0.9, which
    means the same thing whether the best is 0.5 or 3.0. evals_to_reach is the 1-based index of
    the first evaluation event (failed ones count) whose score is >= the target;
    tool_calls_to_reach is the tool-call count at that evaluation (its evaluate call
    included) and hours_to_reach its run time. A run with no passing evaluation has no best and
    reaches nothing (None).
    """

    run_dir: str
    run_id: str
    model: str
    task: str
    kind: str
    measured_on: str | None  # the GPU model that timed it (GPU scores of different models are never pooled)
    best_score: float | None
    evaluations: int
    tool_calls: int
    evals_to_reach: int | None
    tool_calls_to_reach: int | None
    hours_to_reach: float | None
    tool_calls_per_eval: float | None  # verbosity: tool calls over evaluations
    elapsed_s: float
    tokens: int
    cost_usd: float
    failed_by_phase: dict[str, int]  # evaluations that did not pass, by phase (or status when no phase)
    forbidden: int
    redesigns: int
    stall_warnings: int
    end: str  # run_end reason, or the state of a run without one
    workloads: dict[str, float]  # the best candidate's per-workload speedups (interpreter ratios on CPU)
    traps: dict[str, int]  # harness.traps key -> evaluations (or forbidden actions) it caught in this run
    agents: int = 1  # agents the run had
    best_agent: int | None = None  # in a run of several, the agent that found its best
    agent_bests: dict[int, float | None] = field(default_factory=dict)  # in a run of several: each agent's best

    @property
    def agents_text(self) -> str:
        """'2 agents, best by agent 1 (agent 0 1.1010, agent 1 1.2761)'; '1 agent' for a one-agent run."""
        if self.agents <= 1:
            return "1 agent"
        by = f"best by agent {self.best_agent}" if self.best_agent is not None else "no passing candidate"
        each = ", ".join(f"agent {a} " + ("-" if v is None else f"{v:.4f}") for a, v in self.agent_bests.items())
        return f"{self.agents} agents, {by}" + (f" ({each})" if each else "")


def metrics(view: RunView, reach: float = REACH) -> RunMetrics:
    best = view.best
    hit = view.fold.reach(reach)
    failed = Counter(e.phase or e.status for e in view.evaluations if e.status != "ok")
    c = view.counters
    return RunMetrics(str(view.root), view.run_id, view.model, view.task, view.kind, view.fold.measured_on,
                      best.score if best else None, c.evaluations, c.tool_calls, hit.index if hit else None,
                      hit.tool_calls if hit else None, hit.elapsed_s / 3600 if hit else None,
                      c.tool_calls / c.evaluations if c.evaluations else None, round(view.elapsed_s, 3),
                      c.input_tokens + c.output_tokens, c.cost_usd, dict(sorted(failed.items())), c.forbidden,
                      view.redesigns, view.stall_warnings, view.end[0] if view.end else view.state()[0],
                      dict(best.workloads) if best else {}, dict(sorted(view.fold.traps.items())),
                      len(view.agent_ids) or 1, best.agent if best else None,
                      {a.agent: a.best.score if a.best else None for a in view.agents()})


@dataclass
class Spread:
    median: float | None
    min: float | None
    max: float | None
    values: list[float | None]  # one per run, in the order given; None: not applicable to that run


def spread(values: list[float | None]) -> Spread:
    known = [v for v in values if v is not None]
    if not known:
        return Spread(None, None, None, values)
    return Spread(statistics.median(known), min(known), max(known), values)


NUMERIC = ("best_score", "evals_to_reach", "tool_calls_to_reach", "hours_to_reach", "evaluations", "tool_calls",
           "tool_calls_per_eval", "elapsed_s", "tokens", "cost_usd", "forbidden", "redesigns", "stall_warnings")


@dataclass
class Group:
    model: str
    task: str
    kind: str  # GPU, interpreter (CPU) or simulated: runs of different kinds are never pooled
    measured_on: str | None  # nor GPU scores of different GPU models
    runs: list[RunMetrics]
    stats: dict[str, Spread]
    failed_by_phase: dict[str, Spread]  # runs without a failure of that phase count 0
    ends: dict[str, int]

    @property
    def several_agents(self) -> bool:
        return any(r.agents > 1 for r in self.runs)


def compare(views: list[RunView], reach: float = REACH) -> list[Group]:
    by_key: dict[tuple[str, str, str, str], list[RunMetrics]] = {}
    for view in views:
        m = metrics(view, reach)
        by_key.setdefault((m.model, m.task, m.kind, m.measured_on or ""), []).append(m)
    groups = []
    for (model, task, kind, measured_on), runs in sorted(by_key.items()):
        phases = sorted({p for r in runs for p in r.failed_by_phase})
        groups.append(Group(model, task, kind, measured_on or None, runs,
                            {k: spread([getattr(r, k) for r in runs]) for k in NUMERIC},
                            {p: spread([r.failed_by_phase.get(p, 0) for r in runs]) for p in phases},
                            dict(Counter(r.end for r in runs))))
    return groups
