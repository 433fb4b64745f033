"""The terminal view of a sweep: every run one row, redrawn while runs execute (harness.sweep)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from kopt.harness.sweep import Follower, Job, Plan


class SweepView:
    """Every run of the sweep, one row each, redrawn while runs execute (a line per start and end when piped)."""

    def __init__(self, out: Path, plan: Plan, jobs: list[Job], console, err):
        self.out, self.plan, self.jobs, self.console, self.err = out, plan, jobs, console, err
        self.followers = {job: Follower(job.root) for job in jobs}
        for f in self.followers.values():
            f.poll()
        self.before = {job for job, f in self.followers.items() if f.ended}  # ended before this command
        self.codes: dict[Job, int] = {}
        self.active: Job | None = None
        self.started = time.monotonic()
        self.live = None

    def __enter__(self) -> "SweepView":
        if self.console.is_terminal:
            from rich.live import Live
            self.live = Live(self.table(), console=self.console, auto_refresh=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self.table(), refresh=True)
            self.live.__exit__(*exc)
        else:
            self.console.print(self.table())

    def watch(self, job: Job, what: str, code: int | None) -> None:
        fold = self.followers[job].poll()
        if what == "stopping":
            self.err.print(f"stopping {job.name} after its current step (it stays resumable)", highlight=False)
        elif what == "running" and self.active is not job:
            self.active = job
            self.say(f"{job.name}: {'resumed' if fold.last is not None else 'started'} (log {job.log})")
        elif what == "ended":
            self.codes[job], self.active = code, None
            best = f"best {fold.best.score:.4f} {fold.best.label}" if fold.best else "no passing candidate"
            end = fold.end[0] + (f" ({fold.end[1][:120]})" if fold.end[1] else "") if fold.end else f"exit {code}"
            self.say(f"{job.name}: {end}; {fold.counters.evaluations} evaluations, {best}")
        if self.live:
            self.live.update(self.table(), refresh=True)

    def say(self, line: str) -> None:
        if self.live is None:
            self.console.print(f"[{time.monotonic() - self.started:8.1f}s] {escape(line)}", highlight=False)

    def state(self, job: Job) -> str:
        f = self.followers[job]
        if f.ended:
            return ("ended earlier: " if job in self.before else "ended: ") + f.fold.end[0]
        if job is self.active:
            return "running"
        if job in self.codes:
            return f"stopped: {f.fold.end[0] if f.fold.end else f'exit {self.codes[job]}'} (resumable)"
        return "to resume" if f.fold.last is not None else "to do"

    def table(self):
        ended = sum(f.ended for f in self.followers.values())
        labels = sorted({f.fold.best.label for f in self.followers.values() if f.fold.best})
        table = Table(title=f"kopt sweep {self.out}: {self.plan.task}, {len(self.plan.models)} models x "
                            f"{self.plan.runs} runs; {ended} of {len(self.jobs)} ended; "
                            f"{(time.monotonic() - self.started) / 60:.1f} min",
                      caption=f"best: {', '.join(labels)}" if labels else None)
        table.add_column("run", no_wrap=True)
        for col in ("state", "evals", "best", "tool calls", "tokens", "cost", "run time"):
            table.add_column(col)
        for job in self.jobs:
            fold = self.followers[job].fold
            c, best = fold.counters, fold.best
            table.add_row(escape(job.name), escape(self.state(job)),
                          f"{c.evaluations}" + (f" ({c.failed_evaluations} failed)" if c.failed_evaluations else ""),
                          f"{best.score:.4f}" if best else "-", str(c.tool_calls),
                          f"{c.input_tokens + c.output_tokens:,}", f"${c.cost_usd:.4f}",
                          f"{fold.last.elapsed_s / 60:.1f} min" if fold.last else "-")
        return table
