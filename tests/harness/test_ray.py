"""The Ray executor on a real local Ray cluster (CPU only, num_cpus=2): the same verdicts as the local
executor for an honest, a hanging and a crashing kernel (under the interpreter), the task's files
shipped to the worker, and a worker killed mid-evaluation coming back as an `error` verdict."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kopt[ray]'")

from kopt.harness.executor import LocalExecutor, RayExecutor  # noqa: E402
from kopt.verifier.task import load_task  # noqa: E402

BASE = load_task("rmsnorm").baseline_path.read_text()
KERNELS = {
    "honest": BASE.replace("BLOCK_N = 256", "BLOCK_N = 512"),
    "hang": BASE.replace("    if rows == 0:\n", "    while True:  # HANG\n        rows = rows + 0\n    if rows == 0:\n"),
    "crash": BASE.replace("    rstd = 1.0 /", "    acc += tl.load(X + (1 << 40)) * 0.0  # CRASH: far out of bounds\n"
                                            "    rstd = 1.0 /"),
}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """rmsnorm with short limits (a hang costs 20 s, not two minutes), copied outside the checkout."""
    root = tmp_path_factory.mktemp("task") / "rmsnorm"
    shutil.copytree(load_task("rmsnorm").root, root)
    toml = root / "task.toml"
    text = toml.read_text().replace("compile_s = 120", "compile_s = 30").replace("correctness_s = 120",
                                                                                 "correctness_s = 20")
    toml.write_text(text)
    return load_task(root)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def evaluate_all(executor, kernels: dict[str, str]):
    with ThreadPoolExecutor(len(kernels)) as pool:
        futures = {name: pool.submit(executor.evaluate, source, i + 1) for i, (name, source) in enumerate(kernels.items())}
        return {name: f.result() for name, f in futures.items()}


def test_ray_returns_the_same_verdicts_as_local(task, cluster, tmp_path, monkeypatch):
    local = evaluate_all(LocalExecutor(task, "cpu", None, 11, slots=2), KERNELS)
    monkeypatch.chdir(tmp_path)  # a worker loads the task from the files shipped with the job, not a path here
    remote = evaluate_all(RayExecutor(task, "cpu", None, 11), KERNELS)
    for name in KERNELS:
        mine, theirs = local[name], remote[name]
        # (the phase's kind: which dtype's correctness child reports a hang first is a race, on either executor)
        kind = (lambda v: (v.phase or "").split(" ")[0])
        assert (theirs.status, kind(theirs)) == (mine.status, kind(mine)), (name, mine.reason, theirs.reason)
        assert theirs.task_hash == task.hash and theirs.kernel_sha256 == mine.kernel_sha256
        assert "ray worker pid" in theirs.versions["executor"]
    assert remote["honest"].status == "ok"
    key = (lambda v: sorted((c.case, c.dtype, c.hidden, c.passed) for c in v.cases))
    assert key(remote["honest"]) == key(local["honest"])  # the same cases, hidden ones included
    assert remote["hang"].status == "rejected" and "timed out after 20 s" in remote["hang"].reason
    assert remote["crash"].status == "rejected"


def ray_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::kopt-evaluate"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_on_a_worker(executor, source: str) -> tuple[threading.Thread, dict]:
    """One evaluation in a thread, returned once a Ray worker is running it (its verdict lands in result["v"])."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("v", executor.evaluate(source, 1)))
    thread.start()
    deadline = time.monotonic() + 120
    while not ray_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_workers(), "no Ray worker ran the evaluation"
    return thread, result


def test_a_worker_that_dies_is_an_error_verdict_never_a_lost_evaluation(task, cluster):
    thread, result = start_on_a_worker(RayExecutor(task, "cpu", None, 11), KERNELS["honest"])
    workers = ray_workers()
    time.sleep(1.0)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    thread.join(300)
    verdict = result["v"]
    assert verdict.status == "error" and verdict.phase == "executor", verdict.reason
    assert "worker died" in verdict.reason


def test_a_stop_now_cancels_the_remote_evaluation(task, cluster):
    # the operator's second Ctrl-C (sandbox.kill_children) reaches evaluations on Ray too: the task is
    # cancelled and the verdict is an error (which the run never records: its call is redone on resume)
    from kopt.verifier import sandbox
    thread, result = start_on_a_worker(RayExecutor(task, "cpu", None, 11), KERNELS["hang"])
    stopped = time.monotonic()
    sandbox.kill_children()
    try:
        thread.join(30)
        assert not thread.is_alive(), "the evaluation went on after the stop"
    finally:
        sandbox.allow_children()
    verdict = result["v"]
    assert verdict.status == "error" and verdict.reason == sandbox.STOPPING_REASON, verdict.reason
    assert time.monotonic() - stopped < 10
