"""The candidate's process on its own (no gate in front): isolation, nothing trusted inside it,
read-only inputs, guarded outputs, timeouts, crashes.

The probes below are deliberately hostile Python that the static gate would refuse; here they
run straight through a verifier Session to show that the process layer holds even when the
gate has been escaped: whatever the probe does in its own process, the trusted side sees it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import pytest
import torch

from kopt.verifier import sandbox
from kopt.verifier.cpu import job_for
from kopt.verifier.session import ChildFailure, Session, pack

HEADER = "import json, os, sys, gc, ctypes, torch, triton, triton.language as tl\n"


def c8_inputs(task, seed: int = 1):
    ref = task.load_reference()
    return pack(ref.make_inputs(task.config.cases[7].params, torch.float32, seed, "cpu"), task.config.outputs)


def one_call(task, source: str, timeout_s: float = 120, end_aligned: bool = False, inputs=None):
    inputs = inputs or c8_inputs(task)
    with Session(HEADER + source, job_for(task, "interpret"), interpret=True, timeout_s=timeout_s) as session:
        return session.call("calling C8", "C8", inputs, task.config.outputs, poison=float("nan"),
                            end_aligned=end_aligned)


def probe_report(result) -> dict:
    assert result.exception is not None, "the probe should have raised its report"
    return json.loads(result.exception["message"].split("PROBE", 1)[1])


def test_child_environment_is_clean_and_isolated(extend_task, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-leak")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("TRITON_ALWAYS_COMPILE", "1")
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    (tmp_path / "torch.py").write_text("raise SystemExit('shadowed torch imported')\n")
    probe = '''
def extend_attention_fwd(*args, **kwargs):
    raise RuntimeError("PROBE" + json.dumps({"env": dict(os.environ), "isolated": sys.flags.isolated,
                       "cwd_files": sorted(os.listdir(".")), "path": sys.path}))
'''
    report = probe_report(one_call(extend_task, probe))
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


def test_nothing_trusted_is_reachable_from_the_candidate(extend_task):
    """Frame walking, gc and sys.modules find no reference implementation, seed or expected output."""
    probe = '''
def extend_attention_fwd(*args, **kwargs):
    frames, f = [], sys._getframe()
    while f is not None:
        frames.append((f.f_code.co_filename, sorted(f.f_locals)))
        f = f.f_back
    funcs = sorted({o.__module__ or "" for o in gc.get_objects() if callable(o) and getattr(o, "__name__", "") == "reference"})
    mods = sorted(m for m in sys.modules if ("reference" in m or "baseline" in m or "kernels" in m)
                  and not m.startswith(("torch.", "numpy.")))
    raise RuntimeError("PROBE" + json.dumps({"modules": mods, "frames": frames, "funcs": funcs,
                                              "argv": sys.argv, "stdin": sys.stdin.closed if sys.stdin else None}))
'''
    report = probe_report(one_call(extend_task, probe))
    assert not [m for m in report["modules"] if "reference" in m or "baseline" in m]
    assert report["funcs"] == []
    trusted_files = {f for f, _ in report["frames"]} - {"<frozen runpy>"}
    assert all(f.endswith(("kernel.py", "verifier/child.py")) for f in trusted_files), trusted_files
    assert not any("seed" in names or "secret" in names for _, names in report["frames"])


WRITE_INPUT = '''
def extend_attention_fwd(q_extend, k_extend, v_extend, o_extend, k_buffer, *args, **kwargs):
    saved = k_buffer.clone()
    k_buffer.view(-1)[-1] = 0.0   # scratch in an (unreferenced) pool slot ...
    k_buffer.copy_(saved)         # ... restored before returning
'''


def test_a_write_into_an_input_faults_even_when_undone(extend_task):
    with pytest.raises(ChildFailure, match="SIGSEGV.*while calling C8.*read-only"):
        one_call(extend_task, WRITE_INPUT)


@pytest.mark.parametrize("end_aligned, offset", [(True, "o_extend.numel() * 4 + 16"), (False, "-4")])
def test_a_write_just_outside_the_output_faults_even_when_undone(extend_task, end_aligned, offset):
    """Past the end when the output is flush with its last page, before the start when flush with its first."""
    probe = f'''
def extend_attention_fwd(q_extend, k_extend, v_extend, o_extend, *args, **kwargs):
    cell = ctypes.c_float.from_address(o_extend.data_ptr() + {offset})
    old = cell.value
    cell.value = 1.0
    cell.value = old
'''
    with pytest.raises(ChildFailure, match="SIGSEGV"):
        one_call(extend_task, probe, end_aligned=end_aligned)


def test_slack_next_to_the_output_is_checked_by_value(extend_task):
    """The bytes between a start-aligned output and its page end do not fault: they are compared."""
    probe = '''
def extend_attention_fwd(q_extend, k_extend, v_extend, o_extend, *args, **kwargs):
    ctypes.c_float.from_address(o_extend.data_ptr() + o_extend.numel() * 4 + 4).value = 3.0
'''
    result = one_call(extend_task, probe, end_aligned=False)
    assert "wrote outside o_extend" in "; ".join(result.problems)


def test_same_buffers_get_new_content_at_the_same_addresses(extend_task):
    """A pointer-keyed cache sees the same data_ptr with new content on the repeat call."""
    probe = '''
def extend_attention_fwd(q_extend, k_extend, v_extend, o_extend, *args, **kwargs):
    o_extend.view(-1)[0] = float(q_extend.data_ptr() % 1000003)
    o_extend.view(-1)[1] = ctypes.c_float.from_address(q_extend.data_ptr()).value  # (host reads are trapped)
'''
    ref = extend_task.load_reference()
    params = extend_task.config.cases[7].params
    first = c8_inputs(extend_task)
    second = pack(ref.make_inputs(params, torch.float32, 1, "cpu", variant=1), extend_task.config.outputs,
                  first.layout)
    with Session(HEADER + probe, job_for(extend_task, "interpret"), interpret=True, timeout_s=120) as s:
        a = s.call("a", "C8", first, ["o_extend"], poison=0.0, end_aligned=False).outputs["o_extend"].view(-1)
        b = s.call("b", "C8", second, ["o_extend"], poison=0.0, end_aligned=False).outputs["o_extend"].view(-1)
    assert a[0] == b[0] != 0  # same address
    assert a[1] != b[1] and b[1] == second.tensors["q_extend"][0, 0, 0]  # new content there


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
    with pytest.raises(ChildFailure, match="timed out after 15 s while calling C8"):
        one_call(extend_task, hang, timeout_s=15)
    assert time.monotonic() - start < 60
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.strip()
    assert alive == "", f"grandchild survived the timeout: {alive}"


def test_cancel_stops_a_session(extend_task):
    hang = "import time\ndef extend_attention_fwd(*a, **k):\n    time.sleep(300)\n"
    cancel = threading.Event()
    threading.Timer(3, cancel.set).start()
    inputs = c8_inputs(extend_task)
    start = time.monotonic()
    with pytest.raises(ChildFailure, match="cancelled"):
        with Session(HEADER + hang, job_for(extend_task, "interpret"), interpret=True, timeout_s=120,
                     cancel=cancel) as s:
            s.call("calling C8", "C8", inputs, ["o_extend"], poison=0.0, end_aligned=False)
    assert time.monotonic() - start < 30


def test_a_segfault_is_reported_not_propagated(extend_task):
    crash = "def extend_attention_fwd(*a, **k):\n    ctypes.string_at(0)\n"
    with pytest.raises(ChildFailure, match="SIGSEGV"):
        one_call(extend_task, crash)


def test_forged_protocol_messages_do_not_make_a_result(extend_task):
    """The probe answers 'done' itself over the socket: the outputs are still the poison trusted code put there."""
    forge = '''
import socket, struct
def extend_attention_fwd(*a, **k):
    for fd in range(3, 64):
        try:
            s = socket.socket(fileno=os.dup(fd))
            if s.family == socket.AF_UNIX:
                data = json.dumps({"op": "done", "exception": None, "returned": None, "launched": [__file__],
                                   "keys": [], "autotune": {}}).encode()
                s.sendall(struct.pack("!I", len(data)) + data)
        except OSError:
            pass
    os._exit(0)
'''
    try:
        result = one_call(extend_task, forge)
    except ChildFailure as exc:  # the child exited before the parent read the forged message
        assert "exited" in exc.reason
        return
    assert torch.isnan(result.outputs["o_extend"]).all()


def test_exit_status_descriptions():
    assert "SIGSEGV" in sandbox.describe_exit(-11)
    assert "SIGKILL" in sandbox.describe_exit(-9) and "memory" in sandbox.describe_exit(-9)
    assert sandbox.describe_exit(3) == "the process exited with status 3"
