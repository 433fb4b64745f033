"""The GPU path of an evaluation, on a CUDA GPU or on the simulated device (`--device sim`).

The same phases as the CPU path, run against a device (verifier/devices.py): the ahead-of-time
compile for the target, correctness of every case, workload and dtype through the candidate's
own process with buffers trusted code owns, the baseline's errors for bf16's comparative rule;
then, if all pass, the timing coordinator (verifier/coordinator.py). On the simulated device
every number is labelled `simulated` and none is a GPU speedup.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, ContextManager

from kopt.verifier import cpu, timing
from kopt.verifier.coordinator import Coordinator, TimingFault
from kopt.verifier.task import Task
from kopt.verifier.verdict import Timing, Verdict, WorkloadTiming

GPU_UNVERIFIED = [
    "GPU: a write into an input or next to an output that is undone before the call returns is not detected "
    "(device memory has no page protection; the CPU path's guards catch it)",
    "GPU: each call's event time is recorded by the verifier's code in the candidate's process; the trusted "
    "host clock cross-checks it per call",
]


def evaluate_on(device: Any, source: str, task: Task, target: str, secret: int, verdict: Verdict,
                say: Any, timing_lease: Callable[[], ContextManager] | None = None) -> None:
    """Everything after the gate; raises evaluate.Rejected with the reason when the kernel fails.
    `timing_lease`: held around the timing only (verifier.evaluate.evaluate)."""
    from kopt.verifier import evaluate as ev
    cfg = task.config
    workloads = device.workloads(task)
    items = ev.plan_items(task, device.kind, secret, workloads)
    cancel = threading.Event()
    dtypes = sorted({i["dtype"] for i in items})
    first_dtype = items[0]["dtype"]
    small = {c.id for c in cfg.cases}
    compile_items = [dict(i, dtype=cfg.gpu.dtypes[0]) for i in items if i["public_index"] == 0
                     and i["case"] in small and i["dtype"] == first_dtype]
    phases: dict[str, Callable[[], Any]] = {
        "compile": lambda: cpu.compile_calls(task, source, compile_items, target, cancel,
                                             [(w.id, w.params) for w in cfg.workloads])}
    for dtype in dtypes:
        mine = [i for i in items if i["dtype"] == dtype]
        checker = cpu.Correctness(task, source, mine, secret, cancel, raises=dtype == first_dtype, device=device)
        checker.on_item = say.item_done
        phases[f"correctness ({dtype})"] = checker.run
    compared = [i for i in items if cfg.tolerance[i["dtype"]].comparative_factor is not None]
    phases["baseline"] = lambda: cpu.baseline_run(task, [], compared, cancel, device)
    say.phase("checking", f"compile and correctness on the {device.kind} device in {len(phases)} child processes",
              total=len(items))
    results, failures = ev.run_parallel(phases, cancel, verdict)
    ev.judge_phases(results, failures, verdict, target, items, task)
    verdict.unverified += ev.coverage_notes(results)
    say.phase("timing", f"timing {len(workloads)} workloads: baseline, a copy of it and the candidate, interleaved",
              total=len(workloads))
    dtype = cfg.gpu.dtypes[0]
    coordinator = Coordinator(task, source, device, secret, threading.Event())
    lease = timing_lease() if timing_lease is not None else contextlib.nullcontext()
    try:
        with lease:
            start = time.monotonic()  # (waiting for the lease is not timing)
            done = coordinator.run(workloads, dtype, say.item_done)
    except TimingFault as exc:
        verdict.wall_s["timing"] = time.monotonic() - start
        status = "rejected" if exc.arm == timing.CANDIDATE else "error"
        raise ev.Rejected("timing", exc.reason if status == "rejected" else
                          f"the verifier could not time on this device: {exc.reason}", status=status) from exc
    verdict.wall_s["timing"] = time.monotonic() - start
    verdict.timing = timing_record(device, done, dtype)
    verdict.versions.update(device.info())
    if device.kind == "gpu":
        verdict.unverified += GPU_UNVERIFIED
    else:
        verdict.unverified.append("GPU timing: the simulated device times the interpreter on the CPU with the GPU "
                                  "path's protocol (not GPU speed); use kopt eval --device cuda on a GPU machine")
    for row in done:
        if row.mismatch:
            raise ev.Rejected("timing", f"timing on {row.workload}: {row.mismatch}")
        if row.stats.invalid:
            raise ev.Rejected("timing", f"timing integrity on {row.workload}: {row.stats.invalid}")


def timing_record(device: Any, done: list, dtype: str) -> Timing:
    simulated = device.kind != "gpu"
    label = device.label if simulated else "gpu"
    rows = [WorkloadTiming(workload=r.workload, label=label, baseline_ms=r.stats.baseline_ms,
                           candidate_ms=r.stats.candidate_ms, speedup=r.stats.speedup, tie=r.stats.tie,
                           flags=r.stats.flags, floor_ms=r.floor_ms or None, sol_fraction=r.stats.sol_fraction,
                           noise_band=r.stats.noise_band) for r in done]
    geomean = timing.geomean([r.speedup for r in rows])
    _, _, peaks_note = device.peaks()
    notes = [f"{dtype}; median of paired baseline/candidate ratios over interleaved rounds, each arm in its own "
             "process; caches flushed and new input content in the same buffers before every call",
             f"roofline floors from {peaks_note}"]
    if simulated:
        notes.insert(0, "simulated device: Triton interpreter wall time on the CPU, timed by the GPU path's "
                        "protocol; says nothing about GPU speed")
    return Timing(label=label, kind="simulated" if simulated else "gpu", workloads=rows,
                  geomean_speedup=None if simulated else geomean,
                  simulated_ratio=geomean if simulated else None,
                  noise_band=max((r.noise_band or 0.0) for r in rows) if rows else None, notes=notes)

