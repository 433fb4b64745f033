"""A task: a directory with task.toml, baseline.py, reference.py and instruction.md.

Tasks are data plus trusted code, loaded by path (built-in ones by name from kernels/).
`kernels` is deliberately not an importable package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_TASKS = Path(__file__).resolve().parents[1] / "kernels"


class TaskError(ValueError):
    """A task that cannot be loaded: the message says what to fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tolerance(Strict):
    rel_l2: float  # ||out - ref|| / ||ref|| over the whole output
    atol: float  # elementwise: |out - ref| <= atol + rtol * |ref|
    rtol: float
    # bf16 on GPU: also require error <= factor x baseline error + one ulp at that magnitude
    comparative_factor: float | None = None


class Case(BaseModel):
    """One input configuration; every key besides id/note is interpreted by reference.py."""

    model_config = ConfigDict(extra="allow", frozen=True)
    id: str
    note: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Raises(Strict):
    """A call the entry point must refuse: a case's inputs with some arguments overridden."""

    id: str
    case: str  # id of a [[cases]] entry whose inputs are used
    set: dict[str, Any]  # arguments overridden (out-of-scope options)
    exception: str | list[str] = "NotImplementedError"  # the exception class (or any of several) to raise
    note: str = ""


class DeviceProfile(Strict):
    dtypes: list[str]
    seeds: int = Field(2, ge=1)  # public seeds per case; each is mixed with a per-run secret
    hidden_cases: int = Field(0, ge=0)  # extra hold-out cases drawn per evaluation
    # hold-out shapes in the GPU workloads' regime (the task's holdout_probes): on CPU run on a sample of
    # their programs, as the workloads are; on a GPU checked whole, as hidden cases
    hidden_probes: int = Field(0, ge=0)


class Timeouts(Strict):
    compile_s: float = 240.0
    correctness_s: float = 300.0
    timing_s: float = 900.0


class Tunable(Strict):
    """An integer constant of the kernel (`NAME = value` on its own line) and its legal values."""

    name: str
    values: list[int] = Field(min_length=1)


class TaskConfig(Strict):
    name: str
    description: str = ""
    entry_point: str
    editable_file: str = "kernel.py"
    baseline: str = "baseline.py"
    reference: str = "reference.py"
    instruction: str = "instruction.md"
    positional_args: int = Field(ge=0)  # leading inputs passed positionally, the rest by keyword
    outputs: list[str]  # inputs written in place by the entry point
    extra_imports: list[str] = Field(default_factory=list)  # extends the gate's allowlist of imports
    extra_chains: list[str] = Field(default_factory=list)  # ... and of dotted names (e.g. "torch.sigmoid")
    # The entry point's parameters in order, and which of them are Python scalars (the rest may be
    # tensors): the gate lets host code branch on scalars and shapes, never on tensor values.
    signature: list[str] = Field(default_factory=list)
    scalar_args: list[str] = Field(default_factory=list)
    raises: list["Raises"] = Field(default_factory=list)  # calls that must raise (out-of-scope options)
    allow_inline_asm: bool = False
    default_target: str = "sm_90"
    cpu: DeviceProfile
    gpu: DeviceProfile
    tolerance: dict[str, Tolerance]
    timeouts: Timeouts = Timeouts()
    tunables: list[Tunable] = Field(default_factory=list)  # for tuners such as the built-in policy
    constraints: list[str] = Field(default_factory=list)  # Python expressions over the tunables' names
    rewrites: str | None = None  # a file of the task defining REWRITES = [(name, fn(source) -> source|None)]
    cases: list[Case]  # CPU correctness cases (interpreter)
    workloads: list[Case]  # GPU workloads (correctness and timing)
    # Small workloads shaped like the GPU's, for the simulated device (`--device sim`): the GPU path's
    # protocol run on CPU under the interpreter, so they must take well under a second per call there.
    sim_workloads: list[Case] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "TaskConfig":
        for profile in (self.cpu, self.gpu):
            missing = [d for d in profile.dtypes if d not in self.tolerance]
            if missing:
                raise ValueError(f"no [tolerance.{missing[0]}] for a dtype the task checks")
        for group in (self.cases, self.workloads, self.sim_workloads):
            ids = [c.id for c in group]
            if len(ids) != len(set(ids)):
                raise ValueError(f"duplicate case ids in {ids}")
        unknown = [r.case for r in self.raises if r.case not in {c.id for c in self.cases}]
        if unknown:
            raise ValueError(f"[[raises]] names unknown case {unknown[0]!r}")
        stray = set(self.scalar_args) - set(self.signature)
        if stray:
            raise ValueError(f"scalar_args {sorted(stray)} are not in signature")
        return self


class Task:
    """A loaded task: its config, its directory and a content hash of its files."""

    def __init__(self, root: Path, config: TaskConfig):
        self.root = root
        self.config = config
        self.hash = _hash_files(root, ["task.toml", config.baseline, config.reference, config.instruction,
                                       *([config.rewrites] if config.rewrites else [])])

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def baseline_path(self) -> Path:
        return self.root / self.config.baseline

    def instruction_text(self) -> str:
        """What the agent is told: the task's instruction.md plus what the static gate allows."""
        from kopt.verifier.gate import summary
        text = (self.root / self.config.instruction).read_text().rstrip()
        return f"{text}\n\n## What the verifier's static gate allows\n{summary()}\n"

    @property
    def reference_path(self) -> Path:
        return self.root / self.config.reference

    @property
    def instruction_path(self) -> Path:
        return self.root / self.config.instruction

    def load_rewrites(self) -> list:
        if not self.config.rewrites:
            return []
        return list(load_module(self.root / self.config.rewrites, f"kopt_task_{self.name}_rewrites").REWRITES)

    def load_reference(self) -> ModuleType:
        return load_module(self.reference_path, f"kopt_task_{self.name}_reference")


def builtin_tasks() -> list[str]:
    if not BUILTIN_TASKS.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_TASKS.iterdir() if (p / "task.toml").is_file())


def load_task(name_or_path: str | Path) -> Task:
    """Load a task by built-in name or by directory path, or raise TaskError saying what to do."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        root = candidate.resolve()
    elif (BUILTIN_TASKS / str(name_or_path) / "task.toml").is_file():
        root = (BUILTIN_TASKS / str(name_or_path)).resolve()
    else:
        known = ", ".join(builtin_tasks()) or "none"
        raise TaskError(f"unknown task {str(name_or_path)!r}: give a built-in task name ({known}) "
                        "or the path of a directory holding task.toml")
    toml_path = root / "task.toml"
    if not toml_path.is_file():
        raise TaskError(f"{root} has no task.toml: a task directory needs task.toml, baseline.py, "
                        "reference.py and instruction.md")
    try:
        raw = tomllib.loads(toml_path.read_text())
        config = TaskConfig.model_validate(raw)
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{toml_path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise TaskError(f"{toml_path}: {exc}") from None
    for rel in (config.baseline, config.reference, config.instruction, *([config.rewrites] if config.rewrites else [])):
        if not (root / rel).is_file():
            raise TaskError(f"task {config.name!r} names {rel} but {root / rel} does not exist")
    return Task(root, config)


def load_module(path: Path, name: str) -> ModuleType:
    """Import a trusted Python file under a private module name (tasks are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hash_files(root: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()
