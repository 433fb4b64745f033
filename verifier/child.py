"""The candidate's process: the only place candidate code ever runs, and it holds nothing trusted.

Started by verifier/session.py as `python -I -B -m kopt.verifier.child` with a clean
environment, a fresh Triton cache and a temp cwd holding nothing but the kernel source. It
never imports a task's reference module and never sees a seed: trusted code sends each call
over a socket as a layout plus file descriptors (verifier/arena.py), this process maps them
(inputs read-only, outputs between guard pages), makes the call and says it is done. What
decides the verdict (outputs, slack around them, untouched inputs, timing) is read by trusted
code outside this process; the reports sent back from here (exceptions, launched kernels,
autotune configs) only make messages friendlier.

Modes (job["mode"]): "interpret" (Triton interpreter, CPU; also the simulated device),
"compile" (ahead-of-time compile for a target GPU: every launch becomes a compile-only warmup;
meta tensors allowed), "cuda" (native on a GPU: buffers are CUDA IPC handles, verifier/cuda.py).
A timed call flushes the caches first and reports the call's device time (CUDA events on a
GPU, the host clock otherwise); trusted code cross-checks it against its own clock.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
import traceback
from typing import Any, Callable

import torch

from kopt.verifier import arena
from kopt.verifier.arena import split_call
from kopt.verifier.launches import specialization_key


class Launches:
    """Records Triton launches (kernel, file, constexprs); in-process, so only for messages."""

    def __init__(self, force_warmup: bool = False):
        import triton.runtime.jit as jit
        self.files: list[str] = []
        self.keys: list[str] = []
        self.inside = 0  # > 0 while Triton itself runs (the interpreter reads tensors on the host)
        classes = [jit.JITFunction]
        try:
            import triton.runtime.interpreter as interp
            classes.append(interp.InterpretedFunction)
        except ImportError:  # pragma: no cover - older triton
            pass
        for cls in classes:
            original = cls.run

            def run(fn, *args, grid, warmup, _original=original, **kwargs):
                self.files.append(fn.fn.__code__.co_filename)
                try:
                    self.keys.append(specialization_key(fn, args, kwargs))
                except Exception:  # (a launch Triton itself will refuse: its own error says why)
                    self.keys.append(f"{fn.fn.__name__}[?]")
                self.inside += 1
                try:
                    return _original(fn, *args, grid=grid, warmup=warmup or force_warmup, **kwargs)
                finally:
                    self.inside -= 1

            cls.run = run


def sync_trap(launches: Launches):
    """Refuses host reads of tensor values in the entry point's own code (a friendly, early message;
    the static gate is what rules them out)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    banned = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}

    class Trap(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in banned and not launches.inside:
                raise RuntimeError("the entry point read a tensor value on the host (.item(), bool(t), int(t), "
                                   "float(t) or `if t:`): a host synchronisation, not allowed in the call")
            return func(*args, **(kwargs or {}))

    return Trap()


def load_module(path: str, name: str) -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- messages: a 4-byte length, JSON, and file descriptors alongside
def send(sock: socket.socket, message: dict[str, Any], fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    socket.send_fds(sock, [payload], list(fds)) if fds else sock.sendall(payload)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
    if not data:
        return None, fds
    while len(data) < 4:
        more = sock.recv(1 << 16)
        if not more:
            return None, fds
        data += more
    (size,) = struct.unpack("!I", data[:4])
    while len(data) < 4 + size:
        more = sock.recv(max(1 << 16, 4 + size - len(data)))
        if not more:
            return None, fds
        data += more
    return json.loads(data[4:4 + size]), fds


def describe(exc: BaseException, kernel: str) -> dict[str, Any]:
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if f.filename == kernel] or tb[-3:]
    where = "".join(f"  line {f.lineno} in {f.name}: {f.line}\n" for f in frames[-4:])
    return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc)[:4000], "where": where}


FLUSH_BYTES = 32 << 20  # larger than a CPU's last-level cache (the simulated device's "L2 flush")


class Calls:
    """Maps each call's buffers and makes the call. Regions persist per buffer group so that a
    later call can get new content at the same addresses."""

    def __init__(self, job: dict, fn: Callable, launches: Launches):
        self.job, self.fn, self.launches = job, fn, launches
        self.regions: dict[str, arena.Region] = {}
        self.usage: dict[int, tuple] = {}  # compiled kernels' resources, shared by the workloads' dry runs
        self.flush: torch.Tensor | None = None
        self.compiler: Any = None  # compile mode: told which call its kernels are compiled for

    def region(self, key: str, size: int) -> arena.Region:
        region = self.regions.get(key)
        if region is None or region.size != size:
            if region is not None:
                region.close()
            region = self.regions[key] = arena.Region(size)
        return region

    def call(self, msg: dict, fds: list[int]) -> dict[str, Any]:
        import os
        layout = msg["layout"]
        args: dict[str, Any] = dict(layout["scalars"])
        fd_iter = iter(fds)
        if "handle" in layout:  # device memory owned by trusted code
            from kopt.verifier import cuda
            args.update(cuda.open_inputs(layout, self.regions, msg["group"]))
        elif layout["meta"]:
            for spec in layout["specs"]:
                args[spec["name"]] = arena.meta_tensor(arena.Spec.of(spec))
        else:
            inputs = self.region(f"{msg['group']}/in", layout["size"])
            fd = next(fd_iter)
            inputs.map(fd, writable=False)
            os.close(fd)
            for spec in layout["specs"]:
                args[spec["name"]] = inputs.tensor(arena.Spec.of(spec))
        for out in msg["outputs"]:
            spec = arena.Spec.of(out["spec"])
            if layout["meta"]:
                args[spec.name] = arena.meta_tensor(spec)
                continue
            if "handle" in out:
                from kopt.verifier import cuda
                args[spec.name] = cuda.open_output(spec, out["handle"], self.regions, msg["group"])
                continue
            region = self.region(f"{msg['group']}/out/{spec.name}", out["size"])
            fd = next(fd_iter)
            region.map(fd, writable=True)
            os.close(fd)
            args[spec.name] = region.tensor(spec)
        ordered = {name: args[name] for name in layout["order"] if name in args}
        ordered.update(msg.get("override", {}))  # options a case does not pass (k_scale=...): by keyword
        positional, keywords = split_call(ordered, self.job["positional_args"])
        self.configure(msg)
        if self.compiler is not None:
            self.compiler.case, self.compiler.keys = msg["group"], self.launches.keys
        first = len(self.launches.files)
        start = time.perf_counter()
        report: dict[str, Any] = {"op": "done", "exception": None, "returned": None}
        try:
            if layout["meta"]:  # a GPU workload's shapes: every launch compiled for the target, nothing run
                from kopt.verifier import interp
                from kopt.verifier.launches import dry_run
                interp.take_picked()
                report["rows"], report["workload_keys"], report["error"] = dry_run(
                    self.fn, positional, keywords, self.job["target"], self.job["kernel"], self.usage)
                report["configs_picked"] = interp.take_picked()  # the pruner's picks for this workload
                returned = None
            elif msg.get("timed"):
                returned, report["event_ms"] = self.timed(positional, keywords)
            else:
                with sync_trap(self.launches):
                    returned = self.fn(*positional, **keywords)
            report["returned"] = None if returned is None else type(returned).__name__
        except Exception as exc:  # reported to trusted code, which decides what it means
            report["exception"] = describe(exc, self.job["kernel"])
            if self.job["mode"] == "interpret":
                from kopt.verifier import interp
                limit = interp.as_limitation(exc)
                if limit is not None:
                    report["exception"] = dict(describe(limit, self.job["kernel"]), type="InterpreterLimitation")
        report["wall_s"] = time.perf_counter() - start
        report["launched"] = self.launches.files[first:]
        report["keys"] = self.launches.keys[first:]
        report["autotune"] = self.autotune_counts()
        if self.job["mode"] == "interpret":
            from kopt.verifier import interp
            report["configs_ran"] = interp.configs_ran()
            report["sampled"] = interp.take_sampled()
        return report

    def timed(self, positional: list, keywords: dict) -> tuple[Any, float]:
        """Caches flushed, then the call timed as the device sees it (only this file's code does this)."""
        if self.job["mode"] == "cuda":
            from kopt.verifier import cuda
            return cuda.timed_call(self.fn, positional, keywords, lambda: sync_trap(self.launches))
        if self.flush is None:
            self.flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8)
        self.flush.zero_()
        start = time.perf_counter()
        with sync_trap(self.launches):
            returned = self.fn(*positional, **keywords)
        return returned, (time.perf_counter() - start) * 1e3

    def configure(self, msg: dict) -> None:
        if self.job["mode"] != "interpret":
            return
        from kopt.verifier import interp
        interp.install(order=msg.get("program_order", "forward"), seed=msg.get("order_seed", 0),
                       sample=msg.get("sample"))
        interp.set_autotune_choice(msg.get("autotune_choice"))
        interp.force_configs(msg.get("autotune_forced"))

    def autotune_counts(self) -> dict[str, int]:
        if self.job["mode"] != "interpret":
            return {}
        from kopt.verifier import interp
        return interp.autotune_config_counts()


def main() -> int:
    job = json.loads(sys.stdin.read())
    sock = socket.socket(fileno=job["socket_fd"])
    try:
        if job["mode"] == "compile":
            from kopt.verifier import compile as aot
            from kopt.verifier import interp
            compiler = aot.Compiler(job["target"])
            interp.install_aot_autotune()  # every config of a multi-config autotune gets compiled
            launches = Launches(force_warmup=True)
        elif job["mode"] == "cuda":
            from kopt.verifier import cuda
            cuda.child_setup(job)
            launches = Launches()
        else:
            from kopt.verifier import interp
            interp.install()
            launches = Launches()
        module = load_module(job["kernel"], job["module"])
        fn = getattr(module, job["entry_point"], None)
        if not callable(fn):
            send(sock, {"op": "error", "error": f"the kernel file defines no callable {job['entry_point']}"})
            return 0
    except BaseException as exc:  # the candidate's module failed to load: reported, never propagated
        send(sock, {"op": "error", "error": f"{type(exc).__name__}: {str(exc)[:4000]}",
                    "where": describe(exc, job["kernel"])["where"]})
        return 0
    calls = Calls(job, fn, launches)
    if job["mode"] == "compile":
        calls.compiler = compiler
    send(sock, {"op": "ready"})
    while True:
        msg, fds = receive(sock)
        if msg is None or msg["op"] == "exit":
            break
        if msg["op"] == "call":
            try:
                reply = calls.call(msg, fds)
            except Exception as exc:  # this file's own failure (the candidate's are caught in call)
                reply = {"op": "verifier_error", "error": f"{type(exc).__name__}: {exc}",
                         "where": traceback.format_exc()[-2000:]}
            send(sock, reply)
        elif msg["op"] == "report" and job["mode"] == "compile":
            send(sock, {"op": "report", **compiler.report()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
