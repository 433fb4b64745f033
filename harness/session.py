"""`kopt run` and `kopt resume`: wire a task, a model, the verifier and a run directory together."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from kopt.agent.model import ModelError
from kopt.harness.models import build_model, check_spec, default_context_tokens, preflight
from kopt.harness.panel import RunPanel, print_summary
from kopt.harness.run import Run, new_run_id
from kopt.harness.trajectory import CorruptTrajectory, UnsupportedTrajectory
from kopt.harness.config import Budgets, RunConfig, flag_values, task_prompts
from kopt.harness.workspace import RunLocked, Workspace
from kopt.verifier.compile import TargetError, parse_target
from kopt.verifier import sandbox
from kopt.harness.executor import Executor, ExecutorError, make_executor
from kopt.verifier.evaluate import compile_only, resolve_device
from kopt.verifier.progress import Progress
from kopt.verifier.task import Task, TaskError, load_task

EXIT = {"finished": 0, "budget": 0, "stalled": 0, "already_ended": 0, "interrupted": 3, "provider_outage": 3, "model_error": 1}
REPO_WORKSPACES = Path(__file__).resolve().parents[1] / "workspaces"
MCP_MODEL = "mcp"  # run.json's model for a run created by `kopt mcp` (the client is named in the trajectory)


def fail(message: str) -> int:
    Console(stderr=True).print(f"[bold red]kopt: error:[/] {escape(message)}", highlight=False)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    try:
        check_spec(args.model)
    except ModelError as exc:
        return fail(str(exc))
    if args.max_usd is not None and not (args.price_input_per_mtok or args.price_output_per_mtok):
        return fail("--max-usd needs the model's prices: give --price-in and --price-out (USD per million tokens)")
    created = create(args, check_model=True)
    return created if isinstance(created, int) else execute(*created)


def create(args: argparse.Namespace, check_model: bool = False, **fixed) -> tuple[Workspace, Task] | int:
    """A new run directory from the flags (`fixed`: config fields the command sets), or an exit code. Nothing
    is written until the run can start: the flags, the task, the target and (check_model) the model's key and
    endpoint are checked first."""
    try:
        task = load_task(args.task)
        if args.target:
            parse_target(args.target)
    except (TaskError, TargetError) as exc:
        return fail(str(exc))
    try:
        from kopt.verifier.devices import check_name
        check_name(args.device)
    except ValueError as exc:
        return fail(str(exc))
    if getattr(args, "executor", "local") == "ray":
        import importlib.util
        if importlib.util.find_spec("ray") is None:
            return fail("--executor ray needs Ray: pip install 'kopt[ray]' (or use --executor local)")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return fail(f"--device {args.device} but no CUDA GPU is visible: use --device cpu, sim or auto")
    run_id = f"{new_run_id()}-{task.name}"
    root = Path(args.run_dir) if args.run_dir else REPO_WORKSPACES / run_id
    try:
        config = make_config(args, task, run_id, **fixed)
    except ValidationError as exc:
        return fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        return fail(f"{root} already exists and is not empty: use `kopt resume {root}` or another --run-dir")
    if check_model:
        try:
            preflight(config, task)
        except ModelError as exc:
            return fail(str(exc))
    try:
        return Workspace.create(root, config, task.baseline_path, task.instruction_text()), task
    except FileExistsError as exc:
        return fail(str(exc))


def make_config(args: argparse.Namespace, task: Task, run_id: str, **fixed) -> RunConfig:
    return RunConfig(run_id=run_id, task=str(task.root), task_hash=task.hash, editable_file=task.config.editable_file,
                     prompts=task_prompts(task.root), **{**flag_values(args, RunConfig), **fixed})


def cmd_resume(args: argparse.Namespace) -> int:
    opened = open_run(Path(args.run_dir))
    if isinstance(opened, int):
        return opened
    if opened[0].config.model == MCP_MODEL:
        return fail(f"{args.run_dir} is driven over MCP: continue it with `kopt mcp {args.run_dir}`")
    return execute(*opened, budgets=flag_values(args, Budgets))


def open_run(root: Path) -> tuple[Workspace, Task] | int:
    """An existing run directory and its task (the same task, by hash), or an exit code."""
    try:
        ws = Workspace.open(root)
    except FileNotFoundError as exc:
        return fail(str(exc))
    task_dir = Path(ws.config.task)
    try:
        task = load_task(task_dir if task_dir.is_dir() else task_dir.name)  # moved machines: by name
    except TaskError as exc:
        return fail(f"the run's task is not available here: {exc}")
    if task.hash != ws.config.task_hash:
        return fail(f"task {task.name} changed since this run started (hash {task.hash[:12]} != "
                    f"{ws.config.task_hash[:12]}): its verdicts would not be comparable; start a new run")
    return ws, task


def verifier_for(config: RunConfig, task: Task, progress: Callable[[int, Progress], None] | None = None
                 ) -> tuple[Executor, Callable]:
    """(the run's executor: evaluate(source, candidate id), compile_report(source)) for the run's task, device,
    target and executor; `progress(candidate id, Progress)` hears how an evaluation is going. Raises
    ExecutorError when the executor cannot start."""
    executor = make_executor(config.executor, task, config.device, config.target, config.secret, progress,
                             ray_address=config.ray_address)

    def compile_candidate(source: str):
        return compile_only(source, task, config.target)
    return executor, compile_candidate


def cmd_mcp(args: argparse.Namespace) -> int:
    """`kopt mcp`: continue RUN_DIR as a new segment, or create a run from --task, and serve its tools on stdio."""
    try:
        from kopt.harness.server import Session, serve
    except ImportError:
        return fail("kopt mcp needs the MCP Python SDK: pip install 'kopt[mcp]'")
    target = Path(args.run_dir_arg) if args.run_dir_arg else None
    if target is not None and (target / "run.json").is_file():
        opened = open_run(target)
    else:
        if target is not None and args.run_dir is None:
            args.run_dir = str(target)
        opened = create(args, model=MCP_MODEL)
    if isinstance(opened, int):
        return opened
    ws, task = opened
    try:
        lock = ws.lock()
    except RunLocked as exc:
        return fail(str(exc))
    try:
        sandbox.sweep_stale_dirs()
        if ws.config.agents > 1:
            return fail(f"{ws.root} is a run of {ws.config.agents} agents, driven by kopt's own loop: continue it "
                        f"with `kopt resume {ws.root}`")
        run: Run | None = None
        try:
            executor, compile_candidate = verifier_for(
                ws.config, task, progress=lambda cid, p: run.evaluation_progress(cid, p) if run else None)
        except ExecutorError as exc:
            return fail(str(exc))
        try:
            try:
                run = Run(ws, None, executor.evaluate, compile_candidate, context_tokens=0, summarize=False)
            except (CorruptTrajectory, UnsupportedTrajectory) as exc:
                return fail(str(exc))
            Console(stderr=True).print(f"kopt mcp: serving run {ws.config.run_id} ({ws.root}) on stdio",
                                       highlight=False)
            serve(Session(ws, run))
            return 0
        finally:
            executor.close()
    finally:
        lock.close()


def execute(ws: Workspace, task: Task, budgets: dict | None = None) -> int:
    """Run (or resume) under the directory's lock; `budgets`: new totals for this segment (`kopt resume`)."""
    try:
        lock = ws.lock()
    except RunLocked as exc:
        return fail(str(exc))
    try:
        return _execute(ws, task, budgets or {})
    except ExecutorError as exc:
        return fail(str(exc))
    finally:
        lock.close()


def _execute(ws: Workspace, task: Task, budgets: dict) -> int:
    console = Console()
    config = ws.config
    sandbox.sweep_stale_dirs()  # what a killed kopt left behind
    made: list[Run] = []  # the run, once made: the executor's progress goes to it
    executor, compile_candidate = verifier_for(  # (raises ExecutorError: `execute` says why)
        config, task, progress=lambda cid, p: made[0].evaluation_progress(cid, p) if made else None)
    try:
        return _drive(ws, task, budgets, console, executor, compile_candidate, made)
    finally:
        executor.close()


def _drive(ws: Workspace, task: Task, budgets: dict, console: Console, executor: Executor, compile_candidate: Callable,
           made: list[Run]) -> int:
    config = ws.config

    approve = None
    if config.approve:
        def approve(candidate) -> bool:
            answer = console.input(f"evaluate candidate {candidate.name}? [Y/n] ").strip().lower()
            return answer in ("", "y", "yes")

    panel = RunPanel(console)
    offline = config.model == "builtin" or config.model.startswith("replay:")
    try:
        run = Run(ws, None, executor.evaluate, compile_candidate, on_event=panel.update, approve=approve,
                  context_tokens=config.context_tokens or default_context_tokens(config.model),
                  summarize=not offline)
    except (CorruptTrajectory, UnsupportedTrajectory) as exc:
        return fail(str(exc))
    made.append(run)
    refused = run.refuse_budgets(budgets)
    if refused:
        return fail(refused)
    if not budgets:
        done = run.ended()  # (a finish whose run_end a crash cut off is ended properly now)
        if done is not None:
            if done.reason == "already_ended":
                return already_ended(console, run, ws)
            print_summary(console, run, done.reason, done.detail)
            return EXIT.get(done.reason, 1)
    try:  # a replayed model goes on after the responses this run already consumed
        for seat in run.seats:  # (several agents: each its own client, so one's failures are its own)
            seat.model = build_model(config, task, on_retry=run.model_retry, outage_budget_s=config.outage_hours * 3600,
                                     device=resolve_device(config.device),
                                     consumed=seat.fold.counters.model_responses, agent=seat.agent)
        run.model = run.seats[0].model
    except ModelError as exc:
        return fail(str(exc))
    run.interrupts.on_change = panel.interrupted
    with panel.showing(run):
        stop = run.execute(budgets)
    print_summary(console, run, stop.reason, stop.detail)
    return EXIT.get(stop.reason, 1)


def already_ended(console: Console, run: Run, ws: Workspace) -> int:
    reason, detail = run.fold.end or ("finished", "")
    console.print(f"run {ws.config.run_id} already ended ({escape(reason)}" + (f": {escape(detail[:200])}" if detail else "")
                  + "); nothing to resume. To go on, extend it with new totals, e.g. "
                  f"`kopt resume {ws.root} --max-evals {run.counters.evaluations + 10}` (budgets count the whole run).",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(2)
