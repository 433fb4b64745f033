"""A run directory (workspaces/<run-id>/) and the agent's confinement to it.

The agent may read its kernel, NOTES.md and instruction.md, and change only the kernel and
NOTES.md. Anything else it names is either a typo (an error message) or an attempt to reach
what it must not touch (refused and recorded as a forbidden action).
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kopt.harness.config import Budgets, Prompts, RunConfig, StallPolicy
from kopt.harness.trajectory import write_atomic

__all__ = ["Budgets", "Prompts", "RunConfig", "StallPolicy", "Workspace", "Forbidden", "ToolError", "RunLocked"]

NOTES = "NOTES.md"
INSTRUCTION = "instruction.md"
RUN_JSON = "run.json"
STOP_FILE = "STOP"
AGENTS = "agents"  # agents/N/: the files of each agent of a run of several
LOCK_FILE = ".lock"
# Names the agent must never read or write: the record of the run, the verifier's inputs.
OFF_LIMITS = ("trajectory.jsonl", "state.json", RUN_JSON, "candidates", "candidates/*", "best.py", "report.html", AGENTS,
              f"{AGENTS}/*",
              "reference.py", "task.toml", "baseline.py", "verifier", "verifier/*", "*.pt", "*.pyc", "__pycache__*",
              ".*")


class Forbidden(Exception):
    """An attempt to reach outside what the agent may touch; `kind` names which (harness.traps)."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


class RunLocked(Exception):
    """Another process holds the run directory."""


class ToolError(Exception):
    """Misuse the model can fix: the message goes back to it."""


class Workspace:
    def __init__(self, root: Path, config: RunConfig):
        self.root = root
        self.config = config

    @property
    def kernel(self) -> Path:
        return self.root / self.config.editable_file

    @property
    def notes(self) -> Path:
        return self.root / NOTES

    @classmethod
    def create(cls, root: Path, config: RunConfig, baseline: Path, instruction: str) -> "Workspace":
        """Built in a sibling temp dir and renamed into place: a crash leaves no half-made run."""
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(f"{root} already exists and is not empty: use `kopt resume {root}` or another --run-dir")
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        shutil.copyfile(baseline, staging / config.editable_file)
        (staging / INSTRUCTION).write_text(instruction)
        (staging / NOTES).write_text("# Notes\n")
        (staging / "candidates").mkdir()
        write_atomic(staging / RUN_JSON, config.model_dump_json(indent=2))
        if root.exists():
            root.rmdir()  # empty, checked above
        os.rename(staging, root)
        return cls(root, config)

    def agent_workspace(self, agent: int) -> "Workspace":
        """The files of one agent of several (agents/N/: its kernel, NOTES.md, the instruction), made from the
        run's on first use; the candidate archive stays the run's."""
        root = self.root / AGENTS / str(agent)
        if not (root / ".made").exists():
            root.mkdir(parents=True, exist_ok=True)
            for name in (self.config.editable_file, INSTRUCTION):
                shutil.copyfile(self.root / name, root / name)
            (root / NOTES).write_text("# Notes\n")
            (root / ".made").write_text("")  # the copy is complete
        return Workspace(root, self.config)

    def lock(self) -> Any:
        """Hold the run directory for this process: a second `kopt resume` of a live run refuses."""
        handle = open(self.root / LOCK_FILE, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunLocked(f"{self.root} is in use by another kopt process (its run is live); stop it first "
                            f"(Ctrl-C, or touch {self.root / STOP_FILE})") from None
        return handle

    @classmethod
    def open(cls, root: Path) -> "Workspace":
        path = root / RUN_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a kopt run directory (no {RUN_JSON})")
        return cls(root, RunConfig.model_validate(json.loads(path.read_text())))

    def readable(self) -> list[str]:
        return [self.config.editable_file, NOTES, INSTRUCTION]

    def resolve(self, path: object, write: bool = False) -> Path:
        """The file a tool may use, or Forbidden / ToolError saying why not."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string, e.g. " + repr(self.config.editable_file))
        pure = PurePosixPath(path.strip())
        if pure.is_absolute() or path.strip().startswith("~"):
            raise Forbidden(f"absolute path {path!r}: only files inside the workspace may be used",
                            "absolute path")
        if ".." in pure.parts:
            raise Forbidden(f"path {path!r} leaves the workspace", "path escape")
        name = pure.as_posix()
        allowed = [self.config.editable_file, NOTES] if write else self.readable()
        if name not in allowed:
            if any(fnmatch.fnmatch(name, pattern) for pattern in OFF_LIMITS) or (self.root / name).exists():
                raise Forbidden(f"{name} is off-limits to the agent", "off-limits file")
            if write:  # whether or not it exists: only these may be written
                raise ToolError(f"{name!r} cannot be written: you may change only {' and '.join(allowed)}")
            raise ToolError(f"{name!r} is not one of the files you may read ({', '.join(allowed)})")
        full = self.root / name
        if full.is_symlink() or full.resolve().parent != self.root.resolve():
            raise Forbidden(f"{name} is a link out of the workspace", "link out of the workspace")
        return full
