"""Shared memory that trusted code fills and the candidate's process only maps.

Inputs live in a sealed memfd (no process can write it any more: not the candidate, not
its own mprotect), mapped read-only between inaccessible guard pages in the candidate's
process; any store into an input, transient or not, faults there. Each output lives in its
own memfd that trusted code poisons before and reads after every call; in the candidate's
process it sits between inaccessible guard pages, placed flush against the start or the end
of its pages (chosen per call from the secret), so a store just past either end faults and
the few bytes of slack that do not are checked by value.

Trusted code builds layouts with `pack_inputs` / `OutputArena`; the child maps them with
`map_inputs` / `map_output` (verifier/child.py). Meta tensors travel as specs only.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

PAGE = mmap.PAGESIZE
SLACK_BYTE = 0xA5
ALIGN = 16  # pointers stay 16-byte aligned, as Triton specialises on it (and allocators give)
DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                                     torch.int8, torch.int16, torch.int32, torch.int64,
                                                     torch.uint8, torch.bool)}
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def split_call(inputs: dict[str, Any], positional: int) -> tuple[list[Any], dict[str, Any]]:
    """The entry point's call from its ordered inputs: the first `positional` as arguments, the rest by name."""
    names = list(inputs)
    return [inputs[n] for n in names[:positional]], {n: inputs[n] for n in names[positional:]}


@dataclass(frozen=True)
class Spec:
    """One tensor: where its elements lie in the arena file (offset of element 0 and byte span)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    span: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def of(data: dict[str, Any]) -> "Spec":
        return Spec(data["name"], data["dtype"], tuple(data["shape"]), tuple(data["stride"]), data["offset"],
                    data["span"])


def _span_elements(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise TypeError(f"tensors of dtype {t.dtype} cannot be handed to a candidate")
    return name


@dataclass
class Layout:
    """Where each input of a call lies (tensors) and the plain values passed with them."""

    specs: list[Spec]
    scalars: dict[str, Any]
    order: list[str]  # argument names in signature order
    size: int
    meta: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"specs": [s.to_json() for s in self.specs], "scalars": self.scalars, "order": self.order,
                "size": self.size, "meta": self.meta}

    def same_shape(self, other: "Layout") -> bool:
        return self.specs == other.specs and self.order == other.order and self.size == other.size


def plan_layout(inputs: dict[str, Any], outputs: list[str]) -> Layout:
    specs, scalars, offset = [], {}, 0
    meta = False
    for name, value in inputs.items():
        if name in outputs:
            continue
        if isinstance(value, torch.Tensor):
            meta = meta or value.is_meta
            span = _span_elements(value) * value.element_size()
            specs.append(Spec(name, dtype_name(value), tuple(value.shape), tuple(value.stride()), offset, span))
            offset = _round_up(offset + span, PAGE)
        elif value is None or isinstance(value, (bool, int, float, str)):
            scalars[name] = value
        else:
            raise TypeError(f"input {name} of type {type(value).__name__} cannot be handed to a candidate")
    return Layout(specs, scalars, list(inputs), max(offset, PAGE), meta)


def pack_inputs(inputs: dict[str, Any], outputs: list[str], layout: Layout | None = None) -> tuple[Layout, int | None]:
    """(layout, sealed memfd or None for meta tensors). With `layout`, the new content must fit it exactly."""
    plan = plan_layout(inputs, outputs)
    if layout is not None and not plan.same_shape(layout):
        raise ValueError("the task's input variant changed shapes, strides or dtypes: a variant must keep them")
    if plan.meta:
        return plan, None
    fd = os.memfd_create("kopt-inputs", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.ftruncate(fd, plan.size)
    # Written with pwrite, never through a writable mapping: F_SEAL_WRITE fails (EBUSY) while any
    # process maps the file writable, and a child forked by another thread of this process
    # inherits such a mapping until its exec.
    for spec in plan.specs:
        t = inputs[spec.name]
        if spec.span:
            flat = t.as_strided((spec.span // t.element_size(),), (1,), t.storage_offset())
            data = memoryview(flat.contiguous().view(torch.uint8).numpy())
            hole = zero_prefix(t)
            _pwrite_all(fd, data[hole:], spec.offset + hole)  # the file reads as zeros where nothing is written
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    return plan, fd


def zero_prefix(t: torch.Tensor) -> int:
    """Bytes at the start of a contiguous tensor that trusted code made as zeros and never stored
    (`zero_prefix_bytes`: a task's pool past 2^31 elements, over an untouched anonymous mapping): left as
    a hole of the memfd, which reads as zeros too, so a 4 GiB pool costs the pages its data fills. Reading
    them to check would touch every page: the attribute is trusted (only trusted code builds inputs)."""
    claimed = getattr(t, "zero_prefix_bytes", 0)
    if not claimed or t.storage_offset() or not t.is_contiguous():
        return 0
    return min(int(claimed), t.numel() * t.element_size()) // PAGE * PAGE


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


class OutputArena:
    """One output buffer: a memfd trusted code poisons before a call and reads after it."""

    def __init__(self, name: str, like: torch.Tensor):
        self.name, self.dtype, self.shape = name, like.dtype, tuple(like.shape)
        self.stride = tuple(like.stride())
        self.nbytes = _span_elements(like) * like.element_size()
        self.size = _round_up(max(self.nbytes, 1), PAGE)
        self.fd = os.memfd_create(f"kopt-out-{name}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.view = mmap.mmap(self.fd, self.size)
        self.offset = 0

    def prepare(self, poison: float, end_aligned: bool) -> Spec:
        """Poison the output and fill the slack around it; return where it sits for this call."""
        self.offset = (self.size - self.nbytes) // ALIGN * ALIGN if end_aligned else 0
        self.view[:] = bytes([SLACK_BYTE]) * self.size
        out = self.tensor()
        out.fill_(poison)
        return Spec(self.name, dtype_name(out), self.shape, self.stride, self.offset, self.nbytes)

    def tensor(self) -> torch.Tensor:
        raw = torch.frombuffer(self.view, dtype=torch.uint8, count=self.nbytes, offset=self.offset)
        n = self.nbytes // torch.empty(0, dtype=self.dtype).element_size()
        return raw.view(self.dtype)[:n].as_strided(self.shape, self.stride)

    def slack_intact(self) -> bool:
        data = memoryview(self.view)
        pattern = bytes([SLACK_BYTE])
        before, after = data[:self.offset], data[self.offset + self.nbytes:]
        return before.tobytes() == pattern * len(before) and after.tobytes() == pattern * len(after)

    def read(self) -> torch.Tensor:
        return self.tensor().clone()

    def close(self) -> None:
        self.view.close()
        os.close(self.fd)


# ---- the candidate's side (trusted code in verifier/child.py runs these before the candidate's call)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FIXED = 0x10
PROT_NONE = 0


def _mmap(addr: int | None, size: int, prot: int, flags: int, fd: int) -> int:
    got = _libc.mmap(addr, size, prot, flags, fd, 0)
    if got in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), f"mmap failed: {os.strerror(ctypes.get_errno())}")
    return got


class Region:
    """Address space for one tensor group: guard page, data pages, guard page (the guards never mapped)."""

    def __init__(self, size: int):
        self.size = size
        self.base = _mmap(None, size + 2 * PAGE, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1)
        self.data = self.base + PAGE

    def map(self, fd: int, writable: bool) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        _mmap(self.data, self.size, prot, mmap.MAP_SHARED | MAP_FIXED, fd)

    def map_anonymous_none(self) -> None:
        _mmap(self.data, self.size, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1)

    def tensor(self, spec: Spec) -> torch.Tensor:
        dtype = DTYPES[spec.dtype]
        itemsize = torch.empty(0, dtype=dtype).element_size()
        count = max(spec.span // itemsize, 1)
        buf = (ctypes.c_char * (count * itemsize)).from_address(self.data + spec.offset)
        flat = torch.frombuffer(buf, dtype=dtype, count=count)
        return flat.as_strided(spec.shape, spec.stride) if spec.span else torch.empty(spec.shape, dtype=dtype)

    def close(self) -> None:
        _libc.munmap(self.base, self.size + 2 * PAGE)


def meta_tensor(spec: Spec) -> torch.Tensor:
    return torch.empty_strided(spec.shape, spec.stride, dtype=DTYPES[spec.dtype], device="meta")
