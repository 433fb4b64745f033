"""The local executor: evaluations in parallel up to its slots, the device timing of each under an
exclusive lease per GPU. The lease is tested with the fake timer of the timing tests (the timing
protocol's calls made under the lease), and wired into the real evaluation on the simulated device."""

from __future__ import annotations

import contextlib
import threading
import time

from kopt.harness.executor import LocalExecutor, error_verdict
from kopt.verifier.evaluate import evaluate
from kopt.verifier.task import load_task
from kopt.verifier.timing import BASELINE, CANDIDATE, COPY
from tests.verifier.test_timing import FakeTimer




def timed_evaluations(devices: list[str], n: int) -> tuple[list[tuple[str, str, int]], list[str]]:
    """n evaluations at once through a local executor whose evaluation is: checks (all n must be in them
    together, or the barrier fails), then 30 timed calls of the fake timer under the lease."""
    task = load_task("rmsnorm")
    trace: list[tuple[str, str, int]] = []  # (device, event, evaluation)
    used: list[str] = []
    checks = threading.Barrier(n, timeout=30)
    guard = threading.Lock()

    def fake_evaluate(source, task, *, device, target, secret, progress, timing_lease):
        checks.wait()  # the checks of every evaluation run at the same time
        with guard:
            used.append(device)
        timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.5, COPY: 1.0})
        with timing_lease():
            for i in range(30):
                with guard:
                    trace.append((device, "call", int(source)))
                timer.time_call((BASELINE, CANDIDATE, COPY)[i % 3], "W1", i)
                time.sleep(0.002)  # (yields: without the lease the other evaluation's calls would interleave)
        return error_verdict(task, source, device, target, "fake")

    executor = LocalExecutor(task, "cpu", None, 7, slots=n, evaluate_fn=fake_evaluate, devices=devices)
    threads = [threading.Thread(target=executor.evaluate, args=(str(i), i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return trace, used


def runs(trace: list[tuple[str, str, int]], device: str) -> list[int]:
    """The evaluations whose timing calls reached `device`, in order, one entry per unbroken run of calls."""
    order: list[int] = []
    for d, _, evaluation in trace:
        if d == device and (not order or order[-1] != evaluation):
            order.append(evaluation)
    return order


def test_two_candidates_for_one_gpu_are_timed_one_after_the_other():
    trace, used = timed_evaluations(["cuda:0"], 2)
    assert used == ["cuda:0", "cuda:0"]
    assert len(trace) == 60
    # every timing call of one evaluation, then every call of the other: never interleaved
    assert sorted(runs(trace, "cuda:0")) == [0, 1]


def test_evaluations_spread_over_gpus_each_under_its_own_lease():
    trace, used = timed_evaluations(["cuda:0", "cuda:1"], 4)
    assert sorted(used) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]  # the least-loaded GPU for each
    for device in ("cuda:0", "cuda:1"):  # two evaluations per GPU, each timed in one unbroken run
        assert len(runs(trace, device)) == 2


def test_only_an_evaluation_that_waits_for_a_slot_says_it_is_queued():
    task = load_task("rmsnorm")
    said: list[tuple[int, str]] = []
    inside, leave = threading.Event(), threading.Event()

    def fake_evaluate(source, task, *, device, target, secret, progress, timing_lease):
        inside.set()
        assert leave.wait(30)
        return error_verdict(task, source, device, target, "fake")
    executor = LocalExecutor(task, "cpu", None, 7, progress=lambda cid, p: said.append((cid, p.phase)),
                             slots=1, evaluate_fn=fake_evaluate)
    first = threading.Thread(target=executor.evaluate, args=("1", 1))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=executor.evaluate, args=("2", 2))
    second.start()
    deadline = time.monotonic() + 30
    while (2, "queued") not in said and time.monotonic() < deadline:
        time.sleep(0.01)
    leave.set()
    first.join(30)
    second.join(30)
    assert said == [(2, "queued")]  # the first had a free slot: it never said it waited


def test_the_real_evaluation_times_under_the_lease_and_checks_outside_it():
    """On the simulated device: the lease is taken once, around the timing phase only."""
    task = load_task("rmsnorm")
    phases: list[str] = []
    held: list[str] = []

    @contextlib.contextmanager
    def lease():
        held.append(phases[-1] if phases else "")
        yield
        held.append("released")

    verdict = evaluate(task.baseline_path, task, device="sim", secret=7,
                       progress=lambda p: phases.append(p.phase), timing_lease=lease)
    assert verdict.status == "ok", verdict.reason
    assert held == ["timing", "released"]  # taken once, when the timing phase began, and given back
    assert "checking" in phases and phases.index("checking") < phases.index("timing")
