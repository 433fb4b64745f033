"""The child process layer on its own (no gate in front): isolation, timeouts, crashes.

The probes below are deliberately hostile Python that the static gate would refuse; here they
run straight through sandbox.run_phase to show the process layer holds even without the gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

from kopt.verifier import sandbox
from kopt.verifier.evaluate import base_job

PROBE = '''
import json, os, sys
def extend_attention_fwd(*args, **kwargs):
    raise RuntimeError("PROBE" + json.dumps({"env": dict(os.environ), "isolated": sys.flags.isolated,
                       "cwd_files": sorted(os.listdir(".")), "path": sys.path}))
'''


def probe_job(extend_task, items=None):
    item = {"key": "C8/float32/0", "case": "C8", "params": extend_task.config.cases[7].params,
            "dtype": "float32", "seed": 1, "repeat": False}
    return dict(base_job(extend_task, "cpu"), phase="run", items=items or [item])


def test_child_environment_is_clean_and_isolated(extend_task, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-leak")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("TRITON_ALWAYS_COMPILE", "1")
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    (tmp_path / "torch.py").write_text("raise SystemExit('shadowed torch imported')\n")
    outcome = sandbox.run_phase(probe_job(extend_task), PROBE, timeout_s=120, interpret=True)
    assert outcome.failure is None, outcome.stderr_tail
    report = json.loads(outcome.result["error"].split("PROBE", 1)[1])
    env = report["env"]
    assert not any("KEY" in k or "SECRET" in k for k in env)
    assert "sk-secret" not in json.dumps(env)
    for name in ("LD_PRELOAD", "PYTHONPATH", "TRITON_ALWAYS_COMPILE", "CUDA_LAUNCH_BLOCKING"):
        assert name not in env
    assert env["TRITON_INTERPRET"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "kopt-eval-" in env["TRITON_CACHE_DIR"]  # a fresh cache per evaluation
    assert report["isolated"] == 1
    assert report["cwd_files"] == ["kernel.py"]  # only the source was copied in
    assert str(tmp_path) not in report["path"]


def test_timeout_kills_the_whole_process_group(extend_task):
    marker = f"kopt-test-{uuid.uuid4().hex}"
    hang = f'''
import subprocess, time
def extend_attention_fwd(*args, **kwargs):
    subprocess.Popen(["sleep", "300", "{marker}"])
    while True:
        time.sleep(0.1)
'''
    start = time.monotonic()
    outcome = sandbox.run_phase(probe_job(extend_task), hang, timeout_s=15, interpret=True)
    assert time.monotonic() - start < 60
    assert outcome.timed_out and "timed out after 15 s" in outcome.failure
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.strip()
    assert alive == "", f"grandchild survived the timeout: {alive}"


def test_a_segfault_is_reported_not_propagated(extend_task):
    crash = "import ctypes\ndef extend_attention_fwd(*a, **k):\n    ctypes.string_at(0)\n"
    outcome = sandbox.run_phase(probe_job(extend_task), crash, timeout_s=120, interpret=True)
    assert outcome.result is None and "SIGSEGV" in outcome.failure


def test_a_forged_result_file_cannot_execute_code(extend_task):
    """The result is read with weights_only=True: a pickle payload is refused, not run."""
    forge = '''
import os, pickle, sys, json
class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kopt-pwned",))
def extend_attention_fwd(*a, **k):
    job_result = [p for p in os.listdir("..") if p == "result.pt"]
    with open("../result.pt", "wb") as f:
        pickle.dump({"results": Boom()}, f)
    os._exit(0)
'''
    if os.path.exists("/tmp/kopt-pwned"):
        os.remove("/tmp/kopt-pwned")
    outcome = sandbox.run_phase(probe_job(extend_task), forge, timeout_s=120, interpret=True)
    assert outcome.result is None and "unreadable result" in outcome.failure
    assert not os.path.exists("/tmp/kopt-pwned")


def test_exit_status_descriptions():
    assert "SIGSEGV" in sandbox.describe_exit(-11)
    assert "SIGKILL" in sandbox.describe_exit(-9) and "memory" in sandbox.describe_exit(-9)
    assert sandbox.describe_exit(3) == "the process exited with status 3"
