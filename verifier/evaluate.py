"""The orchestrator side of one evaluation: gate, child phases, checks, timing -> Verdict.

This process never imports candidate code. Children run the candidate; the reference is
computed here (CPU) or in a trusted child (GPU). Fail closed: a phase that does not come back
with a clean result is a rejection with the reason.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ContextManager

from kopt.verifier import cpu, launches, sandbox, timing
from kopt.verifier.gate import check_source
from kopt.verifier.progress import ProgressFn, Tracker
from kopt.verifier.session import ChildFailure
from kopt.verifier.task import Task
from kopt.verifier.verdict import (INTERPRETER_LABEL, CaseResult, CompileReport, KernelResources, LaunchReport,
                                   Timing, Verdict, WorkloadTiming)

MAX_SOURCE_BYTES = 1 << 20


class Rejected(Exception):
    def __init__(self, phase: str, reason: str, log: str | None = None, status: str = "rejected"):
        super().__init__(reason)
        self.phase, self.reason, self.log, self.status = phase, reason, log, status


def resolve_device(device: str) -> str:
    from kopt.verifier.devices import resolve
    return resolve(device)


def local_target(index: int = 0) -> str | None:
    """sm_XY of the visible GPU when kopt knows its limits (else the task's default target)."""
    import torch
    from kopt.verifier.compile import SHARED_LIMITS
    major, minor = torch.cuda.get_device_capability(index)
    arch = major * 10 + minor
    return f"sm_{arch}" if arch in SHARED_LIMITS else None


def mix_seed(secret: int, *parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, (secret, *parts))).encode()).hexdigest()
    return int(digest[:12], 16)


def plan_items(task: Task, device: str, secret: int, workloads: list | None = None) -> list[dict[str, Any]]:
    """Every (case, dtype, seed) to check; seeds mix the public index with the run's secret. `device` is
    a device kind (cpu, simulated, gpu); the GPU path also checks the workloads it times."""
    cfg = task.config
    profile = cfg.cpu if device == "cpu" else cfg.gpu
    cases = [(c.id, c.params, False) for c in cfg.cases]
    cases += [(w.id, w.params, False) for w in workloads or []]
    reference = task.load_reference()
    if profile.hidden_cases and hasattr(reference, "holdout_cases"):
        hidden = reference.holdout_cases(mix_seed(secret, "holdout"), profile.hidden_cases)
        cases += [(f"hidden-{i + 1}", params, True) for i, params in enumerate(hidden)]
    if device == "gpu":  # the hidden probes, whole (the CPU runs a sample of their programs: probe_items)
        cases += [(case_id, params, True) for case_id, params in hidden_probes(task, "gpu", secret)]
    items = []
    for index, (case_id, params, hidden) in enumerate(cases):
        # a case may name the dtypes it is checked in (a long one, in the timed dtype only: no repeat calls);
        # where the profile checks none of them (a task copy with fewer dtypes), it is not checked: such a case
        # is sized for its dtypes (a pool past 2^31 elements is 4 GiB in bf16, 8 in fp32)
        only = params.get("dtypes")
        if params.get("gpu_only") and device != "gpu":  # a case whose size only a GPU runs in its time (a grid
            continue  # of a million programs under the interpreter); the simulated device skips it too
        by_dtype = params.get("by_dtype") or {}  # parameters replaced in a dtype (a size that dtype's bounds see)
        params = {k: v for k, v in params.items() if k not in ("dtypes", "gpu_only", "by_dtype")}
        dtypes = [d for d in profile.dtypes if only is None or d in only]
        for d, dtype in enumerate(dtypes):
            mine = {**params, **by_dtype.get(dtype, {})}
            for s in range(1 if hidden else profile.seeds):
                seed = mix_seed(secret, case_id, dtype, s)
                # the repeat calls (same buffers: another poison and program order, then new content)
                # for each case in one dtype on CPU, rotating over the dtypes (every dtype on a GPU)
                repeat = s == 0 and (device == "gpu" or (only is None and d == index % len(dtypes)))
                items.append({"key": f"{case_id}/{dtype}/{s}", "case": case_id, "params": mine, "dtype": dtype,
                              "seed": seed, "hidden": hidden, "repeat": repeat, "public_index": s})
    return items


def probe_items(task: Task, secret: int) -> list[dict[str, Any]]:
    """The GPU workloads for the CPU's sampled-programs check (cpu.Correctness.check_probe), in the timed
    dtype, if the CPU checks it and the task's reference can compute chosen rows only (`only=`)."""
    cfg = task.config
    dtype = cfg.gpu.dtypes[0]
    reference = task.load_reference()
    if dtype not in cfg.cpu.dtypes or not cpu.samples_rows(reference):
        return []
    shapes = [(w.id, w.params, False) for w in cfg.workloads]
    shapes += [(case_id, params, True) for case_id, params in hidden_probes(task, "cpu", secret)]
    return [{"key": f"{case_id}/{dtype}/sampled", "case": case_id, "params": params, "dtype": dtype,
             "seed": mix_seed(secret, case_id, dtype, "sampled"), "hidden": hidden, "repeat": False,
             "public_index": 0} for case_id, params, hidden in shapes]


def hidden_probes(task: Task, device: str, secret: int) -> list[tuple[str, dict[str, Any]]]:
    """The profile's hold-out shapes in the GPU workloads' regime (the task's `holdout_probes`), drawn per
    evaluation: a wrong path in a region of sizes that no case or workload reaches together shows in some."""
    profile = task.config.cpu if device == "cpu" else task.config.gpu
    reference = task.load_reference()
    if not profile.hidden_probes or not hasattr(reference, "holdout_probes"):
        return []
    drawn = reference.holdout_probes(mix_seed(secret, "probes"), profile.hidden_probes)
    return [(f"probe-{i + 1}", params) for i, params in enumerate(drawn)]


def evaluate(kernel: Path | str, task: Task, *, device: str = "auto", target: str | None = None,
             secret: int | None = None, progress: ProgressFn | None = None,
             timing_lease: Callable[[], ContextManager] | None = None) -> Verdict:
    """Judge one kernel file against a task. Never raises for anything the kernel does.
    `progress`: called from this (trusted) process at each phase and case run (verifier.progress).
    `timing_lease`: held around the device timing (an executor's exclusive lease on the device: two
    timings on one GPU at once corrupt both); the checks before it need none."""
    started = time.monotonic()
    say = Tracker(progress)
    source = Path(kernel).read_text() if isinstance(kernel, Path) else kernel
    device = resolve_device(device)
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    target = target or (local_target(index) if device.startswith("cuda") else None) or task.config.default_target
    verdict = Verdict(status="error", task=task.name, task_hash=task.hash,
                      kernel_sha256=hashlib.sha256(source.encode()).hexdigest(), device=device, target=target,
                      versions=sandbox.python_versions())
    secret = secrets.randbits(62) if secret is None else secret
    sandbox.sweep_stale_dirs()
    try:
        _evaluate(source, task, device, target, secret, verdict, say, timing_lease)
        verdict.status, verdict.phase = "ok", None
    except Rejected as exc:
        verdict.status, verdict.phase, verdict.reason = exc.status, exc.phase, exc.reason
        verdict.log_excerpt = (exc.log or "")[-3000:] or None
    except Exception as exc:  # the verifier's own failure: an error verdict, never a pass, never a crash
        import traceback
        verdict.status, verdict.phase = "error", "verifier"
        verdict.reason = f"the verifier failed: {type(exc).__name__}: {exc}"
        verdict.log_excerpt = traceback.format_exc()[-3000:]
    verdict.wall_s["total"] = time.monotonic() - started  # the phases above overlap: not their sum
    return verdict


def gate(source: str, task: Task) -> list:
    cfg = task.config
    return check_source(source, tuple(cfg.extra_imports), cfg.allow_inline_asm, cfg.editable_file,
                        extra_chains=tuple(cfg.extra_chains), entry_point=cfg.entry_point,
                        signature=tuple(cfg.signature), scalar_args=tuple(cfg.scalar_args))


def _evaluate(source: str, task: Task, device: str, target: str, secret: int, verdict: Verdict, say: Tracker,
              timing_lease: Callable[[], ContextManager] | None = None) -> None:
    start = time.monotonic()
    say.phase("gate", "static gate")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise Rejected("gate", f"the kernel file is larger than {MAX_SOURCE_BYTES} bytes")
    violations = gate(source, task)
    verdict.wall_s["gate"] = time.monotonic() - start
    if violations:
        raise Rejected("gate", "static gate: " + "; ".join(map(str, violations[:5]))
                       + (f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""))
    if device == "cpu":
        _evaluate_cpu(source, task, target, secret, verdict, say)
        return
    from kopt.verifier import accel, devices
    try:
        dev = devices.accelerator(device)
        dev.workloads(task)
    except ValueError as exc:
        raise Rejected("device", str(exc), status="error") from exc
    accel.evaluate_on(dev, source, task, target, secret, verdict, say, timing_lease)


def _evaluate_cpu(source: str, task: Task, target: str, secret: int, verdict: Verdict, say: Tracker) -> None:
    cfg = task.config
    items = plan_items(task, "cpu", secret)
    cancel = threading.Event()
    small = {c.id for c in cfg.cases}
    first_dtype = items[0]["dtype"] if items else None
    compile_items = [dict(i, dtype=cfg.gpu.dtypes[0]) for i in items if i["public_index"] == 0
                     and i["case"] in small and i["dtype"] == first_dtype]
    # interpreter times in the dtype the GPU times when the CPU checks it (bf16: the baseline runs on
    # those items anyway, for the comparative rule), else in the first
    timed_dtype = cfg.gpu.dtypes[0] if cfg.gpu.dtypes[0] in cfg.cpu.dtypes else first_dtype
    timed = [i for i in items if i["public_index"] == 0 and not i["hidden"] and i["dtype"] == timed_dtype]
    workloads = [(w.id, w.params) for w in cfg.workloads]
    compiled = Later(cancel)
    phases: dict[str, Callable[[], Any]] = {"compile": compiled.of(lambda: cpu.compile_calls(
        task, source, compile_items, target, cancel, workloads))}
    probes = probe_items(task, secret)
    for dtype in sorted({i["dtype"] for i in items}):
        mine = [i for i in items if i["dtype"] == dtype]
        checker = cpu.Correctness(task, source, mine, secret, cancel, raises=dtype == first_dtype,
                                  workload_configs=lambda: (compiled.wait() or {}).get("workload_configs"))
        checker.on_item = say.item_done
        phases[f"correctness ({dtype})"] = checker.run
    if probes:  # a process of their own: the phases run in parallel, and these are as long as a dtype's cases
        phases["correctness (workloads, sampled)"] = cpu.Correctness(task, source, [], secret, cancel, raises=False,
                                                                     probes=probes).run
    compared = [i for i in items if cfg.tolerance[i["dtype"]].comparative_factor is not None]
    phases["baseline"] = lambda: cpu.baseline_run(task, timed, compared, cancel)
    say.phase("checking", f"compile and correctness in {len(phases)} child processes", total=len(items))
    results, failures = run_parallel(phases, cancel, verdict)
    judge_phases(results, failures, verdict, target, items, task)
    verdict.unverified += [note for name, checked in sorted(results.items()) if name.startswith("correctness")
                           for note in checked.notes]
    verdict.unverified += coverage_notes(results)
    walls = {k: v for name, checked in results.items() if name.startswith("correctness")
             for k, v in checked.wall_s.items()}
    verdict.timing = interpreter_timing(items, walls, results["baseline"].times, results["baseline"].again)
    verdict.unverified.append("GPU timing: this machine has no GPU (interpreter wall times are not GPU speed); "
                              "use kopt eval --device cuda on a GPU machine")
    verdict.unverified.append("GPU correctness: checked under the Triton interpreter, made to compute as a compiled "
                              "kernel where they were found to differ (docs/threats.md), not in the last ulps of "
                              "approximate instructions; the GPU profile's larger hidden cases and the probes run "
                              "whole only on a GPU: kopt eval --device cuda re-checks every case there")
    for dtype in cfg.gpu.dtypes:
        if dtype not in cfg.cpu.dtypes:
            verdict.unverified.append(f"{dtype}: not checked on CPU (the GPU checks it)")


class Later:
    """One phase's result, for another phase to wait on (None if it failed or the evaluation was cancelled)."""

    def __init__(self, cancel: threading.Event):
        self.cancel, self.done, self.value = cancel, threading.Event(), None

    def of(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                self.value = fn()
                return self.value
            finally:
                self.done.set()
        return run

    def wait(self) -> Any:
        while not self.done.wait(0.2):
            if self.cancel.is_set():
                return None
        return self.value


def judge_phases(results: dict[str, Any], failures: dict[str, tuple[str, str]], verdict: Verdict, target: str,
                 items: list[dict], task: Task) -> None:
    """The phases' findings into the verdict: the first real failure, then every case row (raises Rejected)."""
    if "compile" in results or "compile" in failures:
        verdict.compile = compile_report(results.get("compile"), failures.get("compile"), target,
                                         verdict.wall_s.get("compile", 0.0))
    real = {k: v for k, v in failures.items() if not v[0].startswith("cancelled")}
    for name, (reason, log) in sorted(real.items(), key=lambda kv: kv[0] != "compile"):
        if name == "baseline":
            raise Rejected("baseline", f"the pinned baseline failed: {reason}", log, status="error")
        if reason.startswith("interpreter: "):
            raise Rejected(name, f"{name}: the Triton interpreter cannot run this kernel on a CPU machine (not "
                           f"the kernel's fault): {reason[len('interpreter: '):]}. Verify it on a GPU "
                           "(kopt eval --device cuda) or use an equivalent construct the interpreter runs.", log,
                           status="error")
        if name == "compile" and verdict.compile is not None and not verdict.compile.ok:
            raise Rejected("compile", f"compile for {target}: {verdict.compile.error}", log)
        raise Rejected(name, f"{name}: {reason}", log)
    if verdict.compile is not None and not verdict.compile.ok:
        raise Rejected("compile", f"compile for {target}: {verdict.compile.error}")
    # rows in the plan's order (case, then dtype, then seed), then the must-raise checks
    per_dtype = {name[len("correctness ("):-1]: iter(checked.rows) for name, checked in results.items()
                 if name.startswith("correctness")}  # (and "workloads, sampled": rows after the plan's)
    rows = [next(per_dtype[item["dtype"]]) for item in items]
    scales = {k: v for name, checked in results.items() if name.startswith("correctness")
              for k, v in checked.scales.items()}
    cpu.comparative(rows, items, results["baseline"], task, scales)
    rows += [r for it in per_dtype.values() for r in it]
    verdict.cases = [CaseResult(**r) for r in rows]
    for name, checked in results.items():
        if name.startswith("correctness"):
            for kernel, count in checked.autotune.items():
                missing = sorted(set(range(count)) - checked.configs_run.get(kernel, set()))
                if count > 1 and missing:
                    verdict.unverified.append(f"{kernel}: autotune configs {missing} were never checked in {name}")
    failed = [r for r in rows if not r["passed"]]
    if failed:
        first = failed[0]
        where = "a hidden case" if first["hidden"] else f"case {first['case']}"
        raise Rejected("correctness", f"{len(failed)} of {len(rows)} case runs failed; first: {where} "
                       f"({first['dtype']}): {first['reason']}")
    unjudged = [u for name, checked in sorted(results.items()) if name.startswith("correctness")
                for u in checked.unjudged]
    if unjudged:  # fail closed: the CPU's only look at the workloads' sizes could not be taken
        raise Rejected("correctness", f"the CPU cannot judge this kernel (not the kernel's fault): {unjudged[0]}. "
                       "On CPU the GPU workloads' exact shapes are checked by running a sample of their programs "
                       "under the interpreter (all of them would take hours); a kernel whose output depends on "
                       "programs not run (a second launch in a call, atomics) cannot be sampled, so a branch on "
                       "those shapes would go unseen. Verify it on a GPU (kopt eval --device cuda), or keep one "
                       "launch per call without atomics.", status="error")


def coverage_notes(results: dict[str, Any]) -> list[str]:
    """Specializations the GPU workloads launch that no checked call reached, and dry runs that failed."""
    checked_keys = {k for name, c in results.items() if name.startswith("correctness") for k in c.keys}
    report = results.get("compile") or {}
    return (launches.coverage(report.get("workload_keys", {}), checked_keys)
            + [f"{w}: no launch report ({why})" for w, why in report.get("launch_errors", {}).items()])


def run_parallel(phases: dict[str, Callable[[], Any]], cancel: threading.Event,
                 verdict: Verdict) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """Run the phases in threads; the first failure cancels the others (fail fast)."""
    results: dict[str, Any] = {}
    failures: dict[str, tuple[str, str]] = {}

    def guarded(name: str, fn: Callable[[], Any]) -> None:
        start = time.monotonic()
        try:
            results[name] = fn()
        except ChildFailure as exc:
            failures[name] = (exc.reason, exc.log)
            cancel.set()
        except cpu.CandidateError as exc:
            failures[name] = (str(exc), "")
            cancel.set()
        except cpu.InterpreterLimit as exc:
            failures[name] = ("interpreter: " + str(exc), "")
            cancel.set()
        except BaseException:  # the verifier's own failure: stop the siblings, report as an error
            cancel.set()
            raise
        finally:
            verdict.wall_s[name] = time.monotonic() - start

    with ThreadPoolExecutor(max_workers=max(2, len(phases))) as pool:
        for future in [pool.submit(guarded, name, fn) for name, fn in phases.items()]:
            future.result()
    return results, failures


def compile_report(result: dict | None, failure: tuple[str, str] | None, target: str, wall_s: float) -> CompileReport:
    from kopt.verifier.compile import parse_target
    limit = parse_target(target)[3]
    if failure is not None:
        reason = failure[0]
        return CompileReport(target=target, shared_limit_bytes=limit, ok=reason.startswith("cancelled"),
                             error=None if reason.startswith("cancelled") else reason, wall_s=wall_s)
    result = result or {}
    kernels = [KernelResources(**k) for k in result.get("kernels", [])]
    return CompileReport(target=target, shared_limit_bytes=result.get("shared_limit", limit),
                         ok=not result.get("error"), error=result.get("error"), kernels=kernels, wall_s=wall_s,
                         launches=[LaunchReport(**row) for row in result.get("launches", [])],
                         launch_errors=result.get("launch_errors", {}))


def interpreter_timing(items: list[dict], candidate: dict[str, float], baseline: dict[str, float],
                       again: dict[str, tuple[float, float]] | None = None) -> Timing:
    """Interpreter wall times measured by trusted code: labelled as such everywhere, never a GPU speedup.
    The noise band is the baseline timed against itself (two warm calls on the same inputs): the 75th
    percentile of |1 - ratio| over the cases, so a ratio inside it says nothing."""
    workloads = []
    for item in items:
        if item["key"] in baseline and item["key"] in candidate:
            b, c = baseline[item["key"]], candidate[item["key"]]
            workloads.append(WorkloadTiming(workload=f"{item['case']}/{item['dtype']}", label=INTERPRETER_LABEL,
                                            baseline_ms=b * 1e3, candidate_ms=c * 1e3, speedup=b / c))
    spread = sorted(abs(1.0 - a / b) for a, b in (again or {}).values() if b > 0)
    band = spread[min(len(spread) - 1, int(0.75 * len(spread)))] if spread else None
    for w in workloads:
        w.noise_band = band
        w.tie = band is not None and abs(w.speedup - 1.0) <= band
    return Timing(label=INTERPRETER_LABEL, workloads=workloads, noise_band=band,
                  interpreter_ratio=timing.geomean([w.speedup for w in workloads]) if workloads else None,
                  notes=["Triton interpreter wall time on the CPU: says nothing about GPU speed",
                         "noise band: the baseline timed against itself (two warm calls; 75th percentile of |1 - ratio| per case)"])


def compile_only(source: str, task: Task, target: str | None = None) -> CompileReport:
    """Gate + ahead-of-time compile for the target (registers, spills, shared memory), no checks."""
    cfg = task.config
    target = target or cfg.default_target
    from kopt.verifier.compile import parse_target
    limit = parse_target(target)[3]
    violations = gate(source, task)
    if violations:
        return CompileReport(target=target, shared_limit_bytes=limit, ok=False,
                             error="static gate: " + "; ".join(map(str, violations[:5])))
    items = [i for i in plan_items(task, "cpu", 0) if i["public_index"] == 0 and not i["hidden"]]
    first = items[0]["dtype"] if items else None
    items = [dict(i, dtype=cfg.gpu.dtypes[0]) for i in items if i["dtype"] == first]
    start = time.monotonic()
    try:
        result = cpu.compile_calls(task, source, items, target, threading.Event(),
                                   [(w.id, w.params) for w in cfg.workloads])
        return compile_report(result, None, target, time.monotonic() - start)
    except ChildFailure as exc:
        return compile_report(None, (exc.reason, exc.log), target, time.monotonic() - start)
