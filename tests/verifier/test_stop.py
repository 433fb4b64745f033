"""An operator's "stop now" (kopt's second Ctrl-C): every live verifier child is killed at once, a call
it was serving fails, and no new child starts until kopt allows them again."""

from __future__ import annotations

import threading

import pytest
import torch

from kopt.verifier import sandbox
from kopt.verifier.cpu import job_for
from kopt.verifier.session import ChildFailure, Session, pack
from kopt.verifier.task import load_task

SLOW = ("import time, torch\n"
        "def rmsnorm_fwd(x, weight, out, eps=1e-6):\n"
        "    time.sleep(600)\n")


def test_kill_children_ends_a_call_in_flight_and_refuses_new_children():
    task = load_task("rmsnorm")
    inputs = pack(task.load_reference().make_inputs(task.config.cases[0].params, torch.float32, 1, "cpu"),
                  task.config.outputs)
    calling, outcome = threading.Event(), {}

    def serve():
        try:
            with Session(SLOW, job_for(task, "interpret"), interpret=True, timeout_s=900) as session:
                calling.set()
                session.call("calling R1", "R1", inputs, task.config.outputs, poison=float("nan"), end_aligned=False)
        except ChildFailure as exc:
            outcome["failure"] = exc.reason

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert calling.wait(300), "the child never started"
        assert sandbox.kill_children() >= 1
        thread.join(120)
        assert not thread.is_alive(), "the call did not come back after its process was killed"
        assert "SIGKILL" in outcome["failure"] and "calling R1" in outcome["failure"]
        with pytest.raises(ChildFailure, match="kopt is stopping"):
            Session(SLOW, job_for(task, "interpret"), interpret=True, timeout_s=60)
    finally:
        sandbox.allow_children()
        thread.join(120)
        inputs.close()
    sandbox.refuse_if_stopping()  # allowed again
