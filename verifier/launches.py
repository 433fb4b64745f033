"""What the GPU workloads launch, told without a GPU (runs inside the compile child).

The entry point is called on each GPU workload with meta tensors (shapes, strides and dtypes,
no storage): every Triton launch is recorded (kernel, constexpr specialization, grid, warps,
stages) and, instead of launching, compiled ahead of time for the target. Registers and
spills come from the cubin, shared memory from the metadata; with the assumed device's limits
they give CTAs per SM and waves: "W2 launches 32 programs on 132 SMs: 0.24 waves".

The same specialization key is computed for launches under the Triton interpreter, so the
specializations the workloads launch can be compared with those the checked CPU cases ran
(threat 30: a path only workload-sized inputs reach is unverified unless a case reached it).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Device:
    """The GPU a target stands for: the numbers occupancy needs (per SM, or per CU on AMD)."""

    name: str
    sm_count: int
    max_threads_per_sm: int
    max_ctas_per_sm: int
    shared_per_sm: int  # bytes a CTA may share out of, per SM
    reserved_shared_per_cta: int = 1024  # the driver's own per-CTA slice (sm_80+)
    register_files: int = 1  # NVIDIA: one 64K file per SM; AMD: one VGPR file per SIMD
    registers_per_file: int = 65536  # 32-bit registers (AMD: VGPRs x 64 lanes)
    register_unit: int = 8  # registers per thread are allocated in multiples of this
    warp_alloc_unit: int = 256  # registers per warp are allocated in multiples of this
    warp_size: int = 32


KB = 1024
# One device per target (the one assumed when the target is all we know); sources: the CUDA
# programming guide's per-compute-capability table, AMD's CDNA instinct specifications.
DEVICES = {
    "sm_80": Device("A100 SXM (108 SMs)", 108, 2048, 32, 164 * KB),
    "sm_86": Device("A10 (72 SMs)", 72, 1536, 16, 100 * KB),
    "sm_89": Device("L40S (142 SMs)", 142, 1536, 24, 100 * KB),
    "sm_90": Device("H100 SXM (132 SMs)", 132, 2048, 32, 228 * KB),
    "sm_100": Device("B200 (148 SMs)", 148, 2048, 32, 228 * KB),
    "sm_120": Device("RTX 5090 (170 SMs)", 170, 1536, 32, 100 * KB),
    # CDNA: 4 SIMDs per CU, 512 VGPRs per lane each (arch + accumulation), 8 waves per SIMD
    "gfx90a": Device("MI250X, one GCD (110 CUs)", 110, 2048, 16, 64 * KB, 0, 4, 512 * 64, 8, 8 * 64, 64),
    "gfx942": Device("MI300X (304 CUs)", 304, 2048, 16, 64 * KB, 0, 4, 512 * 64, 8, 8 * 64, 64),
    "gfx950": Device("MI355X (256 CUs)", 256, 2048, 16, 160 * KB, 0, 4, 512 * 64, 8, 8 * 64, 64),
}


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(device: Device, num_warps: int, registers: int | None, shared_bytes: int) -> tuple[int, str]:
    """(CTAs per SM, the limit that decides it): the minimum over threads, registers, shared
    memory and the hardware's CTA slots. Unknown registers leave that limit out."""
    limits = {"max CTAs": device.max_ctas_per_sm,
              "threads": device.max_threads_per_sm // (num_warps * device.warp_size)}
    if registers:
        per_warp = _round_up(_round_up(registers, device.register_unit) * device.warp_size, device.warp_alloc_unit)
        warps = device.register_files * (device.registers_per_file // per_warp)
        limits["registers"] = warps // num_warps
    if shared_bytes:
        limits["shared memory"] = device.shared_per_sm // (shared_bytes + device.reserved_shared_per_cta)
    reason = min(limits, key=lambda k: limits[k])
    return limits[reason], reason


# ---- specialization keys: the same for a JIT launch and an interpreted one ----

def _is_constexpr(param: inspect.Parameter) -> bool:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return False
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return "constexpr" in text


def _bind(kernel: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The kernel's arguments by name, defaults applied (options such as num_warps left out)."""
    sig = inspect.signature(kernel.fn)
    bound = sig.bind_partial(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})
    bound.apply_defaults()
    return dict(bound.arguments)


def _text(value: Any) -> str:
    value = getattr(value, "value", value) if type(value).__name__ == "constexpr" else value
    if isinstance(value, (bool, int, float, str)) or value is None:
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(map(_text, value)) + ")"
    name = getattr(value, "__name__", None) or getattr(getattr(value, "fn", None), "__name__", None)
    return name or str(value)


def constexprs(kernel: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    params = inspect.signature(kernel.fn).parameters
    bound = _bind(kernel, args, kwargs)
    return {n: bound[n] for n, p in params.items() if _is_constexpr(p) and n in bound}


def specialization(values: dict[str, Any]) -> str:
    """'BLOCK_M=128, BLOCK_N=64, ...': the constexpr values, sorted by name."""
    return ", ".join(f"{name}={_text(values[name])}" for name in sorted(values))


def specialization_key(kernel: Any, args: tuple, kwargs: dict) -> str:
    """'_fwd_kernel[BLOCK_M=128, ...]' for a JITFunction or an InterpretedFunction and the
    arguments its `run` got (after any autotune/heuristics wrapper added its constexprs)."""
    return f"{kernel.fn.__name__}[{specialization(constexprs(kernel, args, kwargs))}]"


def coverage(workload_keys: dict[str, Iterable[str]], checked_keys: set[str]) -> list[str]:
    """The specializations a workload launches that no checked CPU case ran, as sentences."""
    return [f"{workload}: {key} never ran in a checked CPU case"
            for workload, keys in workload_keys.items() for key in sorted(set(keys)) if key not in checked_keys]


# ---- the recorder ----

@dataclass
class Launch:
    kernel: str
    file: str  # where the kernel was defined (a launch from another file is a decoy)
    constexprs: dict[str, Any]
    grid: tuple[int, int, int]
    num_warps: int | None
    num_stages: int | None
    compiled: Any = None  # the CompiledKernel for the target, when the recorder compiles
    compile_s: float = 0.0

    specialization = property(lambda self: specialization(self.constexprs))
    key = property(lambda self: f"{self.kernel}[{self.specialization}]")
    programs = property(lambda self: math.prod(self.grid))


def _grid(grid: Any, bound: dict[str, Any]) -> tuple[int, int, int]:
    """As Triton does: a callable grid gets the arguments by name (constexprs included)."""
    if callable(grid):
        grid = grid(bound)
    grid = tuple(int(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))
    return (grid + (1, 1, 1))[:3]


@dataclass
class Recorder:
    """Records every Triton launch while active (a context manager; restores Triton on exit).

    JIT launches: with execute=False nothing runs (meta tensors); compile=True then compiles
    each launch for the active driver's target (Triton's cache compiles a specialization
    once). Interpreted launches are recorded and run (CPU cases)."""

    execute: bool = False
    compile: bool = False
    launches: list[Launch] = field(default_factory=list)

    def keys(self) -> set[str]:
        return {launch.key for launch in self.launches}

    def _record(self, kernel: Any, args: tuple, kwargs: dict, grid: Any) -> Launch:
        bound = _bind(kernel, args, kwargs)
        values = constexprs(kernel, args, kwargs)
        launch = Launch(kernel.fn.__name__, kernel.fn.__code__.co_filename, values, _grid(grid, bound),
                        kwargs.get("num_warps"), kwargs.get("num_stages"))
        self.launches.append(launch)
        return launch

    def __enter__(self) -> Recorder:
        import triton.runtime.interpreter as interp
        import triton.runtime.jit as jit
        self._saved = [(cls, cls.run) for cls in (jit.JITFunction, interp.InterpretedFunction)]
        jit_run, interp_run = (run for _, run in self._saved)

        def run_jit(kernel, *args, grid, warmup, **kwargs):
            if warmup:
                return jit_run(kernel, *args, grid=grid, warmup=True, **kwargs)
            launch = self._record(kernel, args, kwargs, grid)
            if self.execute:
                return jit_run(kernel, *args, grid=grid, warmup=False, **kwargs)
            if self.compile:
                start = time.perf_counter()
                launch.compiled = jit_run(kernel, *args, grid=grid, warmup=True, **kwargs)
                launch.compile_s = time.perf_counter() - start
                meta = launch.compiled.metadata
                launch.num_warps, launch.num_stages = meta.num_warps, meta.num_stages
            return None

        def run_interpreted(kernel, *args, grid, warmup, **kwargs):
            if not warmup:
                self._record(kernel, args, kwargs, grid)
            return interp_run(kernel, *args, grid=grid, warmup=warmup, **kwargs)

        jit.JITFunction.run = run_jit
        interp.InterpretedFunction.run = run_interpreted
        return self

    def __exit__(self, *exc: Any) -> None:
        for cls, run in self._saved:
            cls.run = run


# ---- the workloads' report ----

def measure(launch: Launch, target: str, backend: str, usage: dict[int, tuple]) -> dict[str, Any]:
    """A LaunchReport's fields for one compiled launch (usage caches cuobjdump per kernel)."""
    from kopt.verifier.compile import resource_usage
    kernel = launch.compiled
    if id(kernel) not in usage:
        usage[id(kernel)] = resource_usage(kernel.asm["cubin"]) if backend == "cuda" else _amd_usage(kernel)
    registers, spills = usage[id(kernel)]
    shared = int(kernel.metadata.shared)
    device = DEVICES.get(target)
    row = {"kernel": launch.kernel, "specialization": launch.specialization, "grid": list(launch.grid),
           "programs": launch.programs, "num_warps": launch.num_warps, "num_stages": launch.num_stages,
           "registers": registers, "spill_bytes": spills, "shared_bytes": shared, "ctas_per_sm": None,
           "limited_by": None, "waves": None, "sm_count": None, "device_assumed": None,
           "compile_s": round(launch.compile_s, 3)}
    if device:
        ctas, reason = occupancy(device, launch.num_warps, registers, shared)
        row.update(ctas_per_sm=ctas, limited_by=reason, sm_count=device.sm_count, device_assumed=device.name,
                   waves=launch.programs / (ctas * device.sm_count) if ctas else None)
    return row


def _amd_usage(kernel: Any) -> tuple[int | None, int | None]:
    """(VGPRs incl. accumulation registers, spilled bytes) from the AMDGCN assembly's notes."""
    import re
    text = kernel.asm.get("amdgcn", "")

    vgpr, agpr, spill = (int(m.group(1)) if (m := re.search(rf"\.{name}:\s+(\d+)", text)) else None
                         for name in ("vgpr_count", "agpr_count", "vgpr_spill_count"))
    agpr = agpr or 0
    # spills in bytes per lane, as NVIDIA's LOCAL is per thread
    return (vgpr + agpr if vgpr is not None else None), (spill * 4 if spill is not None else None)


def dry_run(fn: Callable, args: list, kwargs: dict, target: str, kernel_file: str,
            usage: dict[int, tuple] | None = None) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Call the entry point once on meta tensors, every launch compiled for the active driver's
    target (a _TargetOnlyDriver) instead of launched: (LaunchReport fields less `workload`,
    specialization keys, an error or None). The candidate's exceptions propagate."""
    from kopt.verifier.compile import parse_target
    backend, _, _, limit = parse_target(target)
    with Recorder(compile=True) as recorder:
        fn(*args, **kwargs)
    error = None if recorder.launches else "the entry point launched no Triton kernel"
    rows = [measure(launch, target, backend, {} if usage is None else usage) for launch in recorder.launches]
    for launch, row in zip(recorder.launches, rows):
        if launch.file != kernel_file:
            error = error or f"{launch.kernel} is a Triton kernel not defined in the kernel file"
        if row["shared_bytes"] > limit:
            error = error or f"{launch.kernel} needs {row['shared_bytes']} B of shared memory; {target} allows {limit}"
    return rows, sorted(recorder.keys()), error


def workload_report(job: dict, load: Callable[[str, str], Any]) -> dict[str, Any]:
    """Launch reports of the entry point on each GPU workload, on meta tensors, for job["target"].

    job: reference, kernel, module, entry_point, positional_args, target, plus workloads
    [{"id", "params"}], dtype (the GPU dtype, e.g. "bfloat16") and an optional seed. Returns
    {"launches": [LaunchReport fields], "workload_keys": {id: [keys]}, "errors": {id: message}}:
    a workload whose entry point raises is an error entry, not a crash. Loads the task's
    reference (meta inputs hold no content); a child that must not can call dry_run instead."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    from kopt.verifier import interp
    from kopt.verifier.arena import split_call
    from kopt.verifier.compile import _TargetOnlyDriver, parse_target

    backend, arch, warp, _ = parse_target(job["target"])
    previous = driver._active
    driver.set_active(_TargetOnlyDriver(GPUTarget(backend, arch, warp)))
    interp.install_aot_autotune()  # a multi-config autotune: one launch (and row) per config
    reference = load(job["reference"], "kopt_task_reference")
    module = load(job["kernel"], job["module"])
    fn = getattr(module, job["entry_point"], None)
    if not callable(fn):
        missing = f"the kernel file defines no callable {job['entry_point']}"
        return {"launches": [], "workload_keys": {}, "errors": {"*": missing}}
    rows, keys, errors, usage = [], {}, {}, {}
    try:
        for workload in job["workloads"]:
            wid = workload["id"]
            try:
                inputs = reference.make_inputs(workload["params"], getattr(torch, job["dtype"]), job.get("seed", 0),
                                               "meta")
            except Exception as exc:
                errors[wid] = (f"the task's make_inputs(case, dtype, seed, 'meta') failed ({type(exc).__name__}: "
                               f"{exc}): the task needs a meta-tensor fast path for launch reports")
                continue
            tensors = {n: v for n, v in inputs.items() if isinstance(v, torch.Tensor)}
            wrong = [n for n, v in tensors.items() if v.device.type != "meta" or
                     (v.is_floating_point() and v.dtype != getattr(torch, job["dtype"]))]
            if wrong:  # another dtype would compile (and report) other kernels than the GPU runs
                errors[wid] = f"make_inputs(..., {job['dtype']}, 'meta') returned {wrong} off meta or in another dtype"
                continue
            args, kwargs = split_call(inputs, job["positional_args"])
            try:
                mine, keys[wid], error = dry_run(fn, args, kwargs, job["target"], job["kernel"], usage)
            except Exception as exc:  # the candidate's failure on this workload, reported
                errors[wid] = f"{type(exc).__name__}: {str(exc)[:2000]}"
                continue
            if error:
                errors[wid] = error
            rows += [dict(row, workload=wid) for row in mine]
    finally:
        driver.set_active(previous) if previous is not None else setattr(driver, "_active", None)
    return {"launches": rows, "workload_keys": keys, "errors": errors}


def render(reports: Iterable[Any], errors: dict[str, str] | None = None) -> str:
    """One line per (workload, launch); specializations are listed once, below, by letter."""
    rows = [r if isinstance(r, dict) else r.model_dump() for r in reports]
    specs: dict[str, str] = {}
    lines = []
    for r in rows:
        key = f"{r['kernel']}[{r['specialization']}]"
        tag = specs.setdefault(key, chr(ord("a") + len(specs)) if len(specs) < 26 else str(len(specs)))
        grid = "x".join(map(str, r["grid"]))
        regs = f"{r['registers']} regs" if r["registers"] is not None else "regs ?"
        spill = "no spill" if r["spill_bytes"] == 0 else ("spill ?" if r["spill_bytes"] is None
                                                          else f"SPILLS {r['spill_bytes']} B")
        if r["ctas_per_sm"] is None:
            occ = "occupancy unknown for this target"
        elif r["ctas_per_sm"] == 0:
            occ = f"does not fit on one SM ({r['limited_by']})"
        else:
            unit = "CUs" if "CUs" in (r["device_assumed"] or "") else "SMs"
            occ = f"{r['ctas_per_sm']} CTA/SM ({r['limited_by']}), {r['waves']:.2f} waves on {r['sm_count']} {unit}"
        stages = f"{r['num_stages']} stage" + ("s" if r["num_stages"] != 1 else "")
        lines.append(f"{r['workload']}: {r['kernel']}[{tag}] grid {grid} = {r['programs']} programs, "
                     f"{r['num_warps']} warps, {stages}, {regs}, {spill}, "
                     f"{r['shared_bytes'] / KB:.1f} KB shared; {occ}")
    for wid, message in (errors or {}).items():
        lines.append(f"{wid}: error: {message}")
    if rows and rows[0].get("device_assumed"):
        lines.append(f"assumed device: {rows[0]['device_assumed']}")
    lines += [f"[{tag}] {key}" for key, tag in specs.items()]
    return "\n".join(lines)
