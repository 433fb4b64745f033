"""The timing coordinator's decisions, with stand-in sessions (the real ones run in test_sim.py):
which arm a fault is charged to, what a timed call must bring back, the timed-output check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from kopt.verifier import timing
from kopt.verifier.accel import timing_record
from kopt.verifier.coordinator import ArmTimer, Coordinator, TimingFault, WorkloadResult, content_factor
from kopt.verifier.devices import SimDevice, accelerator, resolve
from kopt.verifier.devices import Staged as RealStaged
from kopt.verifier.session import ChildFailure
from kopt.verifier.task import load_task


@dataclass
class Reply:
    outputs: dict
    problems: list = field(default_factory=list)
    exception: dict | None = None
    wall_s: float = 0.002
    reply: dict = field(default_factory=lambda: {"event_ms": 1.0})


class StandIn:
    """A session that answers every call with `reply` (or raises it)."""

    def __init__(self, reply):
        self.reply, self.calls = reply, 0

    def call(self, *args, **kwargs):
        self.calls += 1
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


class Staged(list):
    def inputs(self, index, factor=1.0):
        return self[index % len(self)]


def timer(replies: dict) -> ArmTimer:
    sessions = {arm: StandIn(r) for arm, r in replies.items()}
    staged = {arm: Staged([object(), object()]) for arm in replies}
    return ArmTimer(sessions, staged, ["out"], 5, "S1")


def test_a_timed_call_brings_back_device_and_host_time() -> None:
    t = timer({timing.CANDIDATE: Reply({"out": torch.ones(2)}, wall_s=0.003, reply={"event_ms": 2.5})})
    sample = t.time_call(timing.CANDIDATE, "S1", 1)
    assert sample == timing.Sample(2.5, 3.0) and 1 in t.last


@pytest.mark.parametrize("reply, expected", [
    (ChildFailure("timed out after 9 s while timing"), "timed out"),
    (Reply({}, exception={"type": "ValueError", "message": "boom", "where": ""}), "raised under timing"),
    (Reply({}, problems=["wrote outside out"]), "wrote outside out"),
    (Reply({}, reply={}), "no time came back"),
    (Reply({}, reply={"event_ms": math.nan}), "no time came back"),
])
def test_faults_under_timing_are_charged_to_the_arm_that_made_them(reply, expected) -> None:
    for arm in (timing.BASELINE, timing.CANDIDATE):
        with pytest.raises(TimingFault, match=expected) as caught:
            timer({arm: reply}).time_call(arm, "S1", 0)
        assert caught.value.arm == arm


def test_timed_outputs_are_judged_against_the_reference_of_their_content() -> None:
    task = load_task("rmsnorm")
    reference = task.load_reference()
    variants = [reference.make_inputs(task.config.sim_workloads[0].params, torch.bfloat16, s, "cpu") for s in (1, 2)]
    right = [reference.reference(v)["out"].to(torch.bfloat16) for v in variants]
    coord = Coordinator(task, "", SimDevice(), 1, None)
    t = timer({timing.CANDIDATE: Reply({})})
    t.last = {0: {"out": right[0]}, 1: {"out": right[1]}}
    assert coord.timed_outputs(t, variants, reference, "bfloat16") is None
    t.last[1] = {"out": right[0]}  # the answer for the other input set: cached, not computed
    assert "under timing conditions (input set 2)" in coord.timed_outputs(t, variants, reference, "bfloat16")
    t.last = {0: {"out": right[0]}}
    assert "only 1 of 2 input sets were timed" in coord.timed_outputs(t, variants, reference, "bfloat16")


class Recorder:
    """A session that keeps what each call was given and answers with the reference of it (an honest arm)."""

    def __init__(self, reference):
        self.reference, self.given = reference, []

    def call(self, label, key, inputs, outputs, **kwargs):
        content = {n: t.clone() if isinstance(t, torch.Tensor) else t for n, t in inputs.tensors.items()}
        self.given.append(content)
        out = self.reference.reference(content)["out"].to(content["x"].dtype)
        return Reply({"out": out})


def test_no_two_timed_calls_see_the_same_content_and_the_check_uses_what_each_was_given() -> None:
    """The independent panel kept a result across timed calls in memory the GPU's caching allocator hands
    back (torch.empty of the same size), and copied it out when the content repeated: with three input
    sets rotating, every third call. Now each call's content is an input set scaled by its own factor."""
    task = load_task("rmsnorm")
    reference = task.load_reference()
    variants = [reference.make_inputs(task.config.sim_workloads[0].params, torch.bfloat16, 7, "cpu", variant=k)
                for k in range(2)]
    staged = RealStaged(variants, ["out"])
    arm = Recorder(reference)
    t = ArmTimer({timing.CANDIDATE: arm}, {timing.CANDIDATE: staged}, ["out"], 5, "S1")
    try:
        for call in range(8):
            t.time_call(timing.CANDIDATE, "S1", call)
    finally:
        staged.close()
    xs = [g["x"] for g in arm.given]
    assert all(not torch.equal(a, b) for i, a in enumerate(xs) for b in xs[i + 1:])  # never the same twice
    for k, g in enumerate(arm.given):  # the same layout and the set's content, scaled in its dtype
        base = variants[k % 2]["x"]
        assert g["x"].stride() == base.stride() and not torch.equal(g["weight"], variants[k % 2]["weight"])
        ratio = (g["x"].double() / base.double())[base.abs() > 1].mean()
        assert 0.87 < ratio < 1.13 and ratio != 1
    assert all(0.875 <= content_factor(5, a, c) < 1.125 and content_factor(5, a, c) != 1
               for a in ("baseline", "candidate") for c in range(200))
    coord = Coordinator(task, "", SimDevice(), 1, None)
    assert coord.timed_outputs(t, variants, reference, "bfloat16") is None  # judged on what it was given
    cached = reference.reference(variants[1])["out"].to(torch.bfloat16)  # the answer of the set, unscaled
    t.last[1] = {"out": cached}
    assert "under timing conditions (input set 2)" in coord.timed_outputs(t, variants, reference, "bfloat16")


def test_simulated_timing_is_never_a_gpu_speedup() -> None:
    stats = timing.WorkloadStats("S1", 2.0, 1.0, 2.0, 0.1, [2.0], floor_ms=0.5)
    record = timing_record(SimDevice(), [WorkloadResult("S1", stats, 0.5, 20)], "bfloat16")
    assert record.kind == "simulated" and record.geomean_speedup is None and record.simulated_ratio == 2.0
    assert record.workloads[0].sol_fraction == 0.5 and record.label.startswith("simulated")
    assert "says nothing about GPU speed" in record.notes[0]


def test_devices_resolve_and_the_sim_device_needs_workloads(tmp_path) -> None:
    assert resolve("sim") == "sim" and resolve("cpu") == "cpu"
    assert resolve("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(accelerator("sim"), SimDevice)
    sim = SimDevice()
    assert sim.idle_problem() is None and sim.warm_up() is None and sim.info()["device_kind"] == "simulated"
    assert [w.id for w in sim.workloads(load_task("rmsnorm"))] == ["S1", "S2"]
