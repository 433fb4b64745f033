"""The live view of a run in the terminal (rich), and the summary printed at its end."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kopt.harness import events as ev
from kopt.harness.candidates import LABELS
from kopt.harness.fold import Evaluating
from kopt.harness.trajectory import Event

if TYPE_CHECKING:
    from kopt.harness.run import Run


def describe(event: Event) -> str:
    """One line for a person: the panel's last event, `kopt status`, the report's minor events."""
    if isinstance(event, ev.ToolCallEvent):
        return f"tool {event.call.name}({event.call.arguments[:80]})"
    if isinstance(event, ev.ToolResult):
        first = event.content.splitlines()[0] if event.content else ""
        for prefix in ("error: ", "refused: "):  # the outcome already says it
            if first.startswith(prefix):
                first = first[len(prefix):]
        return f"{event.name} -> {event.outcome}: {first[:100]}"
    if isinstance(event, ev.EvaluationProgress):
        count = f" ({event.done} of {event.total} case runs)" if event.total else ""
        return f"evaluating candidate {event.candidate:04d}: {event.message or event.phase}{count}"
    if isinstance(event, ev.RunResume):
        return "run resumed" + (f", extending a run that ended ({event.extends})" if event.extends else "") + \
            (" with new budgets" if event.budgets is not None else "")
    if isinstance(event, ev.Evaluation):
        value = f" {event.score:.4f} ({LABELS.get(event.kind or '', '')})" if event.score is not None else ""
        return f"evaluation of candidate {event.candidate:04d}: {event.status}{value}"
    if isinstance(event, ev.ModelRetry):
        return f"model call failed ({event.error[:80]}); retry {event.attempt} in {event.wait_s:.0f} s"
    if isinstance(event, ev.ModelResponseEvent):
        usage = event.response.usage
        return f"model answered ({usage.input_tokens} in / {usage.output_tokens} out tokens)"
    if isinstance(event, ev.Forbidden):
        return f"FORBIDDEN {event.name}: {event.detail[:100]}"
    if isinstance(event, ev.RunEnd):
        return f"run ended: {event.reason} {event.detail[:100]}"
    return event.type


def span(seconds: float) -> str:
    """42 s, 3 min 05 s, 1.25 h: a clock that visibly moves."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{seconds / 3600:.2f} h"


def evaluation_view(evaluating: Evaluating | None, elapsed_s: float) -> RenderableType | None:
    """The evaluation in progress: candidate, phase, time so far and case runs done of total, with a bar
    (the live panel and `kopt status` show the same)."""
    if evaluating is None:
        return None
    w = evaluating
    what = f"candidate {w.candidate:04d}" if w.candidate is not None else "a candidate"
    head = Text(f"{what}: {w.message or w.phase}, {span(max(0.0, elapsed_s - w.started_s))}")
    if not w.total:
        return head
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=w.total, completed=w.done, width=30), Text(f"{w.done} of {w.total} case runs"))
    return Group(head, bar)


def stopping_text(run: "Run") -> str | None:
    """What the operator's interrupt did, in the panel's words."""
    it = run.interrupts
    if it.now:
        return "stopping now (a second interrupt): the evaluation in progress is dropped and redone on resume"
    if it.requested:
        step = "this evaluation" if run.fold.evaluating is not None else "this step"
        return f"stopping after {step}; Ctrl-C again to stop now: resumable"
    return None


class RunPanel:
    """Redrawn on a timer (elapsed ticks, an evaluation's progress moves) from the run's fold; on a
    non-terminal output it prints one line per notable event instead."""

    REFRESH_PER_S = 2

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.run: "Run | None" = None
        self.last = ""
        self.phase: tuple | None = None  # (candidate, phase) last printed on a non-terminal output

    @contextmanager
    def showing(self, run: "Run") -> Iterator["RunPanel"]:
        self.run = run
        if not self.console.is_terminal:
            yield self
            return
        self.live = Live(console=self.console, get_renderable=self.renderable, auto_refresh=True,
                         refresh_per_second=self.REFRESH_PER_S, transient=False)
        with self.live:
            yield self
        self.live = None

    def renderable(self) -> RenderableType:
        return self.render(self.run) if self.run is not None else Text("")

    def update(self, event: Event, run: "Run") -> None:
        """Told of every event (from any thread): the timer redraws, so nothing is dropped."""
        self.run = run
        if isinstance(event, ev.EvaluationProgress):
            if self.live is None and (event.candidate, event.phase) != self.phase:
                self.phase = (event.candidate, event.phase)
                self.console.print(f"[{event.elapsed_s:8.1f}s] evaluating candidate {event.candidate:04d}: "
                                   f"{escape(event.message or event.phase)}"
                                   + (f" ({event.total} case runs)" if event.total else ""), highlight=False)
            return
        self.last = describe(event)
        if self.live is None and event.type in ("evaluation", "run_start", "run_resume", "run_end", "forbidden",
                                                "model_retry"):
            self.console.print(f"[{event.elapsed_s:8.1f}s] {escape(self.last)}", highlight=False)

    def interrupted(self) -> None:
        """Told by a signal handler: the live panel shows it on its next tick; a plain output prints it now."""
        if self.live is None and self.run is not None:
            self.console.print(stopping_text(self.run) or "", highlight=False)
        elif self.live is not None:
            self.live.refresh()

    def render(self, run: "Run") -> Table:
        c, b = run.counters, run.budgets
        best = run.fold.best
        table = Table(title=f"kopt run {run.ws.config.run_id}  ({run.ws.config.model})", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        elapsed = run.elapsed_s
        table.add_row("elapsed", span(elapsed) + (f" of {span(b.max_hours * 3600)}" if b.max_hours else ""))
        table.add_row("tool calls", f"{c.tool_calls}" + (f" of {b.max_tool_calls}" if b.max_tool_calls else ""))
        table.add_row("evaluations", f"{c.evaluations} ({c.failed_evaluations} failed)" +
                      (f" of {b.max_evals}" if b.max_evals else ""))
        table.add_row("best", f"candidate {best.candidate:04d}: {best.score:.4f} {best.label}" if best else "none yet")
        table.add_row("tokens / cost", f"{c.input_tokens + c.output_tokens} / ${c.cost_usd:.4f}" +
                      (f" of ${b.max_usd:g}" if b.max_usd else ""))
        if c.retries:
            table.add_row("model retries", str(c.retries))
        if c.forbidden:
            table.add_row("forbidden attempts", str(c.forbidden))
        if len(run.fold.segments) > 1:
            table.add_row("segment", segment_text(run.fold))
        evaluating = evaluation_view(run.fold.evaluating, elapsed)
        if evaluating is not None:
            table.add_row("evaluating", evaluating)
        table.add_row("last", escape(self.last))
        stopping = stopping_text(run)
        if stopping:
            table.add_row("[yellow]stopping[/]", f"[yellow]{escape(stopping)}[/]")
        return table


def segment_text(fold) -> str:
    """The current segment: its number and, if it changed them, the new budgets."""
    seg = fold.segments[-1]
    changed = ", ".join(f"{name} {old if old is not None else 'unlimited'} -> {new}"
                        for name, (old, new) in seg.changed.items())
    extended = f"extends the run ({seg.extends}): " if seg.extends else ""
    return f"{seg.index} of the run" + (f"; {extended}{changed}" if changed or extended else "")


def print_summary(console: Console, run: "Run", reason: str, detail: str) -> None:
    c = run.counters
    best = run.fold.best
    console.print(f"\n[bold]run {run.ws.config.run_id} ended:[/] {escape(reason)}" + (f" ({escape(detail[:300])})" if detail else ""))
    console.print(f"  run directory   {run.ws.root}")
    console.print(f"  elapsed         {run.elapsed_s / 60:.1f} min")
    console.print(f"  tool calls      {c.tool_calls}   evaluations {c.evaluations} ({c.failed_evaluations} failed)")
    console.print(f"  tokens          {c.input_tokens} in, {c.output_tokens} out   cost ${c.cost_usd:.4f}")
    if best:
        console.print(f"  best            candidate {best.candidate:04d}: {best.score:.4f} {best.label}  -> "
                      f"{run.ws.root / 'best.py'}")
    else:
        console.print("  best            no passing candidate")
    if reason not in ("finished", "budget", "already_ended", "model_error"):
        console.print(f"  resume with     kopt resume {run.ws.root}")
