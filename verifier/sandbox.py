"""Run one verifier phase in a fresh, isolated child process.

`python -I -B` (no user site, no PYTHON* variables, no bytecode), an environment built from
scratch (no API keys, no LD_PRELOAD, no TRITON_*/CUDA_* debug switches except those set here), a fresh
TRITON_CACHE_DIR, a temp cwd that holds only the kernel source, resource limits, and a
wall-clock timeout that kills the whole process group.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import shutil
import tempfile
import threading
import time
from pathlib import Path

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


def stopping() -> bool:
    """Whether the operator asked to stop now (`kill_children` was called and not yet undone)."""
    return _STOPPING.is_set()


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


def clean_env(workdir: Path, interpret: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update({
        "TRITON_CACHE_DIR": str(workdir / "triton-cache"),
        "TRITON_HOME": str(workdir / "triton-home"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "TRITON_DEFAULT_FP_FUSION": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    # what a device needs on top (the CUDA driver's library path), and a trusted process's shared cache
    env.update(extra or {})
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


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGSEGV": " (segmentation fault: often an out-of-bounds load or store, or an offset computed in "
                             "int32 that wrapped: an input may hold more than 2^31 elements)",
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

