"""One optimisation run: its policy (budgets, stop requests, stall and redesign) and exact resume.

The recorder (harness.recorder) writes and folds every event; this module decides what happens
next and, on resume, rebuilds the agent's context from the log message by message and finishes
a tool call that was cut off, with counters and elapsed time intact.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kopt.agent.context import Context
from kopt.agent.loop import Agent, Prompts, Stop
from kopt.agent.messages import Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from kopt.agent.model import Model, RetryEvent
from kopt.harness import events as ev
from kopt.harness import trajectory
from kopt.harness.candidates import CandidateStore, score
from kopt.harness.config import Budgets
from kopt.harness.fold import Fold, belongs
from kopt.harness.interrupts import Abandonable, Interrupts, StopNow
from kopt.harness.recorder import Recorded, Recorder
from kopt.harness.tools import ToolBox, leaderboard_text, sha_of, short
from kopt.harness.workspace import STOP_FILE, Workspace
from kopt.verifier.progress import Progress

TERMINAL = {"finished", "budget", "model_error", "stalled"}  # a run that ended so is not resumed
RECENT_EVALUATIONS = 15
NOTES_IN_STATUS_CHARS = 3000
PROGRESS_EVERY_S = 2.0  # an evaluation's progress is recorded on each phase and at most this often
STOP_NOW_GRACE_S = 5.0  # after a second interrupt, how long a run of several agents waits for them to stop


@dataclass
class Seat:
    """One agent of the run: its files, its fold (lineage, stall counts, calls left open), its view of the
    recorder, its tools and where its context was. A one-agent run has one seat: the run's own."""

    agent: int | None
    ws: Workspace
    fold: Fold
    recorder: Recorder
    tools: ToolBox
    resume: "Resume"
    model: Model | None = None

    @property
    def name(self) -> str:
        return "the agent" if self.agent is None else f"agent {self.agent}"


@dataclass
class Resume:
    """The agent's context as the log left it, and the tool calls a crash cut off."""

    head: list[Message] = field(default_factory=list)
    window: list[Message] = field(default_factory=list)
    summary: str | None = None
    pending: list[tuple[ToolCall, str | None]] = field(default_factory=list)  # (call, pre-call sha)


def rebuild(history: Iterable[ev.Base], started: dict[str, str | None] | None = None, fold: Fold | None = None) -> Resume:
    """The same head, window and summary the agent had. The window is kept as records and only its
    final contents become messages: a long run compacts away most of what it ever said. With
    `fold`, each event is folded in the same pass (and its calls left open are the ones pending)."""
    state = Resume()
    open_calls: list[ToolCall] = []  # of the last model response, not answered yet
    calls: dict[str, ToolCall] = {}  # started and unanswered (an MCP client's have no model response)
    window: list[Message | ev.ToolResult] = []
    for event in history:
        if fold is not None:
            fold.apply(event)
        if isinstance(event, ev.RunStart):
            state.head = list(event.messages)
        elif isinstance(event, ev.ModelResponseEvent):
            window.append(event.response.message)
            open_calls = list(event.response.message.tool_calls)
        elif isinstance(event, ev.UserMessage):
            window.append(UserMessage(content=event.content))
        elif isinstance(event, ev.ToolCallEvent):
            calls[event.call.id] = event.call
        elif isinstance(event, ev.ToolResult):
            open_calls = [c for c in open_calls if c.id != event.call_id]
            calls.pop(event.call_id, None)
            window.append(event)
        elif isinstance(event, ev.Compaction):
            window = window[event.drop:]
            state.summary = event.summary or state.summary
        elif isinstance(event, ev.Redesign):
            window, state.summary = [], None
    state.window = [ToolMessage(tool_call_id=m.call_id, name=m.name, content=m.content, is_error=m.is_error)
                    if isinstance(m, ev.ToolResult) else m for m in window]
    started = fold.started if fold is not None else (started or {})
    cut = [calls[i] for i in started if i in calls and all(c.id != i for c in open_calls)]
    state.pending = [(c, started.get(c.id)) for c in cut + open_calls]
    return state


class Run:
    def __init__(self, ws: Workspace, model: Model | None, evaluate: Callable, compile_report: Callable,
                 on_event: Callable[[ev.Base, "Run"], None] | None = None, approve: Callable | None = None,
                 context_tokens: int = 32_000, summarize: bool = True):
        self.ws, self.model = ws, model
        self.fold = Fold()  # the log is read once, folded and replayed in the same pass (a torn last line dropped)
        self.resume = rebuild(trajectory.scan(ws.root / trajectory.TRAJECTORY), fold=self.fold)
        self.recorder = Recorder(ws.root, self.fold, on_event=(lambda e: on_event(e, self)) if on_event else None)
        self.counters = self.fold.counters
        self.fresh = self.fold.last is None
        self.context_tokens, self.summarize = context_tokens, summarize
        self.store = CandidateStore(ws.root)
        self.interrupts = Interrupts()
        self.tools = ToolBox(ws, self.store, self._guarded(evaluate), self._guarded(compile_report),
                             self.recorder.record, self._asking(approve), fold=self.fold)
        if ws.config.agents == 1:
            self.seats = [Seat(None, ws, self.fold, self.recorder, self.tools, self.resume)]
        else:  # each agent's events are folded (and its context rebuilt) from its own lines of the log
            self.seats = []
            for agent in range(ws.config.agents):
                fold = Fold()
                resume = rebuild((e for e in trajectory.scan(ws.root / trajectory.TRAJECTORY) if belongs(e, agent)),
                                 fold=fold)
                recorder = self.recorder.lane(agent, fold)
                seat_ws = ws.agent_workspace(agent)
                tools = ToolBox(seat_ws, self.store, self.tools.evaluate_fn, self.tools.compile_fn, recorder.record,
                                self.tools.approve, logged=self.fold.evaluated, fold=fold, agent=agent)
                self.seats.append(Seat(agent, seat_ws, fold, recorder, tools, resume))
        self.live: set[int] = set()  # agents running now (a run of several)
        self._progress_lock = threading.Lock()
        self._progress_last: tuple[tuple[int, str, str], float] | None = None

    @property
    def elapsed_s(self) -> float:
        return self.recorder.elapsed_s

    @property
    def budgets(self) -> Budgets:
        """In force now: run.json's, or those the latest segment that changed them recorded (harness.fold)."""
        return self.fold.budgets or self.ws.config.budgets

    def _guarded(self, verifier_call: Callable) -> Callable:
        """A verifier call whose result is dropped when a second interrupt killed its children mid-way."""
        def call(*args, **kwargs):
            result = verifier_call(*args, **kwargs)
            self.interrupts.check()  # (its tool call stays open: redone on resume, never a result)
            return result
        return call

    def _asking(self, approve: Callable | None) -> Callable | None:
        """The operator's approval prompt: a second interrupt while it waits for an answer stops the run."""
        if approve is None:
            return None

        def ask(candidate) -> bool:
            with self.interrupts.abandonable():
                return approve(candidate)
        return ask

    def evaluation_progress(self, candidate: int, progress: Progress) -> None:
        """From the verifier's threads: recorded on a phase change, at the last case and at most every
        PROGRESS_EVERY_S between. A display's concern: never fails the evaluation."""
        now = time.monotonic()
        key = (candidate, progress.phase, progress.message)
        if self.recorder.closed:
            return
        with self._progress_lock:
            last = self._progress_last
            if (last is not None and last[0] == key and now - last[1] < PROGRESS_EVERY_S
                    and progress.done < progress.total):
                return
            self._progress_last = (key, now)
            try:
                self.recorder.record(ev.EvaluationProgress(candidate=candidate, phase=progress.phase,
                                                           done=progress.done, total=progress.total,
                                                           message=progress.message))
            except Exception:  # noqa: BLE001 (a full disk fails the next real event loudly enough)
                pass

    def model_retry(self, retry: RetryEvent) -> None:
        """Called by the client before each wait: an outage is recorded, and can be interrupted."""
        with self.interrupts.shielded():
            self.recorder.model_retry(retry)
        self.check_stop()
        limit = self.budgets.max_model_errors_in_row
        if limit is not None and self.fold.model_errors_in_row >= limit:
            raise Stop("budget", f"max_model_errors_in_row reached ({self.fold.model_errors_in_row})")

    # ---- budgets, stop requests and the stall policy: checked before every model call
    def check_stop(self) -> None:
        self.interrupts.check()
        if self.interrupts.requested:
            raise Stop("interrupted", self.interrupts.requested)
        if (self.ws.root / STOP_FILE).exists():
            raise Stop("interrupted", f"{STOP_FILE} file in the run directory")

    def before_request(self, agent: Agent, seat: Seat | None = None) -> None:
        self.check_stop()
        spent = self.fold.spent(self.budgets, self.elapsed_s)  # budgets are the run's, over all its agents
        if spent:
            raise Stop("budget", spent)
        self.apply_stall_policy(agent, seat or self.seats[0])

    def apply_stall_policy(self, agent: Agent, seat: Seat | None = None) -> None:
        """Per agent: its own evaluations since its own progress."""
        seat = seat or self.seats[0]
        policy, p = self.ws.config.stall, seat.fold
        anchor = p.anchor.candidate if p.anchor else None  # the best on a GPU, else the latest passing
        progress = "improving on the best" if p.gpu_timed else "a new passing candidate"
        which = "the best candidate" if p.gpu_timed else "the latest passing candidate"
        if p.since_improvement >= policy.redesign_after:
            if p.redesigns_without_progress >= policy.max_redesigns:
                raise Stop("stalled", f"{p.redesigns_without_progress} redesigns without {progress}")
            if anchor is not None:
                seat.ws.kernel.write_text(self.store.path(anchor).read_text())
            seat.recorder.record(ev.Redesign(number=p.redesigns + 1, best=anchor,
                                             since_improvement=p.since_improvement))
            agent.context.reset()
            tried = "\n".join(f"- {line}" for line in self.recent(seat))
            agent.say(f"Redesign {p.redesigns}: {policy.redesign_after} evaluations in a row without {progress}. "
                      "Your earlier context was cleared and the kernel file was reset to "
                      f"{'candidate %04d' % anchor if anchor else 'the baseline'}. Recent attempts:\n{tried}\n"
                      "Take a substantially different approach from these; read the kernel first.")
        elif p.since_improvement >= policy.warn_after and not p.warned:
            seat.recorder.record(ev.StallWarning(since_improvement=p.since_improvement))
            agent.say(f"{p.since_improvement} evaluations without {progress}. Step back: check your notes and the "
                      "compile report, and consider a different kind of change. After "
                      f"{policy.redesign_after} your context restarts from {which}.")

    def recent(self, seat: Seat | None = None) -> list[str]:
        """The last evaluations (of this agent, in a run of several), one line each (the reason from the
        candidate's verdict)."""
        lines = []
        for e in (seat or self.seats[0]).fold.evaluations[-RECENT_EVALUATIONS:]:
            c = self.store.items.get(e.candidate)
            reason = (c.verdict.reason or "") if c is not None and c.verdict is not None else ""
            outcome = f"{e.score:.4f}" if e.score is not None else f"{e.status}: {reason[:140]}"
            lines.append(f"{e.candidate:04d} {outcome}" + (f" [{short(e.note)}]" if e.note else ""))
        return lines

    def status_text(self, seat: Seat | None = None) -> str:
        """Regenerated for every request: what the agent must not lose when old turns are compacted."""
        seat = seat or self.seats[0]
        c, b, p = self.counters, self.budgets, self.fold
        elapsed = self.elapsed_s
        lines = ["[Run status, regenerated every turn]",
                 f"Elapsed {elapsed / 60:.1f} min; tool calls {c.tool_calls}; evaluations "
                 f"{c.evaluations} ({c.failed_evaluations} did not pass)."]
        left = [f"{name} {limit - used:g}" for name, limit, used in (
            ("evaluations", b.max_evals, c.evaluations), ("tool calls", b.max_tool_calls, c.tool_calls),
            ("hours", b.max_hours, round(elapsed / 3600, 2)), ("USD", b.max_usd, round(c.cost_usd, 4)))
            if limit is not None]
        if left:
            lines.append("Budget left: " + ", ".join(left) + ".")
        best = self.store.items.get(p.best.candidate) if p.best else None
        if best is not None and best.verdict is not None:
            value, label = score(best.verdict)
            lines.append(f"Best: candidate {best.id:04d}, {label} {value:.4f}.")
            t = best.verdict.timing
            if t is not None and t.geomean_speedup is not None:
                lines.append("  per workload: " + ", ".join(f"{w.workload} {w.speedup:.3f}x" for w in t.workloads))
            lines.append(leaderboard_text(self.store, seat.tools.latest()))
        else:
            lines.append("No passing candidate yet.")
        if seat.agent is not None:
            lines.append(self.agents_text(seat))
        recent = self.recent(seat)
        if recent:
            lines.append("Recent evaluations (oldest first):\n" + "\n".join(f"  {r}" for r in recent))
        mine = seat.fold
        if mine.since_improvement:
            lines.append(f"Evaluations since the last improvement: {mine.since_improvement} (warning at "
                         f"{self.ws.config.stall.warn_after}, context restart at {self.ws.config.stall.redesign_after}).")
        notes = tail(seat.ws.notes, NOTES_IN_STATUS_CHARS)  # the tail only: NOTES.md grows all run long
        if notes.strip() and notes.strip() != "# Notes":
            lines.append("NOTES.md (end):\n" + notes)
        return "\n".join(lines)

    def agents_text(self, seat: Seat) -> str:
        """In a run of several agents: who this one is, and every agent's best (they share the archive)."""
        lines = [f"You are agent {seat.agent} of {len(self.seats)}, each with its own kernel file and notes, sharing "
                 "the candidate archive (revert(candidate) takes any agent's candidate) and the budgets."]
        for other in self.seats:
            best = self.fold.best_of.get(other.agent)
            mine = " (you)" if other is seat else ""
            ended = self.fold.agent_ends.get(other.agent)
            state = f"; ended: {ended[0]}" if ended and other.agent not in self.live else ""
            lines.append(f"  agent {other.agent}{mine}: {other.fold.counters.evaluations} evaluations; best "
                         + (f"candidate {best.candidate:04d} {best.score:.4f}" if best else "none yet") + state)
        return "\n".join(lines)

    # ---- the run
    def driver(self) -> ev.Driver:
        model = self.model or self.seats[0].model
        return ev.Driver(kind="model", name=model.name)

    def begin(self, driver: ev.Driver, budgets: dict | None = None) -> Context:
        """Record the start of this session (a new run, or a resume: a new segment, with `budgets` if it changes
        them) and return the agent's context."""
        prompts = self.ws.config.prompts
        if self.fresh:
            head: list[Message] = [
                SystemMessage(content=prompts.system.format(editable=self.ws.config.editable_file)),
                UserMessage(content=self.ws.root.joinpath("instruction.md").read_text())]
            self.recorder.record(ev.RunStart(trajectory_format=ev.TRAJECTORY_FORMAT, config=self.ws.config.model_dump(mode="json", exclude={"secret"}),
                                             messages=head, model=driver.name, context_tokens=self.context_tokens,
                                             driver=driver))
            return Context(self.context_tokens, head)
        stop_file = self.ws.root / STOP_FILE
        consumed = stop_file.exists()
        if consumed:
            stop_file.unlink()
        extends = self.ended_as() if budgets else None
        self.recorder.record(ev.RunResume(tool_calls=self.counters.tool_calls, evaluations=self.counters.evaluations,
                                          pending=[c.id for c, _ in self.resume.pending], removed_stop_file=consumed,
                                          driver=driver, budgets=self.budgets.model_copy(update=budgets) if budgets
                                          else None, extends=extends))
        context = Context(self.context_tokens, self.resume.head, self.resume.window, self.resume.summary)
        if extends is not None:
            changes = ", ".join(f"{name} {old if old is not None else 'unlimited'} -> {new}"
                                for name, (old, new) in self.fold.segments[-1].changed.items())
            message = ev.UserMessage(content=f"The operator extended this run, which had ended ({extends}): "
                                     f"{changes or 'the same budgets'} (budgets are totals over the whole run). "
                                     "Carry on optimising; call finish(summary) when you are done.")
            self.recorder.record(message)
            context.append(UserMessage(content=message.content))
        return context

    def ended_as(self) -> str | None:
        """How the run ended for good (finished, budget, stalled, model_error), or None if it did not."""
        if self.fold.end is not None and self.fold.end[0] in TERMINAL:
            return self.fold.end[0]
        return "finished" if self.fold.finished and len(self.seats) == 1 else None

    def refuse_budgets(self, budgets: dict) -> str | None:
        """Why new budgets cannot apply: one is already used up (the run would stop at once)."""
        if not budgets:
            return None
        new = self.budgets.model_copy(update=budgets)
        for name, limit, used in self.fold.budget_use(new, self.elapsed_s):
            if used >= limit and not name.endswith("_in_row"):  # an extension starts in-a-row counts afresh
                flag = "--" + name.replace("_", "-")
                given = f"{flag} {limit:g}" if name in budgets else f"its {flag} ({limit:g})"
                return (f"{given} is already used up: the run is at {used:.4g}. Budgets are totals over the whole "
                        f"run: give {flag} larger than {used:.4g}")
        return None

    def ended(self, extending: bool = False) -> Stop | None:
        """Stop("already_ended") for a run that ended for good (unless new budgets extend it); a recorded finish
        is ended properly now."""
        if extending:
            return None
        if self.fold.end is not None and self.fold.end[0] in TERMINAL:
            return Stop("already_ended", self.fold.end[0])
        if self.fold.finished and len(self.seats) == 1:  # finish was recorded but the run died before run_end
            # (with several agents, one agent's finish is its own end: the others are resumed)
            self.recorder.record(ev.RunResume(tool_calls=self.counters.tool_calls,
                                              evaluations=self.counters.evaluations, pending=[],
                                              removed_stop_file=False))
            stop = self._end(Stop("finished", "recorded before an interruption"))
            self.recorder.close()
            return stop
        return None

    def execute(self, budgets: dict | None = None) -> Stop:
        """Run until a stop; `budgets`: new totals from this segment on (they may extend an ended run)."""
        done = self.ended(extending=bool(budgets))
        if done is not None:
            return done
        if len(self.seats) > 1:
            return self.execute_agents(budgets)
        context = self.begin(self.driver(), budgets)
        config = self.ws.config
        agent = Agent(Abandonable(self.model, self.interrupts), Recorded(self.tools, self.recorder), self.recorder,
                      context, self.before_request, self.status_text, self.summarize,
                      Prompts(nudge=config.prompts.nudge, summary=config.prompts.summary))
        self.interrupts.install()
        try:
            try:
                self._finish_pending(agent)
                return self._end(agent.run())
            except Stop as stop:
                return self._end(stop)
            except StopNow as now:  # raised at a safe point: nothing is half-recorded
                return self._end(Stop("interrupted", f"{now}; the step in progress is redone on resume"))
        finally:
            self.interrupts.restore()
            self.recorder.close()

    def execute_agents(self, budgets: dict | None) -> Stop:
        """Several agents, one thread each, until every one has stopped. One agent's stop (its model failing, its
        finish) leaves the others going; a budget, a stop request or an interrupt stops them all."""
        head = self.begin(self.driver(), budgets).head  # (a new run's head is made by begin)
        extending = bool(budgets) or self.fold.resumes == 0
        config = self.ws.config
        ends: dict[int, Stop] = {}
        threads = []
        for seat in self.seats:
            ended = self.fold.agent_ends.get(seat.agent)
            if ended is not None and ended[0] in TERMINAL and not extending:
                ends[seat.agent] = Stop(*ended)  # it ended for good in an earlier session
                continue
            context = Context(self.context_tokens, seat.resume.head or head, seat.resume.window, seat.resume.summary)
            agent = Agent(Abandonable(seat.model, self.interrupts), Recorded(seat.tools, seat.recorder), seat.recorder,
                          context, lambda a, seat=seat: self.before_request(a, seat),
                          lambda seat=seat: self.status_text(seat), self.summarize,
                          Prompts(nudge=config.prompts.nudge, summary=config.prompts.summary))
            self.live.add(seat.agent)
            threads.append(threading.Thread(target=self._seat_main, args=(seat, agent, ends), daemon=True,
                                            name=f"kopt-agent-{seat.agent}"))
        self.interrupts.install()
        try:
            for thread in threads:
                thread.start()
            cut_at = None
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.2)  # (short waits: the main thread takes the signals)
                if self.interrupts.now and cut_at is None:
                    cut_at = time.monotonic()
                if cut_at is not None and time.monotonic() - cut_at > STOP_NOW_GRACE_S:
                    break  # an agent still waits on its model (or a remote evaluation): leave it; what it
                    # would record next is refused once the log is closed, and its step is redone on resume
            for seat in self.seats:
                if seat.agent in self.live and seat.agent not in ends:
                    ends[seat.agent] = Stop("interrupted", f"{self.interrupts.now}; its step in progress is "
                                                           "redone on resume")
            return self._end(self.run_stop(ends))
        finally:
            self.interrupts.restore()
            self.recorder.close()

    def _seat_main(self, seat: Seat, agent: Agent, ends: dict[int, Stop]) -> None:
        try:
            try:
                self._finish_pending(agent, seat)
                stop = agent.run()
            except Stop as caught:
                stop = caught
            except StopNow as now:
                stop = Stop("interrupted", f"{now}; the step in progress is redone on resume")
        except Exception as exc:  # noqa: BLE001 (one agent's crash must not stop the others)
            import traceback
            stop = Stop("model_error", f"{seat.name} crashed: {type(exc).__name__}: {exc}\n"
                                       + traceback.format_exc()[-2000:])
        ends[seat.agent] = stop
        self.live.discard(seat.agent)
        try:
            seat.recorder.record(ev.AgentEnd(reason=stop.reason, detail=stop.detail[:4000]))
        except BaseException:  # noqa: BLE001 (the log is closed by a stop-now, or gone: the run's end says so)
            pass

    @staticmethod
    def run_stop(ends: dict[int, Stop]) -> Stop:
        """The run's end from its agents': an interruption first (resumable), then a budget, then the agents'
        own ends (finished when any finished; model_error only when every agent's model failed)."""
        reasons = {stop.reason for stop in ends.values()}
        for reason in ("interrupted", "provider_outage", "budget", "finished", "stalled", "model_error"):
            if reason in reasons:
                detail = "; ".join(f"agent {a}: {s.reason}" + (f" ({s.detail.splitlines()[0][:120]})" if s.detail
                                                                  and s.reason != "finished" else "")
                                   for a, s in sorted(ends.items()))
                return Stop(reason, detail)
        return Stop("finished", "no agent ran")

    def _finish_pending(self, agent: Agent, seat: Seat | None = None) -> None:
        """A tool call cut off by a crash: redo it, unless its file change already happened."""
        seat = seat or self.seats[0]
        for call, pre_sha in seat.resume.pending:
            if self.already_applied(call, pre_sha, agent.context.append, seat):
                continue
            agent.run_tool(call)

    def already_applied(self, call: ToolCall, pre_sha: str | None, append: Callable | None = None,
                        seat: Seat | None = None) -> bool:
        """Record the result of a cut-off mutating call whose change is already on disk; False to redo it."""
        seat = seat or self.seats[0]
        target = seat.tools.target_of(call)
        if target is None or pre_sha is None or sha_of(target) == pre_sha:
            return False
        content = f"{call.name} was applied before an interruption; {target.name} now holds its result"
        seat.recorder.record(ev.ToolResult(call_id=call.id, name=call.name, content=content, is_error=False,
                                           duration_s=0.0, outcome="ok"))
        if append is not None:
            append(ToolMessage(tool_call_id=call.id, name=call.name, content=content))
        return True

    def _end(self, stop: Stop) -> Stop:
        self.recorder.run_end(stop.reason, stop.detail)
        return stop


def tail(path: Path, max_chars: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - max_chars))
        return f.read().decode(errors="replace")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
