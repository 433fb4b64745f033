"""Ahead-of-time compilation for a GPU target, with no GPU (runs inside the child process).

The entry point is called on small CPU inputs while Triton's active driver is a stand-in that
only names the target; every launch is turned into a compile-only warmup. That compiles each
kernel exactly as the entry point specialises it (constexprs, warps, stages), and the cubin's
resource usage (registers, local memory = spills) comes from the cuobjdump Triton bundles.
Shared memory is checked against the target's limit here: Triton itself does not.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from typing import Any

# Max dynamic shared memory per block (bytes) by architecture; AMD: LDS per workgroup.
SHARED_LIMITS = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448,
                 103: 232448, 120: 101376, 121: 101376}
HIP_SHARED = {"gfx90a": 65536, "gfx942": 65536, "gfx950": 163840}


class TargetError(ValueError):
    pass


def parse_target(target: str) -> tuple[str, Any, int, int]:
    """'sm_90' -> ('cuda', 90, 32, limit); 'gfx942' -> ('hip', 'gfx942', 64, limit)."""
    match = re.fullmatch(r"sm_(\d+)a?", target)
    if match and int(match.group(1)) in SHARED_LIMITS:
        arch = int(match.group(1))
        return "cuda", arch, 32, SHARED_LIMITS[arch]
    if target in HIP_SHARED:
        return "hip", target, 64, HIP_SHARED[target]
    known = ", ".join([f"sm_{a}" for a in SHARED_LIMITS] + list(HIP_SHARED))
    raise TargetError(f"unknown target {target!r}: use one of {known}")


class _TargetOnlyDriver:
    """Answers what the JIT asks before compiling; anything that would touch a GPU fails loudly."""

    def __init__(self, target: Any):
        self.target = target

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no GPU here: ahead-of-time compilation cannot use driver.{name}")


def resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, spilled bytes per thread) from the bundled cuobjdump; (None, None) if it is missing."""
    import triton.backends.nvidia as nvidia
    tool = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                              timeout=60).stdout
    regs = re.search(r"REG:(\d+)", text)
    # ptxas puts spilled registers in the stack frame (STACK), not in LOCAL (local arrays);
    # a Triton kernel inlines every call, so its stack frame is its spills
    local = [int(m.group(1)) for m in re.finditer(r"(?:STACK|LOCAL):(\d+)", text)]
    return (int(regs.group(1)) if regs else None), (sum(local) if local else None)


class Compiler:
    """Runs inside the candidate's process (mode "compile"): the JIT's active driver only names the
    target, and every kernel compiled is recorded with its resources. The launches themselves are
    turned into compile-only warmups by the child's launch recorder."""

    def __init__(self, target: str):
        import triton.runtime.jit as jit
        from triton.backends.compiler import GPUTarget
        from triton.runtime import driver

        self.target = target
        self.backend, arch, warp, self.limit = parse_target(target)
        driver.set_active(_TargetOnlyDriver(GPUTarget(self.backend, arch, warp)))
        self.kernels: list[dict[str, Any]] = []
        self.case: str | None = None  # the call being made (its buffer group), set by the child
        self.keys: list[str] | None = None  # the child's launch keys: the last is the launch compiling now
        original = jit.JITFunction._do_compile
        compiler = self

        def timed_compile(fn, *args, **kwargs):
            start = time.perf_counter()
            kernel = original(fn, *args, **kwargs)
            meta = kernel.metadata
            entry = {"name": fn.__name__, "num_warps": meta.num_warps, "num_stages": meta.num_stages,
                     "shared_bytes": int(meta.shared), "registers": None, "spill_bytes": None,
                     "compile_s": time.perf_counter() - start, "case": compiler.case,
                     "specialization": compiler.keys[-1] if compiler.keys else None}
            if compiler.backend == "cuda":
                entry["registers"], entry["spill_bytes"] = resource_usage(kernel.asm["cubin"])
            compiler.kernels.append(entry)
            return kernel

        jit.JITFunction._do_compile = timed_compile

    def report(self) -> dict[str, Any]:
        over = [k for k in self.kernels if k["shared_bytes"] > self.limit]
        error = None
        if over:
            k = over[0]
            error = (f"kernel {k['name']} needs {k['shared_bytes']} bytes of shared memory; {self.target} allows "
                     f"{self.limit}: use smaller tiles or fewer stages")
        return {"kernels": self.kernels, "shared_limit": self.limit, "error": error}
