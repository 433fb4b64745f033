"""The timing coordinator: trusted code timing the baseline, a second copy of it and the candidate,
each in its own process, on the same fresh inputs in the same buffers, by timing.py's protocol.
Every timed call's content is new (an input set scaled by a factor drawn for that call).

No arm shares a process with another, and none with this one: the candidate cannot reach the
baseline, its timer or the reference. Each call's time is reported by the verifier's own code in
the arm's process (CUDA events on a GPU, the host clock on the simulated device) and cross-checked
here against the host clock around the whole request: work hidden outside the timed window, or a
report that does not match the wall time, makes the timing invalid. Every candidate output made
under timing is judged against the reference of the content it was given.
"""

from __future__ import annotations

import math
import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

from kopt.verifier import check, timing
from kopt.verifier.cpu import DTYPES, coin, job_for, part_failure
from kopt.verifier.session import ChildFailure, Session
from kopt.verifier.task import Case, Task

INPUT_SETS = 3
ARMS = (timing.BASELINE, timing.COPY, timing.CANDIDATE)


class TimingFault(Exception):
    """An arm misbehaved under timing: the candidate's is a rejection, a baseline's an `error`."""

    def __init__(self, arm: str, reason: str):
        super().__init__(reason)
        self.arm, self.reason = arm, reason


@dataclass
class WorkloadResult:
    workload: str
    stats: timing.WorkloadStats
    floor_ms: float
    timed_calls: int
    mismatch: str | None = None


def content_factor(secret: int, arm: str, call: int) -> float:
    """A timed call's scale for its content (devices.fresh_content), in [0.875, 1.125) and never 1, from the
    secret: no two calls of an arm see the same content (the panel's cheat kept a result across calls in
    memory the GPU's caching allocator hands back, and found it again when the content repeated)."""
    step = coin(secret, "content", arm, call) % 4095 + 1  # 1 .. 4095
    return 0.875 + step / 16384 if step != 2048 else 1.0625


class ArmTimer:
    """timing.Timer over three sessions: each call gets input set `index`, scaled by a factor of its own
    (new content every call), its outputs poisoned first."""

    def __init__(self, sessions: dict[str, Session], staged: dict[str, Any], outputs: list[str], secret: int,
                 workload: str):
        self.sessions, self.staged, self.outputs, self.secret = sessions, staged, outputs, secret
        self.workload = workload
        self.calls = 0
        self.last: dict[int, dict[str, Any]] = {}  # input set -> the candidate's latest timed outputs
        self.given: dict[int, dict[str, Any]] = {}  # input set -> the content those outputs were made from

    def time_call(self, arm: str, workload: str, index: int) -> timing.Sample:
        self.calls += 1
        count = len(self.staged[arm])
        inputs = self.staged[arm].inputs(index, content_factor(self.secret, arm, self.calls))
        try:
            result = self.sessions[arm].call(f"timing {arm} on {workload}", f"timed-{workload}", inputs,
                                             self.outputs, poison=math.nan,
                                             end_aligned=bool(coin(self.secret, arm, self.calls) % 2), timed=True)
        except ChildFailure as exc:  # died or hung: the candidate's fault, or the verifier's for a baseline arm
            raise TimingFault(arm, f"{arm} under timing on {workload}: {exc.reason}") from exc
        if result.exception is not None:
            exc = result.exception
            raise TimingFault(arm, f"{arm} raised under timing on {workload}: {exc['type']}: {exc['message']}")
        if result.problems:
            raise TimingFault(arm, f"{arm} under timing on {workload}: " + "; ".join(result.problems))
        event_ms = result.reply.get("event_ms")
        if not isinstance(event_ms, (int, float)) or not event_ms >= 0:
            raise TimingFault(arm, f"{arm}: no time came back for a timed call")
        if arm == timing.CANDIDATE:
            self.last[index % count] = result.outputs
            self.given[index % count] = getattr(inputs, "tensors", None)
        return timing.Sample(float(event_ms), result.wall_s * 1e3)


@dataclass
class Coordinator:
    """Times every workload of a device with one process per arm, opened once for all workloads."""

    task: Task
    source: str
    device: Any
    secret: int
    cancel: threading.Event
    results: list[WorkloadResult] = field(default_factory=list)

    def sessions(self) -> dict[str, Session]:
        cfg, dev = self.task.config, self.device
        baseline = self.task.baseline_path.read_text()
        sources = {timing.BASELINE: (baseline, "kopt_baseline"), timing.COPY: (baseline, "kopt_baseline_copy"),
                   timing.CANDIDATE: (self.source, "kopt_candidate")}
        opened: dict[str, Session] = {}
        try:
            for arm, (source, module) in sources.items():
                trusted = arm != timing.CANDIDATE  # the pinned baseline: compiled once per kopt process
                opened[arm] = Session(source, job_for(self.task, dev.child_mode, module), interpret=dev.interpret,
                                      timeout_s=cfg.timeouts.timing_s, memory_bytes=dev.child_memory_bytes,
                                      cancel=self.cancel, device=dev,
                                      env={"TRITON_CACHE_DIR": baseline_cache(self.task)} if trusted else None)
        except ChildFailure as exc:
            for session in opened.values():
                session.close()
            arm = next(a for a in sources if a not in opened)
            raise TimingFault(arm, f"{arm} could not start for timing: {exc.reason}") from exc
        return opened

    def run(self, workloads: list[Case], dtype: str, done: Any = None) -> list[WorkloadResult]:
        """`done`: called after each workload (progress)."""
        sessions = self.sessions()
        try:
            busy = self.device.idle_problem()
            if busy:
                raise TimingFault("device", busy)
            self.device.warm_up()
            for workload in workloads:
                self.results.append(self.workload(sessions, workload, dtype))
                if done is not None:
                    done()
        finally:
            for session in sessions.values():
                session.close()
        return self.results

    def workload(self, sessions: dict[str, Session], workload: Case, dtype: str) -> WorkloadResult:
        cfg, dev = self.task.config, self.device
        reference = self.task.load_reference()
        seed = coin(self.secret, "timing", workload.id)
        kwargs = lambda k: {"variant": k} if k else {}  # noqa: E731
        variants = [reference.make_inputs(workload.params, DTYPES[dtype], seed, dev.tensor_device, **kwargs(k))
                    for k in range(INPUT_SETS if _has_variants(reference) else 1)]
        staged = {arm: dev.stage(variants, cfg.outputs) for arm in ARMS}
        try:
            timer = ArmTimer(sessions, staged, cfg.outputs, self.secret, workload.id)
            proto = dev.protocol
            for arm in ARMS:  # compile, autotune, first-call costs: never inside the measurement
                for k in range(proto.warmup_calls):
                    timer.time_call(arm, workload.id, k)
            estimate = statistics.median(timer.time_call(timing.BASELINE, workload.id, k).event_ms for k in range(3))
            bandwidth, tflops, _ = dev.peaks()
            floor = 0.0
            if hasattr(reference, "cost"):
                nbytes, flops = reference.cost(workload.params, DTYPES[dtype].itemsize, seed)
                floor = timing.roofline_floor_ms(nbytes, flops, bandwidth, tflops)
            stats = timing.measure_workload(timer, workload.id, estimate, floor, rounds=proto.rounds,
                                            aa_rounds=proto.aa_rounds, target_ms=proto.target_ms,
                                            min_iters=proto.min_iters, max_iters=proto.max_iters,
                                            band_factor=getattr(dev, "band_factor", 1.0))
            mismatch = self.timed_outputs(timer, variants, reference, dtype)
            return WorkloadResult(workload.id, stats, floor, timer.calls, mismatch)
        finally:
            for s in staged.values():
                s.close()

    def timed_outputs(self, timer: ArmTimer, variants: list[dict], reference: Any, dtype: str) -> str | None:
        """Threat 16: under timing conditions the candidate's output meets the correctness tolerance against
        the reference of the content it was given (not a looser bound against the baseline)."""
        tol = self.task.config.tolerance[dtype].model_dump()
        if len(timer.last) < len(variants):
            return f"only {len(timer.last)} of {len(variants)} input sets were timed: the protocol is too short"
        for index, outputs in sorted(timer.last.items()):
            content = timer.given.get(index) or variants[index]  # what that call was given, its factor applied
            for name, ref in reference.reference(content).items():
                reason, _, _, _ = check.judge(outputs[name], ref, tol, dtype)
                reason = reason or part_failure(reference, content, name, outputs[name], ref, tol)
                if reason:
                    return f"{name} under timing conditions (input set {index + 1}): {reason}"
        return None


_CACHES: dict[str, str] = {}


def baseline_cache(task: Task) -> str:
    """A Triton cache for the pinned baseline's processes, kept for this kopt process's life (a run's
    evaluations compile the baseline once). Candidates always get a fresh cache of their own."""
    if task.hash not in _CACHES:
        import tempfile
        _CACHES[task.hash] = tempfile.mkdtemp(prefix="kopt-baseline-cache-")
    return _CACHES[task.hash]


def _has_variants(reference: Any) -> bool:
    import inspect
    return "variant" in inspect.signature(reference.make_inputs).parameters
