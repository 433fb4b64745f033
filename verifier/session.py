"""Trusted side of a candidate's process: start it, hand it each call, judge what comes out.

The child (verifier/child.py) gets the kernel source and a socket, nothing else. For every
call this side packs the inputs into a sealed memfd, poisons the outputs in their own
memfds, sends the layout, measures the host wall time until the child says it is done, then
reads the outputs and the slack around them itself. A child that dies, hangs or breaks the
protocol ends the session with a reason naming the call it was making.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kopt.verifier import arena, sandbox
from kopt.verifier.child import receive, send


class ChildFailure(Exception):
    """The candidate's process ended a session without a clean answer (a rejection)."""

    def __init__(self, reason: str, log: str = ""):
        super().__init__(reason)
        self.reason, self.log = reason, log


class VerifierFailure(Exception):
    """The verifier's own code failed in the child: an `error` verdict, never charged to the candidate."""

    def __init__(self, reason: str, log: str = ""):
        super().__init__(reason)
        self.reason, self.log = reason, log


@dataclass
class Inputs:
    """One input set in trusted memory and its sealed copy for the candidate."""

    tensors: dict[str, Any]
    layout: arena.Layout
    fd: int | None
    handle: Any = None  # a device buffer's IPC handle (CUDA), instead of a memfd

    def problems(self) -> list[str]:
        """What the last call did to these inputs (a sealed memfd cannot change; device memory is compared)."""
        return []

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pack(tensors: dict[str, Any], outputs: list[str], like: arena.Layout | None = None) -> Inputs:
    layout, fd = arena.pack_inputs(tensors, outputs, like)
    return Inputs(tensors, layout, fd)


@dataclass
class CallResult:
    outputs: dict[str, torch.Tensor]
    problems: list[str]
    exception: dict[str, Any] | None
    wall_s: float  # host wall time measured here, around the whole call
    keys: list[str] = field(default_factory=list)
    autotune: dict[str, int] = field(default_factory=dict)
    reply: dict[str, Any] = field(default_factory=dict)  # the child's whole answer (dry-run rows, ...)


class Session:
    """One candidate process, driven call by call (a context manager: the process never outlives it)."""

    def __init__(self, source: str, job: dict[str, Any], *, interpret: bool, timeout_s: float,
                 memory_bytes: int | None = None, cancel: threading.Event | None = None,
                 kernel_name: str = "kernel.py", device: Any = None, env: dict[str, str] | None = None):
        self.timeout_s, self.cancel = timeout_s, cancel
        self.device = device  # how outputs are allocated (None: memfds on the host; see verifier/devices.py)
        self.deadline = time.monotonic() + timeout_s
        try:
            sandbox.refuse_if_stopping()
        except sandbox.Stopping as exc:
            raise ChildFailure(str(exc)) from None
        self.tmp = tempfile.TemporaryDirectory(prefix=sandbox.temp_prefix())
        root = Path(self.tmp.name)
        cwd = root / "cwd"
        cwd.mkdir()
        kernel = cwd / kernel_name
        kernel.write_text(source)
        self.kernel = str(kernel)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.log = open(root / "output.log", "w+")
        self.outputs: dict[str, arena.OutputArena] = {}
        self.label = "starting"
        job = dict(job, kernel=self.kernel, socket_fd=theirs.fileno())
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-m", "kopt.verifier.child"], cwd=cwd,
            env=sandbox.clean_env(root, interpret, {**(getattr(device, "child_env", None) or {}), **(env or {})}),
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
            pass_fds=[theirs.fileno()], preexec_fn=lambda: sandbox._limits(memory_bytes), text=True)
        sandbox.track(self.proc)
        theirs.close()
        try:
            self.proc.stdin.write(json.dumps(job))
            self.proc.stdin.close()
        except BrokenPipeError:  # killed before it read its job: the wait below names it
            pass
        try:
            ready = self.wait("loading the kernel file")
            if ready.get("op") == "error":
                raise ChildFailure(ready["error"] + (f"\n{ready.get('where', '')}" if ready.get("where") else ""),
                                   self.tail())
            if ready.get("op") != "ready":
                raise ChildFailure("the kernel's process broke the verifier's protocol", self.tail())
        except BaseException:
            self.close()  # no `with` block will: the process and its files go now
            raise

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait(self, label: str) -> dict[str, Any]:
        """The child's next message, or a ChildFailure naming what it was doing. The timeout is per call
        (so it scales with the work: twenty autotune configs compile in twenty calls), and a hang in any
        one call is caught within it."""
        self.label = label
        self.deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ChildFailure(f"timed out after {self.timeout_s:.0f} s while {label} (the process group was "
                                   "killed)", self.tail())
            if self.cancel is not None and self.cancel.is_set():
                self.kill()
                raise ChildFailure("cancelled: another phase failed first", self.tail())
            ready, _, _ = select.select([self.sock], [], [], min(0.2, remaining))
            if ready:
                try:
                    msg, fds = receive(self.sock)
                except ConnectionResetError:  # killed with unread data in the socket: as an end of file
                    msg, fds = None, []
                for fd in fds:
                    os.close(fd)
                if msg is None:
                    code = self.proc.wait()
                    raise ChildFailure(f"{sandbox.describe_exit(code) if code else 'the process exited'} while "
                                       f"{label}" + (FAULT_HINT if code and code < 0 else ""), self.tail())
                return msg

    def output(self, name: str, like: torch.Tensor) -> arena.OutputArena:
        out = self.outputs.get(name)
        if out is None or out.shape != tuple(like.shape) or out.dtype != like.dtype or out.stride != like.stride():
            if out is not None:
                out.close()
            out = self.outputs[name] = (self.device.output(name, like) if self.device is not None
                                        else arena.OutputArena(name, like))
        return out

    def call(self, label: str, group: str, inputs: Inputs, outputs: list[str], *, poison: float,
             end_aligned: bool, program_order: str = "forward", order_seed: int = 0,
             autotune_choice: int | None = None, override: dict[str, Any] | None = None,
             timed: bool = False, autotune_forced: dict[str, int] | None = None,
             sample: tuple | None = None) -> CallResult:
        """One call of the entry point; `group` names the buffers (the same group: the same addresses).
        `timed`: the call is timed as on the device (caches flushed first; the reply carries `event_ms`).
        `sample`: under the interpreter, run only a sample of each launch's programs (interp.take_sampled)."""
        sent, fds = [], [] if inputs.fd is None else [inputs.fd]
        for name in outputs:
            like = inputs.tensors[name]
            if inputs.layout.meta:  # shapes only: nothing is written, nothing to read back
                spec = arena.Spec(name, arena.dtype_name(like), tuple(like.shape), tuple(like.stride()), 0, 0)
                sent.append({"spec": spec.to_json(), "size": 0})
                continue
            out = self.output(f"{group}:{name}", like)
            spec = out.prepare(poison, end_aligned)
            entry = {"spec": {**spec.to_json(), "name": name}, "size": out.size}
            if getattr(out, "handle", None) is not None:
                entry["handle"] = out.handle
            else:
                fds.append(out.fd)
            sent.append(entry)
        layout = inputs.layout.to_json()
        if inputs.handle is not None:
            layout["handle"] = inputs.handle
        message = {"op": "call", "group": group, "layout": layout, "outputs": sent, "timed": timed,
                   "program_order": program_order, "order_seed": order_seed, "autotune_choice": autotune_choice,
                   "autotune_forced": autotune_forced or {}, "sample": list(sample) if sample else None,
                   "override": override or {}}
        start = time.perf_counter()
        send(self.sock, message, fds)
        reply = self.wait(label)
        wall_s = time.perf_counter() - start
        if reply.get("op") == "verifier_error":
            raise VerifierFailure(f"the verifier's child failed while {label}: {reply.get('error')}",
                                  reply.get("where", ""))
        if reply.get("op") != "done":
            raise ChildFailure(f"the kernel's process broke the verifier's protocol while {label}", self.tail())
        problems, results = list(inputs.problems()), {}
        for name in outputs if not inputs.layout.meta else ():
            out = self.outputs[f"{group}:{name}"]
            if not out.slack_intact():
                problems.append(f"wrote outside {name} (the bytes next to it changed)")
            results[name] = out.read()
        if reply.get("returned") is not None:
            problems.append(f"the entry point returned {reply['returned']}; it must write the outputs in place and "
                            "return None")
        launched = reply.get("launched") or []
        if reply.get("exception") is None and not inputs.layout.meta:
            if not launched:
                problems.append("the entry point launched no Triton kernel")
            elif any(f != self.kernel for f in launched):
                problems.append("the entry point launched a Triton kernel not defined in the kernel file")
        return CallResult(results, problems, reply.get("exception"), wall_s, reply.get("keys") or [],
                          reply.get("autotune") or {}, reply)

    def request(self, op: str) -> dict[str, Any]:
        send(self.sock, {"op": op})
        return self.wait(f"asking for the {op}")

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 6000))
        return self.log.read()

    def kill(self) -> None:
        sandbox._kill_group(self.proc)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    send(self.sock, {"op": "exit"})
                    self.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            sandbox._kill_group(self.proc)
        finally:
            sandbox.untrack(self.proc)
            self.sock.close()
            for out in self.outputs.values():
                out.close()
            self.log.close()
            self.tmp.cleanup()


FAULT_HINT = (" (inputs are read-only and the memory around every output is inaccessible: a store into an input, "
              "next to an output, or an out-of-bounds access)")
