"""The `kopt` command line. Logging and printing happen here, never in library code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class Help(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and not action.option_strings == []
        if shown and "%(default)" not in text and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    from kopt import __version__
    parser = argparse.ArgumentParser(prog="kopt", description="Unattended, verified GPU kernel optimisation.",
                                     formatter_class=Help)
    parser.add_argument("--version", action="version", version=f"kopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="verify one kernel file: static gate, compile, correctness, timing")
    ev.add_argument("kernel", help="path of the kernel file to judge")
    ev.add_argument("--task", default="extend_attention", help="built-in task name or task directory")
    ev.add_argument("--device", default="auto",
                    help="cuda or cuda:N: GPU checks and timing; cpu: AOT compile + interpreter; sim: the GPU path "
                    "simulated on CPU (labelled simulated, never GPU speed); auto: cuda if visible (default: auto)")
    ev.add_argument("--target", default=None, help="AOT compile target on CPU, e.g. sm_80, sm_90, sm_100, gfx942")
    ev.add_argument("--json", action="store_true", help="print the Verdict as JSON")
    ev.add_argument("--secret", type=int, default=None, help=argparse.SUPPRESS)  # reproduce an evaluation

    from kopt.harness.config import Budgets, RunConfig, add_flags
    run = sub.add_parser("run", help="start an optimisation run")
    run.add_argument("--task", default="extend_attention", help="built-in task name or task directory")
    run.add_argument("--run-dir", default=None, help="run directory (default: workspaces/<time>-<task>)")
    add_flags(run, RunConfig)  # every other flag: a field of the run's configuration

    res = sub.add_parser("resume", help="continue a run exactly where it stopped; new budgets extend it",
                         description="Continue a run where it stopped. Budgets are totals over the whole run: a "
                         "budget given here applies from now on and is recorded as a new segment, which also "
                         "extends a run that finished, reached a budget or stalled.")
    res.add_argument("run_dir")
    add_flags(res, RunConfig, only=tuple(Budgets.model_fields), defaults=False)

    mcp = sub.add_parser("mcp", help="serve a run's tools over MCP (stdio) to another agent scaffold")
    mcp.add_argument("run_dir_arg", nargs="?", metavar="RUN_DIR", help="a run to continue (a new segment), or where "
                     "to create one")
    mcp.add_argument("--task", default="extend_attention", help="built-in task name or task directory (new runs)")
    mcp.add_argument("--run-dir", default=None, help="run directory of a new run (default: workspaces/<time>-<task>)")
    add_flags(mcp, RunConfig, only=("device", "target", *Budgets.model_fields))

    tasks = sub.add_parser("tasks", help="the built-in tasks: name, description, directory")
    tasks.add_argument("--json", action="store_true", help="print JSON for scripts")

    selftest = sub.add_parser("selftest", help="can this machine's numbers be trusted? versions, device, the A/A "
                              "noise band, an honest kernel and cheats through the verifier")
    selftest.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or sim (default: auto)")
    selftest.add_argument("--task", default="rmsnorm", help=argparse.SUPPRESS)  # its kernels patch rmsnorm

    rescore = sub.add_parser("rescore", help="re-evaluate a run's passing candidates on this machine (recorded "
                             "beside the original verdicts)")
    rescore.add_argument("run_dir")
    rescore.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or sim (default: auto)")
    rescore.add_argument("--target", default=None, help="AOT compile target (default: the GPU's, or the task's)")
    rescore.add_argument("--top", type=int, default=5, help="how many candidates: the best N by their recorded "
                         "score, then the latest passing ones (default: 5)")

    from kopt.harness.views import add_parsers  # status, history, report, compare, export
    add_parsers(sub)
    from kopt.harness.sweep import add_parser as add_sweep
    add_sweep(sub)
    for command in sub.choices.values():
        command.formatter_class = Help
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eval":
        return cmd_eval(args)
    if args.command == "tasks":
        return cmd_tasks(args)
    if args.command == "selftest":
        from kopt.harness.selftest import cmd_selftest
        return cmd_selftest(args)
    if args.command == "rescore":
        from kopt.harness.rescore import cmd_rescore
        return cmd_rescore(args)
    if args.command == "sweep":
        from kopt.harness.sweep import cmd_sweep
        return cmd_sweep(args)
    from kopt.harness.views import COMMANDS, run_command
    if args.command in COMMANDS:
        return run_command(args)
    from kopt.harness.session import cmd_mcp, cmd_resume, cmd_run
    commands = {"run": cmd_run, "resume": cmd_resume, "mcp": cmd_mcp}
    return commands[args.command](args)


def usage_error(console: Console, message: str) -> int:
    console.print(f"[bold red]kopt: error:[/] {escape(message)}", highlight=False)
    return EXIT_USAGE


def cmd_tasks(args: argparse.Namespace) -> int:
    import json

    from kopt.verifier.task import builtin_tasks, load_task
    found = []
    for name in builtin_tasks():
        task = load_task(name)
        found.append({"name": task.name, "description": task.config.description, "directory": str(task.root),
                      "baseline": str(task.baseline_path)})
    if args.json:
        print(json.dumps(found, indent=1))
        return EXIT_OK
    table = Table(title="built-in tasks (`--task NAME`; any task directory works too)")
    for col in ("name", "description", "directory"):
        table.add_column(col)
    for t in found:
        table.add_row(t["name"], escape(t["description"]), t["directory"])
    Console().print(table)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from kopt.verifier.compile import TargetError, parse_target
    from kopt.verifier.evaluate import evaluate
    from kopt.verifier.task import TaskError, load_task

    err = Console(stderr=True)
    kernel = Path(args.kernel)
    if not kernel.is_file():
        return usage_error(err, f"kernel file {kernel} not found: give the path of a Python file holding the kernel")
    try:
        task = load_task(args.task)
        if args.target:
            parse_target(args.target)
        source = kernel.read_text()
    except (TaskError, TargetError) as exc:
        return usage_error(err, str(exc))
    except UnicodeDecodeError:
        return usage_error(err, f"{kernel} is not a UTF-8 text file")
    try:
        from kopt.verifier.devices import check_name
        check_name(args.device)
    except ValueError as exc:
        return usage_error(err, str(exc))
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return usage_error(err, f"--device {args.device} but no CUDA GPU is visible: use --device cpu, sim or "
                               "auto")
    with err.status(f"evaluating {kernel} on task {task.name}") as status:
        verdict = evaluate(source, task, device=args.device, target=args.target, secret=args.secret,
                           progress=lambda p: status.update(f"evaluating {kernel}: {p.text}"))
    if args.json:
        print(verdict.model_dump_json(indent=2))
    else:
        print_verdict(Console(), verdict, kernel)
    return EXIT_OK if verdict.passed else EXIT_REJECTED


def print_verdict(console: Console, verdict, kernel: Path) -> None:
    colour = {"ok": "green", "rejected": "red", "error": "yellow"}[verdict.status]
    console.print(f"[bold {colour}]{verdict.status.upper()}[/] {kernel}  task={verdict.task} device={verdict.device} "
                  f"target={verdict.target}", highlight=False)
    if verdict.reason:
        console.print(f"[{colour}]{escape(verdict.reason)}[/]", highlight=False)
    if verdict.compile and verdict.compile.kernels:
        table = Table(title=f"compiled for {verdict.compile.target} (shared limit {verdict.compile.shared_limit_bytes} B)")
        for col in ("kernel [constexprs]", "first compiled for", "warps", "stages", "registers", "spill B",
                    "shared B"):
            table.add_column(col, justify="right")
        for k in verdict.compile.kernels:
            table.add_row(escape(k.specialization or k.name), k.case or "-", str(k.num_warps), str(k.num_stages),
                          str(k.registers), str(k.spill_bytes), str(k.shared_bytes))
        console.print(table)
    if verdict.compile and verdict.compile.launches:
        from kopt.verifier.launches import render
        console.print(f"[bold]GPU workloads' launches[/] (compiled for {verdict.compile.target}; facts, not timings):")
        console.print(escape(render(verdict.compile.launches, verdict.compile.launch_errors)), highlight=False)
    if verdict.cases:
        table = Table(title="correctness")
        for col in ("case", "dtype", "result", "rel. L2", "max abs", "reason"):
            table.add_column(col)
        for c in verdict.cases:
            table.add_row("hidden" if c.hidden else c.case, c.dtype, "pass" if c.passed else "[red]FAIL[/]",
                          f"{c.rel_l2:.2e}" if c.rel_l2 is not None else "-",
                          f"{c.max_abs:.2e}" if c.max_abs is not None else "-", escape(c.reason or ""))
        console.print(table)
    if verdict.timing:
        t = verdict.timing
        table = Table(title=f"timing: {t.label}")
        for col in ("workload", "baseline ms", "candidate ms", "speedup", "floor ms", "SOL", "flags"):
            table.add_column(col)
        for w in t.workloads:
            table.add_row(w.workload, f"{w.baseline_ms:.3f}", f"{w.candidate_ms:.3f}", f"{w.speedup:.3f}x",
                          "-" if w.floor_ms is None else f"{w.floor_ms:.4f}",
                          "-" if w.sol_fraction is None else f"{w.sol_fraction:.2g}", "; ".join(w.flags))
        console.print(table)
        if t.geomean_speedup is not None:
            console.print(f"geomean speedup (GPU): [bold]{t.geomean_speedup:.3f}x[/] (A/A noise band +-{t.noise_band:.1%})")
        if t.simulated_ratio is not None:
            console.print(f"simulated time ratio baseline/candidate: {t.simulated_ratio:.3f} (A/A noise band "
                          f"+-{t.noise_band:.1%}) [dim](the GPU path's protocol on the CPU interpreter: not a GPU "
                          "speedup)[/]")
        if t.interpreter_ratio is not None:
            band = f" (A/A noise band +-{t.noise_band:.0%})" if t.noise_band is not None else ""
            console.print(f"interpreter (CPU) time ratio baseline/candidate: {t.interpreter_ratio:.3f}{band} "
                          "[dim](not a GPU speedup)[/]")
    if verdict.unverified:
        console.print("[bold yellow]UNVERIFIED[/] (what this verdict could not check):", highlight=False)
        for line in verdict.unverified:
            console.print(f"  - {escape(line)}", highlight=False)
    else:
        console.print("[green]fully verified[/] (nothing left unchecked)")
    phases = {k: v for k, v in verdict.wall_s.items() if k != "total"}
    total = f"total {verdict.wall_s['total']:.1f}; " if "total" in verdict.wall_s else ""
    console.print(f"wall s: {total}per phase (compile, correctness and baseline overlap): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), style="dim")


if __name__ == "__main__":
    sys.exit(main())
