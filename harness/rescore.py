"""`kopt rescore RUN_DIR`: re-evaluate a run's passing candidates on this machine.

A run made on a CPU box (interpreter ratios) or on another GPU is re-judged here by the full
verifier, with a fresh secret. Nothing of the run is rewritten: each result is appended to
RUN_DIR/rescores.jsonl (one typed record per line) with its verdict in RUN_DIR/rescores/,
and `history`, `report` and `compare` show the rescored numbers with the device they are from.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kopt.harness.candidates import score
from kopt.verifier.verdict import Verdict

LOG = "rescores.jsonl"
VERDICTS = "rescores"


class Rescore(BaseModel):
    """One candidate re-evaluated on another machine or device."""

    model_config = ConfigDict(extra="forbid")
    candidate: int
    time: float
    device: str  # cpu | sim | cuda | cuda:N, as evaluated
    device_name: str  # the GPU's name, "simulated (CPU)" or "CPU"
    host: str
    status: str
    phase: str | None = None
    reason: str | None = None
    score: float | None
    kind: str | None  # gpu | interpreter | simulated: never pooled with the run's own scores
    label: str
    workloads: dict[str, float]
    verdict_file: str

    @property
    def where(self) -> str:
        kind = self.kind or self.device
        return self.device_name if kind.lower() in self.device_name.lower() else f"{self.device_name} ({kind})"


def read(root: Path) -> list[Rescore]:
    """Every rescore of a run, oldest first (a torn last line from a crash is skipped)."""
    path = Path(root) / LOG
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(Rescore.model_validate_json(line))
        except ValueError:
            continue
    return out


def latest(root: Path) -> dict[int, list[Rescore]]:
    """Per candidate, its latest rescore on each device kind/name."""
    found: dict[int, dict[str, Rescore]] = {}
    for r in read(root):
        found.setdefault(r.candidate, {})[r.where] = r
    return {cid: list(by.values()) for cid, by in found.items()}


def choose(rows: list, top: int) -> list:
    """The best `top` passing candidates by recorded score, then the latest passing ones, no repeats."""
    passing = [r for r in rows if r.status == "ok"]
    ranked = sorted((r for r in passing if r.score is not None), key=lambda r: -r.score)[:top]
    chosen = {r.id for r in ranked}
    for r in reversed(passing):
        if len(chosen) >= top:
            break
        chosen.add(r.id)
    return [r for r in rows if r.id in chosen]


def record(root: Path, cid: int, device: str, verdict: Verdict) -> Rescore:
    folder = root / VERDICTS
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"{cid:04d}-{device.replace(':', '')}-{stamp}-{os.getpid()}.json"
    path.write_text(verdict.model_dump_json(indent=1))
    value, label = score(verdict)
    entry = Rescore(candidate=cid, time=time.time(), device=device,
                    device_name=verdict.versions.get("device_name", "CPU"), host=platform.node(),
                    status=verdict.status, phase=verdict.phase, reason=verdict.reason, score=value,
                    kind=verdict.timing.kind if verdict.timing else None, label=label,
                    workloads={w.workload: w.speedup for w in verdict.timing.workloads} if verdict.timing else {},
                    verdict_file=str(path.relative_to(root)))
    with open(root / LOG, "ab") as f:  # append, fsynced: a crash loses at most the line being written
        f.write(entry.model_dump_json().encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def cmd_rescore(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from kopt.harness.inspect import NotARun, history, load
    from kopt.harness.workspace import RunLocked, Workspace
    from kopt.verifier.devices import check_name
    from kopt.verifier.evaluate import evaluate, resolve_device
    from kopt.verifier.task import TaskError, load_task
    err, out = Console(stderr=True), Console(highlight=False)
    root = Path(args.run_dir)
    try:
        check_name(args.device)
        if args.top < 1:
            raise ValueError(f"--top {args.top}: give 1 or more candidates")
        view = load(root)
        task_dir = Path(view.config.get("task", ""))
        task = load_task(task_dir if task_dir.is_dir() else task_dir.name)  # moved machines: by name
        lock = Workspace.open(root).lock()  # a live run is not rescored under its feet
    except (ValueError, NotARun, FileNotFoundError, TaskError, RunLocked) as exc:
        err.print(f"[bold red]kopt: error:[/] {escape(str(exc))}", highlight=False)
        return 2
    device = resolve_device(args.device)
    try:
        chosen = choose(history(view), args.top)
        if not chosen:
            err.print(f"{root}: no passing candidate to rescore")
            return 1
        for row in chosen:
            source = (root / "candidates" / f"{row.id:04d}.py").read_text()
            with err.status(f"rescoring candidate {row.id:04d} on {device}") as status:
                verdict = evaluate(source, task, device=device, target=args.target, progress=status.update)
            entry = record(root, row.id, device, verdict)
            was = f"{row.score:.3f} {row.label}" if row.score is not None else "no score"
            now = f"{entry.score:.3f} {entry.label}" if entry.score is not None else "no score"
            out.print(f"{row.id:04d}: {entry.status}" + (f" at {entry.phase}: {entry.reason[:200]}"
                                                         if entry.status != "ok" else "")
                      + f"  was {was}; now {now} on {entry.where}")
    finally:
        lock.close()
    out.print(f"recorded in {root / LOG} (the run's own verdicts are unchanged)")
    return 0
