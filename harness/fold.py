"""The fold: what a run's events add up to, built by applying them in order.

Counters, budgets (and budgets used), the best candidate so far and when it was found, failures
in a row, the stall state, lineage (which candidate the kernel derives from), the evaluation in
progress, the run's segments and how the run stands. The live run, its panel, `kopt status`, `history`,
`report`, `compare` and the ATIF export all read these figures from here; nothing else
recomputes them. Applying one event costs the same at event 10 and at event 100,000.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kopt.harness import events as ev
from kopt.harness import traps
from kopt.harness.candidates import LABELS
from kopt.harness.config import Budgets

RECENT_EVENTS = 8
# Budgets checked before every model request (max_model_errors_in_row is checked at each retry).
REQUEST_BUDGETS = ("max_hours", "max_tool_calls", "max_evals", "max_usd", "max_tokens", "max_failed_evals_in_row")


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


@dataclass
class Evaluated:
    """One evaluation event and where in the run it happened."""

    index: int  # 1-based, over every evaluation event (failed ones included)
    candidate: int
    elapsed_s: float
    tool_calls: int  # tool calls so far, the evaluate call included
    status: str
    score: float | None
    kind: str | None  # gpu | interpreter | simulated, None when nothing was timed
    note: str
    new_best: bool = False  # raised the best so far (ties keep the earlier one)
    phase: str | None = None  # where it stopped when it did not pass
    traps: list[str] = field(default_factory=list)  # harness.traps keys that rejected it
    workloads: dict[str, float] = field(default_factory=dict)  # a pass's per-workload speedups
    measured_on: str | None = None  # the GPU model (or simulated target) that timed it
    parent: int | None = None  # the candidate its source was derived from (None: the baseline)
    agent: int | None = None  # which agent evaluated it, in a run of several

    @property
    def label(self) -> str:
        """What the score is ('GPU geomean speedup', the interpreter's ratio), '' when nothing was timed."""
        return LABELS.get(self.kind or "", "")


@dataclass
class Evaluating:
    """The evaluation in progress: from its evaluate call to its result."""

    call_id: str
    started_s: float  # run time when it started
    candidate: int | None = None
    phase: str = "starting"
    done: int = 0  # case runs judged so far
    total: int = 0
    message: str = ""


@dataclass
class Segment:
    """One session of the run: its start, or a resume (which may extend the run with new budgets)."""

    index: int  # 1-based
    started_s: float
    driver: str
    budgets: Budgets | None  # in force from this segment on
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # budget -> (before, after)
    extends: str | None = None  # the end reason this segment extended
    end: str | None = None  # its run_end reason, if recorded


def budgets_of(raw: Any) -> Budgets | None:
    """A run.json's budgets, keeping the ones this version knows (another version may have more)."""
    if not isinstance(raw, dict):
        return None
    try:
        return Budgets.model_validate(raw)
    except ValidationError:
        try:
            return Budgets.model_validate({k: v for k, v in raw.items() if k in Budgets.model_fields})
        except ValidationError:
            return None


@dataclass
class Fold:
    counters: Counters = field(default_factory=Counters)
    evaluations: list[Evaluated] = field(default_factory=list)
    best: Evaluated | None = None
    latest_passing: Evaluated | None = None
    # evaluations (and repeats of one) without progress: on a GPU a new best; where nothing is timed on a GPU
    # (interpreter, simulated) a new passing candidate, since there a "best" is the interpreter's noise
    since_improvement: int = 0
    redesigns: int = 0
    redesigns_without_progress: int = 0
    warned: bool = False  # a stall warning since the last improvement or redesign
    stall_warnings: int = 0
    traps: Counter = field(default_factory=Counter)  # trap key -> evaluations (or forbidden actions) it caught
    failed_in_row: int = 0
    model_errors_in_row: int = 0
    resumes: int = 0
    end: tuple[str, str] | None = None  # (reason, detail) of a run_end after the last start or resume
    finished: bool = False  # a successful finish was recorded (even if run_end was not)
    evaluated: set[int] = field(default_factory=set)  # candidates with an evaluation event
    started: dict[str, str | None] = field(default_factory=dict)  # tool call id -> pre-call sha, until its result
    start: ev.RunStart | None = None
    driver: ev.Driver | None = None  # of the latest session
    last: ev.Base | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))  # the last events but requests
    budgets: Budgets | None = None  # in force now: run_start's, or the latest segment's that changed them
    segments: list[Segment] = field(default_factory=list)
    evaluating: Evaluating | None = None
    derived_from: int | None = None  # the candidate the kernel file derives from now (None: the baseline)
    derived: dict[int, int | None] = field(default_factory=dict)  # the same, per agent of several (own files)
    reverts: dict[tuple, int] = field(default_factory=dict)  # (agent, revert call id) -> its candidate, until its result
    best_of: dict[int, Evaluated] = field(default_factory=dict)  # per agent of several: its best evaluation
    agent_ends: dict[int, tuple[str, str]] = field(default_factory=dict)  # per agent: (reason, detail) of its end
    parents: dict[int, int | None] = field(default_factory=dict)  # candidate -> parent, at its first evaluation

    def apply(self, event: ev.Base) -> None:
        self.last = event
        if not isinstance(event, (ev.ModelRequest, ev.EvaluationProgress)):
            self.recent.append(event)
        handler = HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def derived_of(self, agent: int | None) -> int | None:
        return self.derived_from if agent is None else self.derived.get(agent)

    def _derive(self, agent: int | None, candidate: int | None) -> None:
        if agent is None:
            self.derived_from = candidate
        else:
            self.derived[agent] = candidate

    def elapsed_at(self, now: float) -> float:
        """Run time at unix time `now`: the last event's, plus the time since it while the run is live."""
        if self.last is None:
            return 0.0
        return self.last.elapsed_s + (max(0.0, now - self.last.time) if self.end is None else 0.0)

    @property
    def gpu_timed(self) -> bool:
        return self.kind == "gpu"

    @property
    def anchor(self) -> Evaluated | None:
        """Where a redesign restarts: the best on a GPU; elsewhere the latest passing candidate (interpreter
        time does not steer the run)."""
        return self.best if self.gpu_timed else self.latest_passing

    @property
    def kind(self) -> str | None:
        """What the run's scores measure, from its first timed evaluation."""
        return next((e.kind for e in self.evaluations if e.kind), None)

    @property
    def measured_on(self) -> str | None:
        """The GPU model (or simulated target) of the run's first timed evaluation."""
        return next((e.measured_on for e in self.evaluations if e.kind), None)

    def reach(self, fraction: float) -> Evaluated | None:
        """The first evaluation scoring at least `fraction` x the run's best (scores are time ratios, so
        this is "within 10% of the best" for 0.9 whether or not the best beats the baseline)."""
        if self.best is None:
            return None
        return next(e for e in self.evaluations if e.score is not None and e.score >= fraction * self.best.score)

    def budget_use(self, budgets: Budgets, elapsed_s: float) -> list[tuple[str, float, float]]:
        """(budget, limit, used) for every request budget that is set."""
        c = self.counters
        used = {"max_hours": elapsed_s / 3600, "max_tool_calls": c.tool_calls, "max_evals": c.evaluations,
                "max_usd": c.cost_usd, "max_tokens": c.input_tokens + c.output_tokens,
                "max_failed_evals_in_row": self.failed_in_row}
        return [(name, getattr(budgets, name), used[name]) for name in REQUEST_BUDGETS
                if getattr(budgets, name) is not None]

    def spent(self, budgets: Budgets, elapsed_s: float) -> str | None:
        """Which budget is used up, as a sentence, or None."""
        for name, limit, used in self.budget_use(budgets, elapsed_s):
            if used >= limit:
                return f"{name} reached ({used:.4g} of {limit:g})"
        return None

    # ---- one handler per event type that changes a figure
    def _tool_call(self, e: ev.ToolCallEvent) -> None:
        if not e.retry:  # a call redone after a crash counts once
            self.counters.tool_calls += 1
        self.started[e.call.id] = e.pre_sha
        if e.call.name == "evaluate":
            self.evaluating = Evaluating(e.call.id, e.elapsed_s)
        elif e.call.name == "revert":
            try:
                target = e.call.parsed().get("candidate")
            except ValueError:
                target = None
            if isinstance(target, int) and not isinstance(target, bool):
                self.reverts[(e.agent, e.call.id)] = target

    def _tool_result(self, e: ev.ToolResult) -> None:
        self.started.pop(e.call_id, None)
        if e.name == "finish" and not e.is_error:
            self.finished = True
        if self.evaluating is not None and self.evaluating.call_id == e.call_id:
            self.evaluating = None
        reverted = self.reverts.pop((e.agent, e.call_id), None)
        if reverted is not None and not e.is_error:
            self._derive(e.agent, reverted)  # the kernel file holds that candidate's source now

    def _evaluation_progress(self, e: ev.EvaluationProgress) -> None:
        if self.evaluating is not None:
            w = self.evaluating
            w.candidate, w.phase, w.done, w.total, w.message = e.candidate, e.phase, e.done, e.total, e.message

    def _evaluation(self, e: ev.Evaluation) -> None:
        c = self.counters
        c.evaluations += 1
        c.failed_evaluations += e.status != "ok"
        self.failed_in_row = 0 if e.status == "ok" else self.failed_in_row + 1
        self.evaluated.add(e.candidate)
        derived = self.derived_of(e.agent)
        parent = derived if derived != e.candidate else self.parent_of(e.candidate)
        done = Evaluated(len(self.evaluations) + 1, e.candidate, e.elapsed_s, c.tool_calls, e.status, e.score,
                         e.kind, e.note, phase=e.phase, traps=e.traps or [], workloads=e.workloads or {},
                         measured_on=e.measured_on, parent=parent, agent=e.agent)
        self.traps.update(done.traps)
        self._derive(e.agent, e.candidate)  # later edits start from this source
        if e.agent is not None and e.score is not None and (
                e.agent not in self.best_of or e.score > self.best_of[e.agent].score):
            self.best_of[e.agent] = done
        self.parents.setdefault(e.candidate, parent)
        if e.score is not None and (self.best is None or e.score > self.best.score):
            done.new_best, self.best = True, done
        if e.status == "ok":
            self.latest_passing = done
        if done.new_best if e.kind == "gpu" else e.status == "ok":
            self.since_improvement = self.redesigns_without_progress = 0
            self.warned = False
        else:
            self.since_improvement += 1
        self.evaluations.append(done)

    def _evaluation_cached(self, e: ev.EvaluationCached) -> None:
        self.since_improvement += 1  # repeating itself: the stall policy counts it
        self._derive(e.agent, e.candidate)

    def parent_of(self, candidate: int) -> int | None:
        """The parent recorded at a candidate's first evaluation (a re-verified one keeps it)."""
        return self.parents.get(candidate)

    def _model_request(self, e: ev.ModelRequest) -> None:
        self.counters.model_requests += 1

    def _model_response(self, e: ev.ModelResponseEvent) -> None:
        self._usage(e.response.usage)
        self.counters.model_responses += 1
        self.model_errors_in_row = 0

    def _compaction(self, e: ev.Compaction) -> None:
        if e.usage is not None:
            self._usage(e.usage)

    def _usage(self, usage) -> None:
        c = self.counters
        c.input_tokens += usage.input_tokens
        c.output_tokens += usage.output_tokens
        c.cost_usd += usage.cost_usd

    def _model_retry(self, e: ev.ModelRetry) -> None:
        self.counters.retries += 1
        self.model_errors_in_row += 1

    def _forbidden(self, e: ev.Forbidden) -> None:
        self.counters.forbidden += 1
        self.traps[traps.forbidden(e.kind, e.detail)] += 1

    def _stall_warning(self, e: ev.StallWarning) -> None:
        self.warned = True
        self.stall_warnings += 1

    def _redesign(self, e: ev.Redesign) -> None:
        self.redesigns += 1
        self.redesigns_without_progress += 1
        self.since_improvement, self.warned = 0, False
        self._derive(e.agent, e.best)  # the kernel file was reset to the best candidate

    def _run_start(self, e: ev.RunStart) -> None:
        self.start, self.end = e, None
        self.driver = e.driver or ev.Driver(kind="model", name=e.model)
        self.budgets = budgets_of(e.config.get("budgets", {}))
        self.evaluating = None
        self.segments.append(Segment(len(self.segments) + 1, e.elapsed_s, self.driver.name, self.budgets))

    def _run_resume(self, e: ev.RunResume) -> None:
        self.resumes += 1
        self.end = None
        self.evaluating = None  # an evaluation cut off by the interruption is redone, never a result
        if e.driver is not None:
            self.driver = e.driver
        changed: dict[str, tuple[Any, Any]] = {}
        if e.budgets is not None:
            before = self.budgets or Budgets()
            changed = {name: (getattr(before, name), getattr(e.budgets, name)) for name in Budgets.model_fields
                       if getattr(before, name) != getattr(e.budgets, name)}
            self.budgets = e.budgets
        if e.extends is not None:  # the operator extended an ended run: the in-a-row counts start afresh
            self.finished = False
            self.failed_in_row = self.model_errors_in_row = 0
            self.since_improvement = self.redesigns_without_progress = 0
            self.warned = False
        name = self.driver.name if self.driver else "?"
        self.segments.append(Segment(len(self.segments) + 1, e.elapsed_s, name, self.budgets, changed, e.extends))

    def _agent_end(self, e: ev.AgentEnd) -> None:
        if e.agent is not None:
            self.agent_ends[e.agent] = (e.reason, e.detail)

    def _run_end(self, e: ev.RunEnd) -> None:
        self.end = (e.reason, e.detail)
        self.evaluating = None
        if self.segments:
            self.segments[-1].end = e.reason


HANDLERS = {ev.ToolCallEvent: Fold._tool_call, ev.ToolResult: Fold._tool_result, ev.Evaluation: Fold._evaluation,
            ev.EvaluationProgress: Fold._evaluation_progress,
            ev.EvaluationCached: Fold._evaluation_cached, ev.ModelRequest: Fold._model_request,
            ev.ModelResponseEvent: Fold._model_response, ev.Compaction: Fold._compaction,
            ev.ModelRetry: Fold._model_retry, ev.Forbidden: Fold._forbidden, ev.StallWarning: Fold._stall_warning,
            ev.Redesign: Fold._redesign, ev.RunStart: Fold._run_start, ev.RunResume: Fold._run_resume,
            ev.RunEnd: Fold._run_end, ev.AgentEnd: Fold._agent_end}


RUN_LEVEL = (ev.RunStart, ev.RunResume, ev.RunEnd)


def belongs(event: ev.Base, agent: int) -> bool:
    """Whether one agent's fold (of a run of several) takes this event: its own, and the run's sessions."""
    return event.agent == agent or (event.agent is None and isinstance(event, RUN_LEVEL))


def fold(events) -> Fold:
    state = Fold()
    for event in events:
        state.apply(event)
    return state
