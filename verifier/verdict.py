"""The Verdict: everything the verifier says about one kernel, as JSON-safe pydantic records.

Fail closed: only `status == "ok"` means the kernel is correct (and, on GPU, timed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["ok", "rejected", "error"]
Kind = Literal["gpu", "interpreter", "simulated"]  # what a timing measured: never compared across kinds
INTERPRETER_LABEL = "interpreter (CPU)"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KernelResources(Record):
    """One compiled Triton kernel for the target."""

    name: str
    num_warps: int
    num_stages: int
    shared_bytes: int
    registers: int | None = None
    spill_bytes: int | None = None
    compile_s: float
    specialization: str | None = None  # "kernel[NAME=value, ...]": its constexprs (one row per variant)
    case: str | None = None  # the case whose call compiled it first, e.g. "C1/bfloat16"


class LaunchReport(Record):
    """One kernel launch of the entry point on one GPU workload, dry-run on meta tensors and
    compiled for the target: what it launches and how it fills the assumed device."""

    workload: str
    kernel: str
    specialization: str  # constexpr values, "NAME=value, ..." sorted by name
    grid: list[int]
    programs: int
    num_warps: int
    num_stages: int
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int
    ctas_per_sm: int | None = None  # None: no device is assumed for the target
    limited_by: str | None = None  # the limit deciding ctas_per_sm: registers, shared memory, threads, max CTAs
    waves: float | None = None  # programs / (ctas_per_sm x sm_count)
    sm_count: int | None = None
    device_assumed: str | None = None
    compile_s: float = 0.0


class CompileReport(Record):
    target: str
    shared_limit_bytes: int
    kernels: list[KernelResources] = Field(default_factory=list)
    launches: list[LaunchReport] = Field(default_factory=list)  # the GPU workloads' launches (launches.py)
    launch_errors: dict[str, str] = Field(default_factory=dict)  # workload id -> why it has no report
    ok: bool
    error: str | None = None
    wall_s: float = 0.0


class CaseResult(Record):
    """Correctness of one case at one dtype and seed (the seed itself stays secret)."""

    case: str
    dtype: str
    hidden: bool = False
    passed: bool
    rel_l2: float | None = None
    max_abs: float | None = None
    reason: str | None = None
    interpreter_s: float | None = None


class WorkloadTiming(Record):
    workload: str
    label: str  # "gpu" or INTERPRETER_LABEL: never mix them up
    baseline_ms: float
    candidate_ms: float
    speedup: float
    tie: bool = False
    flags: list[str] = Field(default_factory=list)
    noise_band: float | None = None  # this workload's A/A spread
    floor_ms: float | None = None  # roofline floor of one call on this device (None: the task gives no cost)
    sol_fraction: float | None = None  # speed-of-light fraction: floor / candidate time (1.0 = the roofline)


class Timing(Record):
    label: str
    kind: Kind = "gpu"  # derived from label in files written before the field existed
    workloads: list[WorkloadTiming] = Field(default_factory=list)
    geomean_speedup: float | None = None  # GPU only: the number people trust
    interpreter_ratio: float | None = None  # CPU only: baseline/candidate interpreter wall time
    simulated_ratio: float | None = None  # --device sim only: the GPU path's protocol over interpreter time
    noise_band: float | None = None  # A/A spread; |speedup - 1| inside it is a tie
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _kind_from_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data and "label" in data:
            label = str(data["label"])
            data = {**data, "kind": "simulated" if label.startswith("simulated") else
                    "interpreter" if "interpreter" in label else "gpu"}
        return data


class Verdict(Record):
    status: Status
    reason: str | None = None
    task: str
    task_hash: str
    kernel_sha256: str
    device: str
    target: str
    phase: str | None = None  # where it stopped: gate, compile, correctness, timing
    cases: list[CaseResult] = Field(default_factory=list)
    compile: CompileReport | None = None
    timing: Timing | None = None
    log_excerpt: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    wall_s: dict[str, float] = Field(default_factory=dict)
    # Everything this verdict could not check (a dtype the interpreter cannot run, a specialization
    # no checked case reached, GPU timing on a CPU machine). Empty means fully verified.
    unverified: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "ok"

