"""Run one verifier phase in a fresh, isolated child process.

`python -I -B` (no user site, no PYTHON* variables, no bytecode), an environment built from
scratch (no API keys, no LD_PRELOAD, no TRITON_*/CUDA_* debug switches except those set here), a fresh
TRITON_CACHE_DIR, a temp cwd that holds only the kernel source, resource limits, and a
wall-clock timeout that kills the whole process group.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Variables a child may inherit: what Python, compilers and the GPU runtime need to work.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "SYSTEMROOT")


TEMP_PREFIX = "kopt-eval-"
STALE_AFTER_S = 2 * 3600


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def temp_prefix() -> str:
    """kopt-eval-<pid namespace>-<pid>-: whose directory it is, even when /tmp is shared."""
    return f"{TEMP_PREFIX}{_pid_namespace()}-{os.getpid()}-"


def sweep_stale_dirs() -> int:
    """Remove evaluation temp dirs of kopt processes that are gone (killed before they could clean up).

    A directory of this pid namespace whose process is dead goes at once; one from another
    namespace (a container sharing /tmp) only when untouched for hours."""
    removed, ours = 0, _pid_namespace()
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*-*"):
        namespace, pid = (path.name[len(TEMP_PREFIX):].split("-") + ["", ""])[:2]
        if not pid.isdigit():
            continue
        if namespace == ours:
            if int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
                continue  # alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        else:
            try:
                if time.time() - path.stat().st_mtime < STALE_AFTER_S:
                    continue
            except OSError:
                continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


# Every child process this process has running (sessions and phases), so an operator's "stop now" can
# kill them all at once; after that no new child starts until `allow_children`.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()
STOPPING_REASON = "cancelled: kopt is stopping (interrupted by the operator)"


class Stopping(Exception):
    """A child was asked to start after `kill_children`."""


def track(proc: subprocess.Popen) -> None:
    with _LIVE_LOCK:
        _LIVE.add(proc)
    if _STOPPING.is_set():
        _kill_group(proc)  # started while the stop came: killed like the others


def untrack(proc: subprocess.Popen) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def refuse_if_stopping() -> None:
    if _STOPPING.is_set():
        raise Stopping(STOPPING_REASON)


def kill_children() -> int:
    """Kill the process group of every verifier child alive now and refuse new ones (safe in a signal
    handler: no waiting). The evaluations they served come back failed; the caller must not record them."""
    _STOPPING.set()
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(procs)


def allow_children() -> None:
    _STOPPING.clear()


@dataclass
class ChildOutcome:
    result: dict[str, Any] | None
    returncode: int | None
    timed_out: bool
    wall_s: float
    stderr_tail: str
    failure: str | None = None  # why no usable result came back


def clean_env(workdir: Path, interpret: bool) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update({
        "TRITON_CACHE_DIR": str(workdir / "triton-cache"),
        "TRITON_HOME": str(workdir / "triton-home"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "TRITON_DEFAULT_FP_FUSION": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return env


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child is killed if kopt dies (even by SIGKILL), so no evaluation outlives it."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _limits(memory_bytes: int | None) -> None:
    os.setsid()  # own process group: a timeout kills everything the child started
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 30, 2 << 30))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def run_phase(job: dict[str, Any], kernel_source: str | None, *, timeout_s: float, interpret: bool,
              memory_bytes: int | None = None, kernel_name: str = "kernel.py",
              cancel: threading.Event | None = None) -> ChildOutcome:
    """Run `job` in a child. The kernel source (if any) is the only file copied in.

    `cancel` set by another thread stops the child early (a sibling phase already failed).
    """
    if _STOPPING.is_set():
        return ChildOutcome(None, None, False, 0.0, "", STOPPING_REASON)
    with tempfile.TemporaryDirectory(prefix=temp_prefix()) as tmp:
        root = Path(tmp)
        cwd = root / "cwd"
        cwd.mkdir()
        result_path = root / "result.pt"
        nonce = secrets.token_hex(16)  # a result file without it was not written by our driver
        job = dict(job, result=str(result_path), nonce=nonce)
        if kernel_source is not None:
            kernel_path = cwd / kernel_name
            kernel_path.write_text(kernel_source)
            job["kernel"] = str(kernel_path)
        start = time.monotonic()
        with open(root / "output.log", "w+") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-m", "kopt.verifier.gpu_child"], cwd=cwd, env=clean_env(root, interpret),
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=lambda: _limits(memory_bytes), text=True)
            track(proc)
            try:
                proc.stdin.write(json.dumps(job))
                proc.stdin.close()
            except BrokenPipeError:  # killed before it read its job: judged by its exit below
                pass
            stopped = _wait(proc, start + timeout_s, cancel)
            _kill_group(proc)  # anything the child left running in its group
            untrack(proc)
            wall_s = time.monotonic() - start
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 6000))
            tail = log.read()
        if stopped == "timeout":
            return ChildOutcome(None, proc.returncode, True, wall_s, tail,
                                f"timed out after {timeout_s:.0f} s (the process group was killed)")
        if stopped == "cancelled":
            return ChildOutcome(None, proc.returncode, False, wall_s, tail, "cancelled: another phase failed first")
        if proc.returncode != 0:
            return ChildOutcome(None, proc.returncode, False, wall_s, tail, describe_exit(proc.returncode))
        if not result_path.is_file():
            return ChildOutcome(None, proc.returncode, False, wall_s, tail, "the process exited without a result")
        import torch
        try:
            result = torch.load(result_path, weights_only=True)
        except Exception as exc:  # a corrupt result file is a rejection, never a pass
            return ChildOutcome(None, proc.returncode, False, wall_s, tail, f"unreadable result ({exc})")
        if not isinstance(result, dict) or result.pop("nonce", None) != nonce:
            return ChildOutcome(None, proc.returncode, False, wall_s, tail, "malformed or forged result")
        return ChildOutcome(result, proc.returncode, False, wall_s, tail)


def _wait(proc: subprocess.Popen, deadline: float, cancel: threading.Event | None) -> str | None:
    while True:
        try:
            proc.wait(timeout=0.2)
            return None
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return "timeout"
            if cancel is not None and cancel.is_set():
                return "cancelled"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGSEGV": " (segmentation fault: often an out-of-bounds load or store)",
                "SIGKILL": " (killed: out of memory?)", "SIGABRT": " (aborted)"}.get(name, "")
        return f"the process died with {name}{hint}"
    return f"the process exited with status {code}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def python_versions() -> dict[str, str]:
    import platform

    import torch
    import triton
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__}

