"""`kopt status | history | report | compare | export`: the terminal side of harness.inspect.

Printing happens here (the CLI's side); harness.inspect, report and atif only read and compute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console, Group as RichGroup
from rich.markup import escape
from rich.table import Table

COMMANDS = ("status", "history", "report", "compare", "export")
WATCH_EVERY_S = 2.0


def add_parsers(sub) -> None:
    st = sub.add_parser("status", help="where a run stands, from its files (safe while it runs)")
    st.add_argument("run_dir")
    st.add_argument("--watch", action="store_true", help=f"refresh every {WATCH_EVERY_S:g} s until Ctrl-C")
    hi = sub.add_parser("history", help="every candidate of a run: time, tool calls, status, score, workloads")
    hi.add_argument("run_dir")
    hi.add_argument("--json", action="store_true", help="print JSON for scripts")
    rep = sub.add_parser("report", help="write a self-contained HTML report of a run")
    rep.add_argument("run_dir")
    rep.add_argument("-o", "--output", default=None, help="HTML file (default RUN_DIR/report.html)")
    cmp = sub.add_parser("compare", help="median and spread over repeated runs, per model and task; --markdown or "
                         "--html: the per-model report (verdicts, per workload, traps, stability)")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (a `kopt sweep` directory "
                     "stands for all its runs)")
    form = cmp.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON for scripts")
    form.add_argument("--markdown", action="store_true", help="the per-model report as Markdown")
    form.add_argument("--html", action="store_true", help="the per-model report as one self-contained HTML file")
    cmp.add_argument("-o", "--output", default=None, help="write the report to this file (default: standard output)")
    cmp.add_argument("--reach", type=float, default=0.9,
                     help="effort is counted up to the first evaluation scoring >= REACH x the run's best")
    ex = sub.add_parser("export", help="export a run's trajectory (ATIF)")
    ex.add_argument("run_dir")
    ex.add_argument("--atif", action="store_true", required=True, help="Agent Trajectory Interchange Format (Harbor)")
    ex.add_argument("-o", "--output", required=True, help="JSON file to write")


def run_command(args: argparse.Namespace) -> int:
    from kopt.harness.inspect import NotARun
    commands = {"status": cmd_status, "history": cmd_history, "report": cmd_report, "compare": cmd_compare,
                "export": cmd_export}
    try:
        return commands[args.command](args)
    except NotARun as exc:
        Console(stderr=True).print(f"[bold red]kopt: error:[/] {escape(str(exc))}", highlight=False)
        return 2


def wide_console() -> Console:
    """Tables keep their columns when piped (a pipe has no width; rich would assume 80)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def amount(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def clock(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


# ---- status

def status_table(view, now: float | None = None) -> RichGroup:
    from kopt.harness.panel import describe, evaluation_view, segment_text, span
    now = time.time() if now is None else now
    c, best = view.counters, view.best
    state, why = view.state(now)
    colour = {"running": "green", "ended": "blue"}.get(state, "yellow")
    table = Table(title=f"kopt run {view.run_id}  ({view.model} on {view.task})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", f"[{colour}]{state}[/]: {escape(why)}")
    elapsed = view.fold.elapsed_at(now) if state == "running" else view.elapsed_s  # ticks while it runs
    table.add_row("elapsed", span(elapsed))
    table.add_row("tool calls", str(c.tool_calls))
    table.add_row("evaluations", f"{c.evaluations} ({c.failed_evaluations} did not pass)")
    table.add_row("best", f"candidate {best.candidate:04d}: {best.score:.4f} {escape(best.label)}; found at "
                          f"{clock(best.elapsed_s)}, tool call {best.tool_calls}, evaluation {best.index}"
                  if best else "no passing candidate yet")
    if best is not None and best.agent is not None:
        table.add_row("best found by", view.best_found())
    for a in view.agents(now):
        mine = (f"best {a.best.candidate:04d}: {a.best.score:.4f} at {clock(a.best.elapsed_s)}" if a.best
                else "no passing candidate")
        held = " (holds the run's best)" if best is not None and best.agent == a.agent else ""
        end = a.state + (f" ({a.end[1].splitlines()[0][:60]})" if a.end and a.end[1] else "")
        table.add_row(a.name, escape(f"{a.evaluations} evaluations ({a.failed} did not pass); {mine}{held}; {end}"))
    for name, limit, used in view.budgets_left():
        table.add_row(f"budget {name}", f"{amount(max(limit - used, 0))} left ({amount(used)} of {amount(limit)} used)")
    table.add_row("tokens / cost", f"{c.input_tokens + c.output_tokens:,} / ${c.cost_usd:.4f}")
    extras = [("redesigns", view.redesigns), ("stall warnings", view.stall_warnings), ("model retries", c.retries),
              ("forbidden attempts", c.forbidden), ("resumes", view.resumes)]
    for name, value in extras:
        if value:
            table.add_row(name, str(value))
    if len(view.fold.segments) > 1:
        table.add_row("segment", segment_text(view.fold))
    evaluating = evaluation_view(view.fold.evaluating, elapsed) if state == "running" else None
    if evaluating is not None:
        table.add_row("evaluating", evaluating)
    recent = Table(title="last events", show_header=False, box=None)
    for event in view.recent:
        who = () if not view.several_agents else ("run" if event.agent is None else f"agent {event.agent}",)
        recent.add_row(f"{event.elapsed_s:9.1f}s", *who, escape(describe(event)))
    return RichGroup(table, recent)


def cmd_status(args: argparse.Namespace) -> int:
    from kopt.harness.inspect import load
    console = Console()
    root = Path(args.run_dir)
    if not args.watch:
        console.print(status_table(load(root)))
        return 0
    return watch(console, root)


def watch(console: Console, root: Path) -> int:
    """Redraw until Ctrl-C (or SIGTERM): the log is re-read every WATCH_EVERY_S, the clock ticks between."""
    import signal
    import threading

    from rich.live import Live

    from kopt.harness.inspect import load
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        view = load(root)
        with Live(status_table(view), console=console, auto_refresh=False) as live:
            read = time.monotonic()
            while not stop.wait(0.5):
                if time.monotonic() - read >= WATCH_EVERY_S:
                    view, read = load(root), time.monotonic()
                live.update(status_table(view), refresh=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# ---- history

def cmd_history(args: argparse.Namespace) -> int:
    from kopt.harness.inspect import history, load
    view = load(Path(args.run_dir))
    rows = history(view)
    if args.json:
        print(json.dumps({"run_id": view.run_id, "model": view.model, "task": view.task, "score_label": view.label,
                          "candidates": [asdict(r) for r in rows]}, indent=1))
        return 0
    interpreter = "interpreter" in view.label
    # Plain aligned text, not a rich table: thousands of rows print at once and grep well.
    print(f"{len(rows)} candidates of run {view.run_id} ({view.model} on {view.task}); score: "
          f"{view.label or 'none passed yet'}" + (" -- NOT a GPU speedup" if interpreter else ""))
    several = view.several_agents  # a run of several agents: who evaluated each candidate
    header = ("id", *(("agent",) if several else ()), "parent", "time", "tool call", "status", "score",
              "regs/spill/smem", "workloads (" + ("interpreter ratios" if interpreter else "speedups") + ")", "note")
    right = (0, 1, 2, 4, 6) if several else (0, 1, 3, 5)
    table = [header]
    for r in rows:
        mark = " BEST" if r.best else " *" if r.new_best else ""
        what = r.note + (f" [{r.phase or r.status}: {r.reason[:160]}]" if r.status != "ok" else "")
        what += "".join(f" [rescored: {x}]" for x in r.rescored)
        table.append((f"{r.id:04d}{mark}", *((fmt(r.agent),) if several else ()),
                      "-" if r.parent is None else f"{r.parent:04d}",
                      "-" if r.elapsed_s is None else clock(r.elapsed_s), fmt(r.tool_index), r.status, fmt(r.score),
                      f"{fmt(r.max_registers)}/{fmt(r.total_spill_bytes)}/{fmt(r.max_shared_bytes)}",
                      " ".join(f"{k} {v:.3f}" for k, v in r.workloads.items()), what.replace("\n", " ")))
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    out = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in
                     enumerate(zip(line, widths))) + "  " + line[-1] for line in table]
    print("\n".join(out))
    found = f", found by {view.best_found()}" if view.best_found() else ""
    print("* raised the best so far; BEST: the run's best" + (f" (candidate {view.best.candidate:04d}{found})"
                                                              if view.best else ""))
    for a in view.agents():
        mine = f"best {a.best.candidate:04d} ({a.best.score:.4f})" if a.best else "no passing candidate"
        print(f"{a.name}: {a.evaluations} evaluations, {mine}, {a.state}")
    return 0


# ---- report, export

def cmd_report(args: argparse.Namespace) -> int:
    from kopt.harness.report import write
    started = time.monotonic()
    out = write(Path(args.run_dir), Path(args.output) if args.output else None)
    Console().print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {time.monotonic() - started:.1f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from kopt.harness.atif import write
    except ImportError:
        Console(stderr=True).print("[bold red]kopt: error:[/] ATIF export needs the atif package: "
                                   "pip install 'kopt[export]'")
        return 2
    out = write(Path(args.run_dir), Path(args.output))
    Console().print(f"wrote {out} (ATIF)")
    return 0


# ---- compare

METRIC_NAMES = {"best_score": "best score", "evals_to_reach": "evaluations to reach {reach:g} x best",
                "tool_calls_to_reach": "tool calls to reach {reach:g} x best", "evaluations": "evaluations",
                "tool_calls": "tool calls", "elapsed_s": "wall time (s)", "tokens": "tokens (in + out)",
                "cost_usd": "cost (USD)", "forbidden": "forbidden actions attempted", "redesigns": "redesigns",
                "hours_to_reach": "hours to reach {reach:g} x best", "tool_calls_per_eval": "tool calls per evaluation",
                "stall_warnings": "stall warnings"}


def figure_format(name: str):
    """Scores, costs and hours to 4 decimals; counts, tokens and seconds as plain numbers (a median may end in .5)."""
    def show(value) -> str:
        if value is None:
            return "-"
        if name.startswith(("best score", "cost", "hours")):
            return f"{value:.4f}"
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return show


def cmd_compare(args: argparse.Namespace) -> int:
    from kopt.harness.inspect import compare, load
    from kopt.harness.sweep import SweepError, expand
    if not 0 < args.reach <= 1:
        Console(stderr=True).print("[bold red]kopt: error:[/] --reach must be in (0, 1], e.g. 0.9")
        return 2
    if args.output and not (args.markdown or args.html):
        Console(stderr=True).print("[bold red]kopt: error:[/] -o writes the report: add --markdown or --html")
        return 2
    try:
        dirs = list(expand(map(Path, args.run_dirs)))
    except SweepError as exc:
        Console(stderr=True).print(f"[bold red]kopt: error:[/] {escape(str(exc))}", highlight=False)
        return 2
    groups = compare([load(d) for d in dirs], args.reach)
    if args.markdown or args.html:
        return write_board(groups, args)
    if args.json:
        print(json.dumps({"reach": args.reach, "groups": [asdict(g) for g in groups]}, indent=1))
        return 0
    console = wide_console()
    for g in groups:
        kind = f"{g.kind}, {g.measured_on}" if g.measured_on else g.kind
        table = Table(title=f"{g.model} on {g.task} ({kind}): {len(g.runs)} runs", caption="runs: " + ", ".join(
            r.run_id for r in g.runs))
        for col in ("", "median", "min - max", "values (per run)"):
            table.add_column(col)
        rows = [(METRIC_NAMES[k].format(reach=args.reach), s) for k, s in g.stats.items()]
        rows += [(f"failed evaluations: {phase}", s) for phase, s in g.failed_by_phase.items()]
        for name, s in rows:
            show = figure_format(name)
            table.add_row(name, show(s.median), f"{show(s.min)} - {show(s.max)}", ", ".join(map(show, s.values)))
        table.add_row("how runs ended", "", "", ", ".join(f"{reason} x{n}" for reason, n in g.ends.items()))
        if g.several_agents:  # runs of several agents: how many, and which agent found each run's best
            table.add_row("agents", "", "", "; ".join(r.agents_text for r in g.runs))
        console.print(table)
    if not groups:
        console.print("no runs")
    return 0


def write_board(groups, args: argparse.Namespace) -> int:
    from kopt.harness import board
    blocks = board.document(groups, args.reach)
    text = board.markdown(blocks) if args.markdown else board.html(blocks)
    if not args.output:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.write_text(text, encoding="utf-8")
    Console(stderr=True).print(f"wrote {out} ({len(groups)} model groups)", highlight=False)
    return 0
