"""The live view of a run in the terminal (rich), and the summary printed at its end."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from kopt.harness import events as ev
from kopt.harness.candidates import LABELS
from kopt.harness.trajectory import Event

if TYPE_CHECKING:
    from kopt.harness.run import Run


def describe(event: Event) -> str:
    """One line for a person: the panel's last event, `kopt status`, the report's minor events."""
    if isinstance(event, ev.ToolCallEvent):
        return f"tool {event.call.name}({event.call.arguments[:80]})"
    if isinstance(event, ev.ToolResult):
        return f"{event.name} -> {event.outcome}: {event.content.splitlines()[0][:100] if event.content else ''}"
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


class RunPanel:
    """Redrawn on every event; on a non-terminal output it prints one line per evaluation instead."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.last = ""
        self.drawn = 0.0

    def __enter__(self) -> "RunPanel":
        if self.console.is_terminal:
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, event: Event, run: "Run") -> None:
        self.last = describe(event)
        if self.live is None:
            if event.type in ("evaluation", "run_start", "run_resume", "run_end", "forbidden", "model_retry"):
                self.console.print(f"[{event.elapsed_s:8.1f}s] {escape(self.last)}", highlight=False)
            return
        now = time.monotonic()
        if now - self.drawn < 0.1 and event.type not in ("evaluation", "run_end"):
            return  # bounded redraw rate: a long run makes tens of thousands of events
        self.drawn = now
        self.live.update(self.render(run), refresh=True)

    def render(self, run: "Run") -> Table:
        c, b = run.counters, run.ws.config.budgets
        best = run.fold.best
        table = Table(title=f"kopt run {run.ws.config.run_id}  ({run.ws.config.model})", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        elapsed = run.elapsed_s
        table.add_row("elapsed", f"{elapsed / 60:.1f} min" + (f" of {b.max_hours * 60:.0f}" if b.max_hours else ""))
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
        table.add_row("last", escape(self.last))
        return table


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
