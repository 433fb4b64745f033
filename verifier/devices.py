"""Where an evaluation's calls run: the host (CPU path), the simulated device, or a CUDA GPU.

A device says how trusted code hands buffers to the candidate's process (sealed memfds on the
host, CUDA IPC handles on a GPU), which child mode runs the kernel, which workloads are timed,
the timing protocol's sizes, the peaks behind the roofline floor, and what must hold before
timing (an idle GPU, warm clocks). The GPU path (verifier/accel.py) is written against this
interface only, so `--device sim` runs all of it on CPU: CPU tensors, the Triton interpreter,
the host clock in place of CUDA events, and small workloads the task declares for it. The CUDA
calls themselves are in verifier/cuda.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kopt.verifier import arena
from kopt.verifier.session import Inputs, pack
from kopt.verifier.task import Case, Task

DEVICES = ("auto", "cpu", "cuda", "sim")
SIM_LABEL = "simulated (CPU, Triton interpreter): the GPU path's protocol, not GPU speed"


@dataclass(frozen=True)
class Protocol:
    """Sizes of the timing protocol (verifier/timing.py) on a device."""

    rounds: int = 6  # interleaved baseline/candidate rounds
    aa_rounds: int = 4  # baseline/baseline-copy rounds: the noise band
    target_ms: float = 50.0  # calls per arm per round: about this long, from the baseline's estimate
    min_iters: int = 5
    max_iters: int = 100
    warmup_calls: int = 3


def fresh_content(tensors: dict[str, Any], outputs: list[str], factor: float) -> dict[str, Any]:
    """A timed call's own content: every floating-point input times `factor` (rounded in its dtype), in a
    tensor of the same shape and strides. No two timed calls repeat their content, so a result kept from
    an earlier call (in memory the allocator hands back, say) is never the answer of the next."""
    import torch
    fresh: dict[str, Any] = {}
    for name, t in tensors.items():
        if name not in outputs and isinstance(t, torch.Tensor) and t.is_floating_point():
            copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
            t = copy.copy_(t).mul_(factor)
        fresh[name] = t
    return fresh


class Staged:
    """One arm's timed inputs: the same layout on every call, new content each time (input sets rotate
    and each call's content is scaled by its own factor), so a result cached across calls, by pointer or
    by content, is wrong on the next call."""

    def __init__(self, variants: list[dict[str, Any]], outputs: list[str]):
        self.variants, self.outputs = variants, outputs
        first = pack(variants[0], outputs)
        self.packed = [first] + [pack(v, outputs, first.layout) for v in variants[1:]]
        self.current: Inputs | None = None

    def __len__(self) -> int:
        return len(self.packed)

    def inputs(self, index: int, factor: float = 1.0) -> Inputs:
        base = self.packed[index % len(self.packed)]
        if factor == 1.0:
            return base
        if self.current is not None:
            self.current.close()
        content = fresh_content(self.variants[index % len(self.variants)], self.outputs, factor)
        self.current = pack(content, self.outputs, base.layout)
        return self.current

    def close(self) -> None:
        for inputs in self.packed + ([self.current] if self.current is not None else []):
            inputs.close()


class HostDevice:
    """The CPU path: tensors in host memory, kernels under the interpreter; nothing is timed as a GPU."""

    kind = "cpu"
    tensor_device = "cpu"
    child_mode = "interpret"
    interpret = True
    child_env: dict[str, str] | None = None
    child_memory_bytes: int | None = 16 << 30
    protocol = Protocol()

    def pack(self, tensors: dict[str, Any], outputs: list[str], like: Inputs | None = None) -> Inputs:
        return pack(tensors, outputs, like.layout if like else None)

    def output(self, name: str, like: Any) -> arena.OutputArena:
        return arena.OutputArena(name, like)

    def stage(self, variants: list[dict[str, Any]], outputs: list[str]) -> Staged:
        return Staged(variants, outputs)


class SimDevice(HostDevice):
    """The whole GPU path on CPU (`--device sim`): labelled `simulated` everywhere, never GPU speed."""

    kind = "simulated"
    label = SIM_LABEL
    name = "simulated"
    # few calls per round: an interpreter call takes tens of milliseconds, not microseconds
    protocol = Protocol(rounds=6, aa_rounds=6, target_ms=1.0, min_iters=1, max_iters=2, warmup_calls=1)
    # heavier-tailed noise than a GPU's: the tie band is this times the A/A spread
    band_factor = 1.5

    def workloads(self, task: Task) -> list[Case]:
        cfg = task.config
        if not cfg.sim_workloads:
            raise ValueError(f"task {task.name} declares no [[sim_workloads]] for --device sim: add a few small "
                             "workloads shaped like its GPU workloads to its task.toml")
        return cfg.sim_workloads

    def peaks(self) -> tuple[float, float, str]:
        return 1e6, 1e6, "simulated device: a generous floor (no real device's peaks)"

    def idle_problem(self) -> str | None:
        return None

    def warm_up(self) -> None:
        return None

    def info(self) -> dict[str, str]:
        return {"device_name": "simulated (CPU)", "device_kind": "simulated"}


def check_name(device: str) -> str:
    base, _, index = device.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())) or device.endswith(":"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, sim, cuda or cuda:N (N: the GPU's index)")
    return device


def resolve(device: str) -> str:
    """The device an evaluation runs on: cpu, sim or cuda (cuda:N picks a GPU)."""
    check_name(device)
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def accelerator(device: str) -> Any:
    """The device object the GPU path runs against (sim or a CUDA GPU)."""
    if device == "sim":
        return SimDevice()
    from kopt.verifier import cuda
    return cuda.CudaDevice(int(device.split(":", 1)[1]) if ":" in device else 0)
