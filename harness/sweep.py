"""`kopt sweep`: N runs of each of several models on one task with the same budgets, resumable.

OUT/sweep.json holds the plan (task, models, runs per model, the configuration every run
shares); each (model, run) is a normal run directory, OUT/<model>/run-<k>, that `kopt status`,
`report`, `resume` and `compare` read like any other. Re-running the same command skips the
runs that ended, continues those that did not and starts the missing ones. More runs or models
may be added later; the task, budgets and device stay the plan's, or the runs would not compare.
Run k of every model gets the same evaluation secret, so the same hidden cases.

Runs go through a runner: `Sequential` runs them one after another, each as a
`kopt resume RUN_DIR` subprocess logging to OUT/logs/ (another runner implements `Executor.run`
and is named in EXECUTORS). Each run's evaluations go through the executor its flags name
(`--executor local|ray`, as for `kopt run`), so a sweep on a Ray cluster spreads them there.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from kopt.harness import events as ev
from kopt.harness.config import Budgets, RunConfig, StallPolicy, add_flags, flag_values, task_prompts
from kopt.harness.fold import Fold
from kopt.harness.trajectory import TRAJECTORY, UnsupportedTrajectory, write_atomic
from kopt.harness.workspace import RUN_JSON, Workspace

PLAN = "sweep.json"
LOGS = "logs"
LOCK = ".lock"
WATCH_S = 1.0  # the progress view's refresh while a run executes
TERMINAL = {"finished", "budget", "model_error", "stalled"}  # as harness.run: a run that ended so is not resumed
# The run flags a sweep shares across its runs: all but the model (per run) and --approve (unattended).
SHARED = tuple(n for n in (*RunConfig.model_fields, *Budgets.model_fields, *StallPolicy.model_fields)
               if n not in ("model", "approve"))


class SweepError(ValueError):
    """A bad sweep command or directory: the message names the problem and the fix."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    spec: str  # as `kopt run --model`
    base_url: str | None = None  # its own endpoint (SPEC@URL), else the sweep's --base-url
    slug: str  # its directory under OUT


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sweep_format: Literal["1"] = "1"
    task: str  # name or directory, as given
    task_hash: str
    models: list[Model]
    runs: int
    shared: dict[str, Any]  # RunConfig fields every run gets, as JSON
    secret: int  # run k's evaluation secret derives from it and k
    created: float

    def run_secret(self, k: int) -> int:
        return int(hashlib.sha256(f"{self.secret}:run:{k}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Job:
    """One run of the sweep: a run directory that `kopt resume` takes to its end."""

    model: Model
    k: int
    root: Path
    log: Path

    @property
    def name(self) -> str:
        return f"{self.model.slug}/run-{self.k}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "kopt.harness.cli", "resume", str(self.root)]


# ---- the plan

def parse_models(text: str) -> list[tuple[str, str | None]]:
    """'builtin,openai:qwen3@http://localhost:8000/v1' -> [(spec, base_url or None), ...]."""
    from kopt.agent.model import ModelError
    from kopt.harness.models import check_spec
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            raise SweepError(f"--models {text!r} has an empty entry: give comma-separated specs, e.g. "
                             "builtin,openai:MODEL@http://localhost:8000/v1")
        at = entry.find("@http")
        spec, url = (entry[:at], entry[at + 1:]) if at > 0 else (entry, None)
        try:
            check_spec(spec)
        except ModelError as exc:
            raise SweepError(str(exc)) from None
        if (spec, url) in found:
            raise SweepError(f"--models names {entry} twice")
        found.append((spec, url))
    return found


def slug(spec: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-.") or "model"
    name, n = base, 1
    while name in taken or name == LOGS:
        n += 1
        name = f"{base}-{n}"
    return name


def read_plan(out: Path) -> Plan | None:
    path = out / PLAN
    if not path.is_file():
        return None
    try:
        return Plan.model_validate_json(path.read_bytes())
    except (ValidationError, OSError) as exc:
        raise SweepError(f"{path} is not a readable sweep plan ({str(exc).splitlines()[0]})") from None


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def plan_for(out: Path, task, models: list[tuple[str, str | None]], runs: int, shared: dict[str, Any]) -> Plan:
    """The plan of OUT: a new one, or the existing one grown by more runs or models (never changed)."""
    plan = read_plan(out)
    if plan is None:
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise SweepError(f"{out} exists and is not a sweep directory (no {PLAN}): give a new or empty --out")
        taken: set[str] = set()
        entries = []
        for spec, url in models:
            entries.append(Model(spec=spec, base_url=url, slug=slug(spec, taken)))
            taken.add(entries[-1].slug)
        return Plan(task=str(task.name), task_hash=task.hash, models=entries, runs=runs, shared=shared,
                    secret=secrets.randbits(62), created=time.time())
    if plan.task_hash != task.hash:
        raise SweepError(f"task {task.name} changed since this sweep started (hash {task.hash[:12]} != "
                         f"{plan.task_hash[:12]}): its runs would not compare; use another --out")
    was, now = flat(plan.shared), flat(shared)
    changed = [f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    if changed:
        raise SweepError(f"{out} was planned with other settings ({'; '.join(changed)}): re-run with the plan's "
                         f"flags (see {out / PLAN}), or use another --out")
    have = {(m.spec, m.base_url) for m in plan.models}
    missing = [m.spec for m in plan.models if (m.spec, m.base_url) not in models]
    if missing:
        raise SweepError(f"{out} also plans {', '.join(missing)}: name every planned model in --models "
                         "(new ones may be added)")
    if runs < plan.runs:
        raise SweepError(f"{out} plans {plan.runs} runs per model: --runs may grow, not shrink")
    taken = {m.slug for m in plan.models}
    added = []
    for spec, url in models:
        if (spec, url) not in have:
            added.append(Model(spec=spec, base_url=url, slug=slug(spec, taken)))
            taken.add(added[-1].slug)
    return plan.model_copy(update={"models": plan.models + added, "runs": runs})


def jobs_of(out: Path, plan: Plan) -> list[Job]:
    """Run 1 of every model, then run 2, ...: a sweep stopped half-way has as many runs of each."""
    return [Job(m, k, out / m.slug / f"run-{k}", out / LOGS / f"{m.slug}-run-{k}.log")
            for k in range(1, plan.runs + 1) for m in plan.models]


def config_for(job: Job, plan: Plan, task) -> RunConfig:
    """The job's run configuration: what `kopt run` would make of the sweep's shared flags and its model."""
    try:
        return RunConfig.model_validate({
            **plan.shared, "run_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{task.name}-{job.model.slug}-{job.k}",
            "task": str(task.root), "task_hash": task.hash, "editable_file": task.config.editable_file,
            "prompts": task_prompts(task.root), "model": job.model.spec,
            "base_url": job.model.base_url or plan.shared.get("base_url"), "secret": plan.run_secret(job.k)})
    except ValidationError as exc:
        raise SweepError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


def check_key(config: RunConfig) -> None:
    from kopt.agent.model import ModelError
    from kopt.harness.models import CLIENTS, api_key
    kind = config.model.partition(":")[0]
    if kind in CLIENTS:
        try:
            api_key(config, kind)
        except ModelError as exc:
            raise SweepError(f"{config.model}: {exc}") from None


def hold(out: Path) -> Any:
    """OUT for this process until the handle closes: a second `kopt sweep` of it refuses meanwhile."""
    handle = open(out / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SweepError(f"{out} is in use by another kopt sweep: let it end, or stop it (Ctrl-C) first") from None
    return handle


def prepare(args: argparse.Namespace) -> tuple[Path, Plan, list[Job], Any]:
    """Check the command, then hold OUT, write or grow its plan and create the missing run directories:
    (OUT, plan, jobs, the held lock)."""
    from kopt.verifier.compile import TargetError, parse_target
    from kopt.verifier.task import TaskError, load_task
    if args.runs < 1:
        raise SweepError("--runs must be at least 1")
    if args.max_usd is not None and not (args.price_input_per_mtok or args.price_output_per_mtok):
        raise SweepError("--max-usd needs the models' prices: give --price-in and --price-out (USD per million "
                         "tokens)")
    models = parse_models(args.models)
    try:
        task = load_task(args.task)
        if args.target:
            parse_target(args.target)
    except (TaskError, TargetError) as exc:
        raise SweepError(str(exc)) from None
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SweepError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    out = Path(args.out)
    plan = plan_for(out, task, models, args.runs, shared_flags(args))  # a bad OUT: refused before any write
    jobs = jobs_of(out, plan)
    for model in plan.models:  # a missing key: said now, not once per run in its log
        check_key(config_for(next(j for j in jobs if j.model == model), plan, task))
    out.mkdir(parents=True, exist_ok=True)
    lock = hold(out)
    try:  # planned again under the lock: another sweep may have grown the plan meanwhile
        plan = plan_for(out, task, models, args.runs, shared_flags(args))
        jobs = jobs_of(out, plan)
        configs = {job: config_for(job, plan, task) for job in jobs if not (job.root / RUN_JSON).is_file()}
        write_atomic(out / PLAN, plan.model_dump_json(indent=2))
        for job, config in configs.items():
            Workspace.create(job.root, config, task.baseline_path, task.instruction_text())
    except FileExistsError as exc:
        lock.close()
        raise SweepError(f"{exc} (a run directory of this sweep without its {RUN_JSON})") from None
    except SweepError:
        lock.close()
        raise
    return out, plan, jobs, lock


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Run directories, a sweep directory standing for those of its runs that exist."""
    for path in paths:
        plan = None if (path / RUN_JSON).is_file() else read_plan(path)
        if plan is None:
            yield path
        else:
            yield from (j.root for j in jobs_of(path, plan) if (j.root / RUN_JSON).is_file())


# ---- following runs and executing them

class Follower:
    """A run's fold, kept current by reading only what its log gained since the last poll."""

    def __init__(self, root: Path):
        self.path, self.fold, self.offset = root / TRAJECTORY, Fold(), 0

    def poll(self) -> Fold:
        if not self.path.exists():
            return self.fold
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # being written: read it next time
                try:
                    self.fold.apply(ev.parse(line))
                except (ValueError, UnicodeDecodeError, UnsupportedTrajectory):
                    break
                self.offset += len(line)
        return self.fold

    @property
    def ended(self) -> bool:
        return self.fold.end is not None and self.fold.end[0] in TERMINAL


Watch = Callable[[Job, str, int | None], None]  # (job, "running" | "stopping" | "ended", exit code once ended)


class Executor(Protocol):
    def run(self, jobs: Sequence[Job], watch: Watch) -> dict[Job, int]:
        """Take every job to its end (exit code per job), calling watch(job, "running", None) at least every
        WATCH_S while it runs and watch(job, "ended", code) after. On KeyboardInterrupt: ask the running runs
        to stop (SIGINT: they end 'interrupted' after their current step, resumable), call
        watch(job, "stopping", None) for each, wait for them, and re-raise."""


class Sequential:
    """One run at a time, each a `kopt resume` subprocess in its own session (a Ctrl-C reaches it through us)."""

    def run(self, jobs: Sequence[Job], watch: Watch) -> dict[Job, int]:
        codes: dict[Job, int] = {}
        for job in jobs:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            watch(job, "running", None)
            with open(job.log, "ab") as log:
                proc = subprocess.Popen(job.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
                try:
                    while True:
                        try:
                            codes[job] = proc.wait(timeout=WATCH_S)
                            break
                        except subprocess.TimeoutExpired:
                            watch(job, "running", None)
                except KeyboardInterrupt:
                    proc.send_signal(signal.SIGINT)  # the run ends after its current step, resumable
                    watch(job, "stopping", None)
                    watch(job, "ended", proc.wait())
                    raise
            watch(job, "ended", codes[job])
        return codes


EXECUTORS: dict[str, Callable[[], Executor]] = {"sequential": Sequential}


def add_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="N runs of each of several models on one task with the same budgets; "
                        "re-run the same command to continue it")
    sw.add_argument("--task", default="extend_attention", help="built-in task name or task directory")
    sw.add_argument("--models", required=True, help="comma-separated model specs as for `kopt run --model`; "
                    "SPEC@URL gives one model its own base URL, e.g. builtin,openai:qwen3@http://localhost:8000/v1")
    sw.add_argument("--runs", type=int, default=3, help="runs per model")
    sw.add_argument("--out", required=True, help="the sweep directory: OUT/<model>/run-<k> per run")
    add_flags(sw, RunConfig, only=SHARED)


def shared_flags(args: argparse.Namespace) -> dict[str, Any]:
    values = flag_values(args, RunConfig)
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in values.items()}


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from kopt.harness.progress import SweepView
    err = Console(stderr=True)
    try:
        out, plan, jobs, lock = prepare(args)
    except SweepError as exc:
        err.print(f"[bold red]kopt: error:[/] {escape(str(exc))}", highlight=False)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=200)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    interrupted = False
    try:
        with SweepView(out, plan, jobs, console, err) as view:
            todo = [job for job in jobs if job not in view.before]
            try:
                EXECUTORS["sequential"]().run(todo, view.watch)
            except KeyboardInterrupt:
                interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        lock.close()
    for follower in view.followers.values():
        follower.poll()
    left = [job for job in jobs if not view.followers[job].ended]
    if interrupted:
        console.print(f"sweep interrupted: {len(left)} run{'' if len(left) == 1 else 's'} left; re-run the same "
                      "command to continue")
        return 3
    console.print(f"report: kopt compare {out} --markdown -o {out / 'report.md'}")
    if left:
        console.print(f"{len(left)} of {len(jobs)} runs did not end: " + ", ".join(f"{j.name} (log {j.log})"
                                                                                   for j in left)
                      + "; re-run the same command to continue them")
        return 1
    return 0
