"""The CUDA calls of the GPU path, and nothing else (not run by the CPU suite: there is no GPU).

Everything decided on a GPU is decided in code the simulated device runs too (verifier/accel.py,
verifier/coordinator.py, verifier/timing.py). This file only allocates device buffers in trusted
memory and hands them to the candidate's process as CUDA IPC handles, flushes L2 and records
events around a timed call in the child, checks that the GPU is idle and warms its clocks.

Device memory has no page protection: a candidate could write an input or next to an output and
restore it before returning. Inputs are compared bitwise with a trusted copy after every call
and the guard bytes around outputs are checked by value; a write undone before the call returns
is only caught by the CPU path's memfd guards (every verdict made here says so).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Callable

import torch

from kopt.verifier import arena
from kopt.verifier.devices import HostDevice, Protocol, fresh_content
from kopt.verifier.session import Inputs

GUARD_BYTES = 4096
SLACK_BYTE = 0xA5
# (memory bandwidth GB/s, dense bf16 tensor TFLOP/s) by exact device name, as torch reports it
PEAKS = {
    "NVIDIA H200": (4800, 989), "NVIDIA H100 80GB HBM3": (3350, 989), "NVIDIA H100 PCIe": (2000, 756),
    "NVIDIA H100 NVL": (3900, 835), "NVIDIA H800": (3350, 989), "NVIDIA B200": (8000, 2250),
    "NVIDIA GB200": (8000, 2500), "NVIDIA A100-SXM4-80GB": (2039, 312), "NVIDIA A100-SXM4-40GB": (1555, 312),
    "NVIDIA A100-PCIE-40GB": (1555, 312), "NVIDIA A100 80GB PCIe": (1935, 312), "NVIDIA L40S": (864, 362),
    "NVIDIA L4": (300, 121), "NVIDIA GeForce RTX 4090": (1008, 330), "AMD Instinct MI300X": (5300, 1307),
}
UNKNOWN_PEAK = (10000.0, 5000.0)  # generous: an unknown GPU gets a low floor, never a false rejection
WARM_UP_S = 0.5
DRIVER_ENV = ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "TRITON_LIBCUDA_PATH", "TRITON_PTXAS_PATH")


def peaks_for(name: str) -> tuple[float, float, str]:
    if name in PEAKS:
        bandwidth, tflops = PEAKS[name]
        return bandwidth, tflops, f"{name}: {bandwidth} GB/s, {tflops} TFLOP/s"
    return (*UNKNOWN_PEAK, f"{name} is not in kopt's peak table: a generous floor ({UNKNOWN_PEAK[0]:g} GB/s, "
            f"{UNKNOWN_PEAK[1]:g} TFLOP/s)")


def _handle(storage: torch.UntypedStorage) -> list[Any]:
    return [x.hex() if isinstance(x, bytes) else x for x in storage._share_cuda_()]


def _open(handle: list[Any]) -> torch.UntypedStorage:
    parts = [bytes.fromhex(x) if i in (1, 6) else x for i, x in enumerate(handle)]
    return torch.UntypedStorage._new_shared_cuda(*parts)


class DeviceInputs(Inputs):
    """Inputs in one device buffer; after each call it must still equal the trusted copy."""

    def __init__(self, tensors: dict[str, Any], layout: arena.Layout, buffer: torch.Tensor):
        super().__init__(tensors, layout, None, _handle(buffer.untyped_storage()))
        self.buffer, self.pristine = buffer, buffer.clone()

    def load(self, content: torch.Tensor) -> None:
        self.buffer.copy_(content)
        self.pristine.copy_(content)

    def problems(self) -> list[str]:
        torch.cuda.synchronize()
        return [] if torch.equal(self.buffer, self.pristine) else ["an input was modified"]

    def close(self) -> None:
        self.buffer = self.pristine = None


def pack_device(tensors: dict[str, Any], outputs: list[str], index: int) -> DeviceInputs:
    layout = arena.plan_layout(tensors, outputs)
    buffer = torch.zeros(layout.size, dtype=torch.uint8, device=f"cuda:{index}")
    for spec in layout.specs:
        t = tensors[spec.name]
        if spec.span:
            flat = t.as_strided((spec.span // t.element_size(),), (1,), t.storage_offset()).contiguous()
            buffer[spec.offset:spec.offset + spec.span].copy_(flat.view(torch.uint8))
    return DeviceInputs(tensors, layout, buffer)


class DeviceOutput:
    """An output between guard bytes in one device buffer, poisoned before and read after each call."""

    def __init__(self, name: str, like: torch.Tensor, index: int):
        self.name, self.dtype, self.shape, self.stride = name, like.dtype, tuple(like.shape), tuple(like.stride())
        self.nbytes = arena._span_elements(like) * like.element_size()
        self.size = self.nbytes + 2 * GUARD_BYTES
        self.buffer = torch.empty(self.size, dtype=torch.uint8, device=f"cuda:{index}")
        self.handle, self.fd, self.offset = _handle(self.buffer.untyped_storage()), None, GUARD_BYTES

    def prepare(self, poison: float, end_aligned: bool) -> arena.Spec:
        self.buffer.fill_(SLACK_BYTE)
        self.tensor().fill_(poison)
        torch.cuda.synchronize()
        return arena.Spec(self.name, arena.dtype_name(self.tensor()), self.shape, self.stride, self.offset,
                          self.nbytes)

    def tensor(self) -> torch.Tensor:
        raw = self.buffer[self.offset:self.offset + self.nbytes]
        return raw.view(self.dtype).as_strided(self.shape, self.stride)

    def slack_intact(self) -> bool:
        torch.cuda.synchronize()
        guards = torch.cat([self.buffer[:self.offset], self.buffer[self.offset + self.nbytes:]])
        return bool((guards == SLACK_BYTE).all())

    def read(self) -> torch.Tensor:
        return self.tensor().clone()

    def close(self) -> None:
        self.buffer = None


class StagedDevice:
    """One arm's timed inputs on the GPU: one buffer (the same addresses), new content copied in per call
    (an input set, scaled by the call's own factor: devices.fresh_content)."""

    def __init__(self, variants: list[dict[str, Any]], outputs: list[str], index: int):
        packed = [pack_device(v, outputs, index) for v in variants]
        self.contents = [p.buffer.clone() for p in packed]
        self.live = packed[0]
        self.variants, self.outputs, self.index = variants, outputs, index

    def __len__(self) -> int:
        return len(self.contents)

    def inputs(self, index: int, factor: float = 1.0) -> DeviceInputs:
        i = index % len(self.contents)
        if factor == 1.0:
            self.live.load(self.contents[i])
            self.live.tensors = self.variants[i]
            return self.live
        content = fresh_content(self.variants[i], self.outputs, factor)
        fresh = pack_device(content, self.outputs, self.index)
        self.live.load(fresh.buffer)
        self.live.tensors = content
        fresh.close()
        return self.live

    def close(self) -> None:
        self.contents = []


class CudaDevice(HostDevice):
    kind = "gpu"
    child_mode = "cuda"
    interpret = False
    child_memory_bytes = None  # an address-space limit breaks the CUDA driver's reservations
    protocol = Protocol()
    band_factor = 1.0

    def __init__(self, index: int = 0):
        self.index = index
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"--device cuda:{index}: no such GPU here ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(index)
        self.tensor_device = f"cuda:{index}"
        self.name = torch.cuda.get_device_name(index)
        self.label = "gpu"
        # the driver's and toolkit's paths: a child built from a clean environment must still find them
        passed = {k: os.environ[k] for k in DRIVER_ENV if k in os.environ}
        self.child_env = {"KOPT_CUDA_DEVICE": str(index), **passed}

    def workloads(self, task: Any) -> list[Any]:
        return task.config.workloads

    def pack(self, tensors: dict[str, Any], outputs: list[str], like: Inputs | None = None) -> Inputs:
        return pack_device(tensors, outputs, self.index)

    def output(self, name: str, like: torch.Tensor) -> DeviceOutput:
        return DeviceOutput(name, like, self.index)

    def stage(self, variants: list[dict[str, Any]], outputs: list[str]) -> StagedDevice:
        return StagedDevice(variants, outputs, self.index)

    def peaks(self) -> tuple[float, float, str]:
        return peaks_for(self.name)

    def idle_problem(self) -> str | None:
        """Another process computing on this GPU corrupts both timings: named, as an `error`."""
        try:
            out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-compute-apps=pid,process_name",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None  # no nvidia-smi: nothing to check with (the A/A band still shows contention)
        ours = {os.getpid(), *_children(os.getpid())}
        others = [line.strip() for line in out.splitlines()
                  if line.strip() and int(line.split(",")[0]) not in ours]
        return f"the GPU is busy with other processes: {'; '.join(others)}" if others else None

    def warm_up(self) -> None:
        a = torch.randn(4096, 4096, device=self.tensor_device, dtype=torch.bfloat16)
        end = time.perf_counter() + WARM_UP_S
        while time.perf_counter() < end:
            a @ a
            torch.cuda.synchronize()

    def info(self) -> dict[str, str]:
        props = torch.cuda.get_device_properties(self.index)
        return {"device_name": props.name, "device_kind": "gpu", "cuda": str(torch.version.cuda),
                "capability": f"{props.major}.{props.minor}", "device_index": str(self.index)}


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = {int(x) for x in f.read().split()}
    except OSError:
        return set()
    return kids | {g for k in kids for g in _children(k)}


# ---- the candidate's process (verifier/child.py calls these in mode "cuda")
_flush: torch.Tensor | None = None
_events: tuple[Any, Any] | None = None


def child_setup(job: dict) -> None:
    torch.cuda.set_device(int(os.environ.get("KOPT_CUDA_DEVICE", "0")))


def open_inputs(layout: dict, keep: dict, group: str) -> dict[str, torch.Tensor]:
    storage = _open(layout["handle"])
    keep[f"{group}/in"] = storage
    raw = torch.empty(0, dtype=torch.uint8, device="cuda").set_(storage)
    out = {}
    for spec in map(arena.Spec.of, layout["specs"]):
        dtype = arena.DTYPES[spec.dtype]
        flat = raw[spec.offset:spec.offset + spec.span].view(dtype)
        out[spec.name] = flat.as_strided(spec.shape, spec.stride)
    return out


def open_output(spec: arena.Spec, handle: list[Any], keep: dict, group: str) -> torch.Tensor:
    storage = _open(handle)
    keep[f"{group}/out/{spec.name}"] = storage
    raw = torch.empty(0, dtype=torch.uint8, device="cuda").set_(storage)
    return raw[spec.offset:spec.offset + spec.span].view(arena.DTYPES[spec.dtype]).as_strided(spec.shape, spec.stride)


def timed_call(fn: Callable, positional: list, keywords: dict, trap: Callable) -> tuple[Any, float]:
    """As do_bench arranges it: the L2 flush is queued just before the start event, so the GPU is busy
    while the host launches the kernel and the window holds the kernel's work, not launch latency."""
    global _flush, _events
    if _flush is None:
        l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        _flush = torch.empty(max(256 << 20, 2 * l2), dtype=torch.uint8, device="cuda")
        _events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
    start, end = _events
    torch.cuda.synchronize()
    _flush.zero_()
    start.record()
    with trap():
        returned = fn(*positional, **keywords)
    end.record()
    torch.cuda.synchronize()
    return returned, start.elapsed_time(end)
