"""The thin CUDA part of the timing protocol (runs in the child; untestable without a GPU).

Everything decided here is decided in timing.py, which is tested on CPU with a fake timer:
this file only records CUDA events, flushes L2, refreshes inputs and checks timed outputs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from kopt.verifier import timing

# (memory bandwidth GB/s, dense bf16 tensor TFLOP/s) by device-name fragment, most specific first.
PEAKS = (("H200", 4800, 989), ("H100 PCIe", 2000, 756), ("H100", 3350, 989), ("H800", 3350, 989),
         ("B200", 8000, 2250), ("GB200", 8000, 2500), ("A100-SXM4-40GB", 1555, 312), ("A100", 2039, 312),
         ("L40S", 864, 362), ("L4", 300, 121), ("RTX 4090", 1008, 330), ("MI300X", 5300, 1307))
UNKNOWN_PEAK = (10000, 5000)  # generous: an unknown GPU gets a low floor, never a false rejection
WARMUP_CALLS = 3
INPUT_SETS = 3


def peaks(name: str) -> tuple[float, float]:
    for fragment, bandwidth, tflops in PEAKS:
        if fragment in name:
            return bandwidth, tflops
    return UNKNOWN_PEAK


class CudaTimer:
    """Times one call of an arm on fresh inputs, L2 flushed, with events and a host clock.

    The timed buffers are one input set; before every call new content is copied into them from a
    pool of variants drawn by the task's own generator (same distributions as the checks: needles,
    peaky heads, re-pointed prefix slots), so the same pointers never see the same content twice
    in a row and nothing cached across calls is right.
    """

    def __init__(self, arms: dict[str, Callable], variants: list[dict[str, Any]], positional: int,
                 outputs: list[str]):
        self.arms, self.variants, self.positional, self.outputs = arms, variants, positional, outputs
        self.buffers = {n: (v.clone() if isinstance(v, torch.Tensor) else v) for n, v in variants[0].items()}
        self.current = 0
        l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        self.flush = torch.empty(max(256 << 20, 2 * l2), dtype=torch.uint8, device="cuda")
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def call(self, arm: str, inputs: dict[str, Any]) -> None:
        names = list(inputs)
        self.arms[arm](*[inputs[n] for n in names[:self.positional]], **{n: inputs[n] for n in names[self.positional:]})

    def prepare(self, index: int) -> dict[str, Any]:
        self.current = index % len(self.variants)
        source = self.variants[self.current]
        for name, value in self.buffers.items():
            if isinstance(value, torch.Tensor) and name not in self.outputs:
                value.copy_(source[name])  # new content, same addresses
        for name in self.outputs:
            self.buffers[name].fill_(float("nan"))
        self.flush.zero_()
        torch.cuda.synchronize()
        return self.buffers

    def time_call(self, arm: str, workload: str, index: int) -> timing.Sample:
        inputs = self.prepare(index)
        wall = time.perf_counter()
        self.start.record()
        self.call(arm, inputs)
        self.end.record()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - wall) * 1e3
        return timing.Sample(self.start.elapsed_time(self.end), wall_ms)


def time_on_gpu(job: dict, load: Callable[[str, str], Any], launches: Any) -> dict[str, Any]:
    reference = load(job["reference"], "kopt_task_reference")
    candidate = getattr(load(job["kernel"], job["module"]), job["entry_point"])
    baseline = getattr(load(job["baseline"], "kopt_task_baseline"), job["entry_point"])
    copy = getattr(load(job["baseline"], "kopt_task_baseline_copy"), job["entry_point"])
    arms = {timing.BASELINE: baseline, timing.CANDIDATE: candidate, timing.COPY: copy}
    bandwidth, tflops = peaks(torch.cuda.get_device_name(0))
    dtype = getattr(torch, job["dtype"])
    rows = []
    for item in job["items"]:
        inputs = [reference.make_inputs(item["params"], dtype, item["seed"], "cuda", variant=k)
                  for k in range(INPUT_SETS)]
        timer = CudaTimer(arms, inputs, job["positional_args"], job["outputs"])
        compile_start = time.perf_counter()
        for arm in arms:
            for k in range(WARMUP_CALLS):
                timer.call(arm, timer.prepare(k))
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - compile_start
        estimate = statistics.median(timer.time_call(timing.BASELINE, item["case"], k).event_ms for k in range(5))
        if hasattr(reference, "cost"):
            nbytes, flops = reference.cost(item["params"], dtype.itemsize, item["seed"])
            floor = timing.roofline_floor_ms(nbytes, flops, bandwidth, tflops)
        else:  # the task gives no roofline: only the other integrity checks apply
            floor = 0.0
        stats = timing.measure_workload(timer, item["case"], estimate, floor)
        mismatch = timed_output_mismatch(timer, reference, job["tolerances"][job["dtype"]], job["dtype"])
        rows.append({"workload": item["case"], "baseline_ms": stats.baseline_ms, "candidate_ms": stats.candidate_ms,
                     "speedup": stats.speedup, "noise_band": stats.noise_band, "tie": stats.tie,
                     "flags": stats.flags, "invalid": stats.invalid or mismatch, "warmup_s": compile_s,
                     "floor_ms": floor})
        del timer, inputs
        torch.cuda.empty_cache()
    props = torch.cuda.get_device_properties(0)
    return {"rows": rows, "device": {"name": props.name, "cuda": str(torch.version.cuda),
                                     "capability": f"{props.major}.{props.minor}"}}


def timed_output_mismatch(timer: CudaTimer, reference: Any, tol: dict[str, Any], dtype: str) -> str | None:
    """Threat 16: under timing conditions the candidate's output meets the correctness tolerance
    against the reference of the content it was given (not a looser bound against the baseline)."""
    from kopt.verifier import check
    for index in range(len(timer.variants)):
        inputs = timer.prepare(index)
        timer.call(timing.CANDIDATE, inputs)
        torch.cuda.synchronize()
        expected = reference.reference(timer.variants[timer.current])
        for name, ref in expected.items():
            reason, _, _ = check.compare(inputs[name].float(), ref.to(inputs[name].device), tol, dtype)
            if reason:
                return f"{name} under timing conditions (input set {index}): {reason}"
    return None
