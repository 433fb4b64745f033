"""The GPU path's child process (device "cuda"), until CUDA IPC hands it trusted buffers.

On a GPU this process still builds its inputs with the task's reference module and runs the
timing protocol beside the baseline: every verdict made here lists that in `unverified`
(verifier/evaluate.py). The CPU path (verifier/child.py + session.py) holds nothing trusted.

Started by verifier.sandbox as `python -I -m kopt.verifier.child` with a clean environment,
a fresh Triton cache and a temp cwd holding nothing but the kernel source. The job arrives on
stdin (so no file the candidate could read names the secret seeds); results go to a file
outside the cwd, written with torch.save and read back with weights_only=True.

Phases:
  compile  - ahead-of-time compile of every kernel the entry point launches, for a target
  run      - call the entry point on each (case, dtype, seed): NaN poison, second poison,
             guard rows, input hashes, same data_ptr; the outputs go back to the parent
  check    - trusted only: rebuild the inputs, compute the reference, compare
  time     - GPU only: the timing protocol, baseline and candidate interleaved
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from kopt.verifier.child import load_module as load_candidate
from kopt.verifier.child import split_call, sync_trap

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
GUARD_ROWS = 8
POISONS = (float("nan"), 1.0e4)


class Launches:
    """Counts Triton launches by the file that defined the kernel (threat 15: decoy kernels)."""

    def __init__(self, force_warmup: bool = False):
        import triton.runtime.interpreter as interp
        import triton.runtime.jit as jit
        self.files: list[str] = []
        self.inside = 0  # > 0 while Triton itself runs (the interpreter reads tensors on the host)
        for cls in (jit.JITFunction, interp.InterpretedFunction):
            original = cls.run

            def run(fn, *args, grid, warmup, _original=original, **kwargs):
                self.files.append(fn.fn.__code__.co_filename)
                self.inside += 1
                try:
                    return _original(fn, *args, grid=grid, warmup=warmup or force_warmup, **kwargs)
                finally:
                    self.inside -= 1

            cls.run = run


def bits(t: torch.Tensor) -> torch.Tensor:
    """A bitwise copy (NaN-safe comparisons: NaN != NaN but its bits are equal)."""
    return t.detach().contiguous().view(torch.uint8).clone()


def guarded(out: torch.Tensor, poison: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A poisoned buffer with guard rows around the view the kernel gets."""
    buf = torch.full((out.shape[0] + 2 * GUARD_ROWS, *out.shape[1:]), poison, dtype=out.dtype, device=out.device)
    return buf, buf[GUARD_ROWS:GUARD_ROWS + out.shape[0]]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_one(fn: Callable, inputs: dict[str, Any], job: dict, launches: Launches, poison: float) -> dict[str, Any]:
    """One call with one poison; every integrity check a single call allows."""
    device, kernel_file = job["device"], job["kernel"]
    tensors = {n: v for n, v in inputs.items() if isinstance(v, torch.Tensor) and n not in job["outputs"]}
    before = {n: bits(t) for n, t in tensors.items()}
    outs, bufs, ptrs = {}, {}, {}
    for name in job["outputs"]:
        bufs[name], outs[name] = guarded(inputs[name], poison)
        ptrs[name] = outs[name].data_ptr()
    call = dict(inputs, **outs)
    args, kwargs = split_call(call, job["positional_args"])
    n_launch = len(launches.files)
    sync(device)
    start = time.perf_counter()
    with sync_trap(launches):
        returned = fn(*args, **kwargs)
    sync(device)
    wall_s = time.perf_counter() - start
    problems = []
    mine = [f for f in launches.files[n_launch:]]
    if not mine:
        problems.append("the entry point launched no Triton kernel")
    elif any(f != kernel_file for f in mine):
        problems.append("the entry point launched a Triton kernel not defined in the kernel file")
    if returned is not None:
        problems.append(f"the entry point returned {type(returned).__name__}; it must write the outputs in place and return None")
    for name, t in tensors.items():
        if not torch.equal(bits(t), before[name]):
            problems.append(f"input {name} was modified")
    for name, buf in bufs.items():
        if outs[name].data_ptr() != ptrs[name]:
            problems.append(f"output {name} is not the caller's tensor any more")
        guards = torch.cat([buf[:GUARD_ROWS], buf[-GUARD_ROWS:]])
        if not (torch.isnan(guards).all() if poison != poison else (guards == poison).all()):
            problems.append(f"wrote outside {name} (guard rows changed)")
    return {"outputs": {n: o.detach().float().cpu() for n, o in outs.items()}, "problems": problems, "wall_s": wall_s}


def phase_run(job: dict) -> dict[str, Any]:
    launches = Launches()
    reference = load_candidate(job["reference"], "kopt_task_reference")
    module = load_candidate(job["kernel"], job["module"])
    fn = getattr(module, job["entry_point"], None)
    if not callable(fn):
        return {"error": f"the kernel file defines no callable {job['entry_point']}"}
    results = []
    for item in job["items"]:
        dtype = DTYPES[item["dtype"]]
        inputs = reference.make_inputs(item["params"], dtype, item["seed"], job["device"])
        first = run_one(fn, inputs, job, launches, POISONS[0])
        entry = {"key": item["key"], "outputs": first["outputs"], "problems": first["problems"], "wall_s": first["wall_s"]}
        if item.get("repeat") and not first["problems"]:
            second = run_one(fn, inputs, job, launches, POISONS[1])
            entry["problems"] += second["problems"]
            for name, out in first["outputs"].items():
                diff = (out - second["outputs"][name]).abs()
                entry.setdefault("repeat_diff", {})[name] = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
        results.append(entry)
    return {"results": results}


def phase_check(job: dict) -> dict[str, Any]:
    from kopt.verifier import check
    return check.check_outputs(job, load_candidate)


def phase_time(job: dict) -> dict[str, Any]:
    from kopt.verifier import gpu
    return gpu.time_on_gpu(job, load_candidate, Launches())


PHASES = {"run": phase_run, "check": phase_check, "time": phase_time}


def main() -> int:
    job = json.loads(sys.stdin.read())
    result_path = Path(job["result"])
    try:
        result = PHASES[job["phase"]](job)
    except BaseException as exc:  # the candidate's failure, reported, never propagated
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if f.filename == job.get("kernel")] or tb[-3:]
        where = "".join(f"  line {f.lineno} in {f.name}: {f.line}\n" for f in frames[-4:])
        result = {"error": f"{type(exc).__name__}: {str(exc)[:4000]}", "where": where}
    result["nonce"] = job["nonce"]
    torch.save(result, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
