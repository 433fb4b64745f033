"""Where evaluations run: one interface, two executors.

- `local` (default): the verifier's child processes on this machine. Evaluations run in parallel up
  to a bounded number of slots (each one is several child processes); the device timing of each
  holds an exclusive lease on its GPU (timing two candidates on one GPU at once corrupts both: the
  interleaved protocol assumes an idle device), so checks overlap while timings queue per GPU.
- `ray`: the same evaluation as a Ray task on the cluster at `--ray-address`, or a local Ray
  instance. A task on a GPU device requests `num_gpus=1` (Ray gives it a GPU of its own, so the
  lease is Ray's scheduling); on cpu or sim it requests one CPU. The task's files travel with the
  job through Ray's object store (a worker has kopt installed, not a checkout). A worker that dies,
  a task that fails or one that outlives its limit comes back as an `error` verdict: the
  candidate is not charged, and the evaluation is never lost.

Both return the verifier's Verdict for (source, candidate id); a driver never knows which ran it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

from kopt.verifier import sandbox
from kopt.verifier.progress import Progress
from kopt.verifier.task import Task, load_task
from kopt.verifier.verdict import Verdict

EXECUTORS = ("local", "ray")
ProgressFn = Callable[[int, Progress], None]
# (source, task, device, target, secret, progress, timing_lease) -> Verdict: verifier.evaluate.evaluate's shape
EvaluateFn = Callable[..., Verdict]


class ExecutorError(Exception):
    """An executor that cannot start (Ray not installed, a cluster that cannot be reached)."""


class Executor(Protocol):
    name: str

    def evaluate(self, source: str, candidate_id: int) -> Verdict: ...

    def close(self) -> None: ...


def secret_for(secret: int, candidate_id: int) -> int:
    from kopt.verifier.evaluate import mix_seed
    return mix_seed(secret, "candidate", candidate_id)


def error_verdict(task: Task, source: str, device: str, target: str | None, reason: str, phase: str = "executor"
                  ) -> Verdict:
    """The executor's own failure: an error, never charged to the candidate (a retry may evaluate it)."""
    return Verdict(status="error", reason=reason, phase=phase, task=task.name, task_hash=task.hash,
                   kernel_sha256=hashlib.sha256(source.encode()).hexdigest(), device=device,
                   target=target or task.config.default_target)


class Leases:
    """One exclusive timing lease per device, and the choice of device for a new evaluation (the one
    with the fewest evaluations on it)."""

    def __init__(self, devices: list[str]):
        self.devices = devices
        self.locks = {d: threading.Lock() for d in devices}
        self.load = {d: 0 for d in devices}
        self.guard = threading.Lock()

    @contextlib.contextmanager
    def assigned(self) -> Iterator[str]:
        with self.guard:
            device = min(self.devices, key=lambda d: (self.load[d], self.devices.index(d)))
            self.load[device] += 1
        try:
            yield device
        finally:
            with self.guard:
                self.load[device] -= 1

    def lease(self, device: str) -> ContextManager:
        return self.locks[device]


def local_devices(device: str) -> list[str]:
    """The devices a local executor spreads evaluations over: every visible GPU for `cuda` (or `auto`
    on a GPU machine), else the one named."""
    from kopt.verifier.evaluate import resolve_device
    resolved = resolve_device(device)
    if resolved == "cuda":
        import torch
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [resolved]


def default_slots(devices: list[str]) -> int:
    """Evaluations at once: half the cores (each is several child processes), at least one per GPU."""
    return max(1, (os.cpu_count() or 2) // 2, len([d for d in devices if d.startswith("cuda")]))


class LocalExecutor:
    name = "local"

    def __init__(self, task: Task, device: str, target: str | None, secret: int, progress: ProgressFn | None = None,
                 slots: int | None = None, evaluate_fn: EvaluateFn | None = None, devices: list[str] | None = None):
        from kopt.verifier.evaluate import evaluate
        self.task, self.target, self.secret, self.progress = task, target, secret, progress
        self.leases = Leases(devices or local_devices(device))
        self.slots = threading.BoundedSemaphore(slots or default_slots(self.leases.devices))  # the bounded queue
        self.evaluate_fn = evaluate_fn or evaluate

    def evaluate(self, source: str, candidate_id: int) -> Verdict:
        say = (lambda p: self.progress(candidate_id, p)) if self.progress else None
        if not self.slots.acquire(blocking=False):  # said only when it has to wait
            if say is not None:
                say(Progress(phase="queued", message="waiting for a free evaluation slot"))
            self.slots.acquire()
        try:
            with self.leases.assigned() as device:
                return self.evaluate_fn(source, self.task, device=device, target=self.target,
                                        secret=secret_for(self.secret, candidate_id), progress=say,
                                        timing_lease=lambda: self.leases.lease(device))
        finally:
            self.slots.release()

    def close(self) -> None:
        pass


# ---- ray

def task_files(task: Task) -> dict[str, bytes]:
    """Every file of the task directory (what a worker without a checkout needs to load it)."""
    root = Path(task.root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


_MATERIALISED: dict[str, Path] = {}


def materialise(name: str, task_hash: str, files: dict[str, bytes]) -> Task:
    """On a worker: the task written out once per process and loaded; its hash must be the driver's."""
    root = _MATERIALISED.get(task_hash)
    if root is None:
        root = Path(tempfile.mkdtemp(prefix=f"kopt-task-{task_hash[:12]}-")) / name
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        _MATERIALISED[task_hash] = root
    task = load_task(root)
    if task.hash != task_hash:
        raise RuntimeError(f"the task's files changed on the way to the worker (hash {task.hash[:12]} != "
                           f"{task_hash[:12]})")
    return task


def run_job(job: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """The body of a Ray task: one evaluation on the worker, its Verdict as JSON data."""
    from kopt.verifier.evaluate import evaluate
    task = materialise(job["task"], job["task_hash"], files)
    verdict = evaluate(job["source"], task, device=job["device"], target=job["target"], secret=job["secret"])
    verdict.versions["executor"] = f"ray worker pid {os.getpid()}"
    return verdict.model_dump(mode="json")


class RayExecutor:
    name = "ray"

    def __init__(self, task: Task, device: str, target: str | None, secret: int, progress: ProgressFn | None = None,
                 address: str | None = None, limit_s: float | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'kopt[ray]'") from None
        self.ray = ray
        self.task, self.device, self.target, self.secret, self.progress = task, device, target, secret, progress
        t = task.config.timeouts
        self.limit_s = limit_s or 2 * (t.compile_s + t.correctness_s + t.timing_s)  # past the verifier's own limits
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:  # a local instance, private to this kopt process
                    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 (Ray raises many kinds: ConnectionError, RuntimeError, ...)
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise ExecutorError(f"could not start {where}: {type(exc).__name__}: {exc}. Check `ray status` "
                                    "there, or run with --executor local") from None
            self.owned = True
        else:
            self.owned = False
        self.files = ray.put(task_files(task))
        gpu = device.startswith("cuda") or (device == "auto" and self._cluster_gpus() > 0)
        self.remote = ray.remote(run_job).options(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=0,
                                                  name="kopt-evaluate")
        self.device_for_task = "cuda" if gpu else ("cpu" if device == "auto" else device)

    def _cluster_gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def evaluate(self, source: str, candidate_id: int) -> Verdict:
        ray = self.ray
        if self.progress is not None:
            self.progress(candidate_id, Progress(phase="queued", message="submitted to Ray"))
        job = {"task": self.task.name, "task_hash": self.task.hash, "source": source, "device": self.device_for_task,
               "target": self.target, "secret": secret_for(self.secret, candidate_id)}
        ref = self.remote.remote(job, self.files)
        deadline = time.monotonic() + self.limit_s
        while not ray.wait([ref], timeout=min(1.0, max(0.0, deadline - time.monotonic())))[0]:
            if sandbox.stopping():  # the operator's stop-now: the remote evaluation is cancelled like a local one
                ray.cancel(ref, force=True)
                return self._error(source, sandbox.STOPPING_REASON)
            if time.monotonic() >= deadline:
                ray.cancel(ref, force=True)
                return self._error(source, f"the Ray task did not finish within {self.limit_s:.0f} s (cancelled)")
        try:
            data = ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.TaskCancelledError, ray.exceptions.ObjectLostError) as exc:
            return self._error(source, f"the Ray worker died: {type(exc).__name__}: {str(exc)[:500]}")
        except ray.exceptions.RayError as exc:  # the task itself raised: the verifier's failure on the worker
            return self._error(source, f"the evaluation failed on the Ray worker: {type(exc).__name__}: "
                                       f"{str(exc)[-800:]}")
        return Verdict.model_validate(data)

    def _error(self, source: str, reason: str) -> Verdict:
        return error_verdict(self.task, source, self.device_for_task, self.target, reason)

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(kind: str, task: Task, device: str, target: str | None, secret: int,
                  progress: ProgressFn | None = None, ray_address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(task, device, target, secret, progress)
    if kind == "ray":
        return RayExecutor(task, device, target, secret, progress, address=ray_address)
    raise ExecutorError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")
