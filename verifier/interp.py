"""Patches that make the Triton interpreter (TRITON_INTERPRET=1) run honest kernels as a GPU would.

Trusted code: the verifier's child calls `install()` before it imports the candidate module.
Written against triton 3.9.0 and checked on 3.6.0; every triton internal it touches is looked
up by name first, and a missing one raises InterpreterLimitation instead of patching half-way.

What changes (and the invariant each patch keeps):
- Program order: `GridExecutor.__call__` runs the grid's programs "forward" (the interpreter's
  own x-y-z nesting), "reverse" or "shuffle"d by a seed; everything else in that method is kept.
- Write-back: after a launch the interpreter copies each argument's host storage back into its
  device storage. When both are the same memory (CPU tensors) the copy is skipped, so inputs
  may live in read-only memory; a kernel that stores into them still faults (SIGSEGV).
- bf16: the interpreter keeps bf16 as raw uint16 bit patterns and computes on the bits. Here a
  bf16 TensorHandle holds float32 data whose every value is bf16-representable (rounded to
  nearest even when the handle is made). Loads widen bits exactly, stores write the bits back,
  arithmetic runs in fp32 (or fp64 for fma) and rounds once, as a GPU's correctly rounded bf16
  ops do; tl.dot of bf16 operands accumulates in fp32.
- Float -> 32/64-bit integer conversions saturate and send NaN to 0, as a GPU's cvt.rzi does
  (numpy wrapped them, which a kernel could use to tell the interpreter from a GPU).
- tl.dot of fp32 operands runs at the precision the GPU would use: the interpreter ignored
  `input_precision` and multiplied in full fp32, so a kernel whose fp32 dots ran as TF32 (the
  NVIDIA default when `input_precision` is not given: 10 mantissa bits) passed on CPU and failed
  on the GPU. Now "tf32" rounds both operands to TF32 (to nearest even), "tf32x3", "bf16x3" and
  "bf16x6" run as the split products the compiler emits, and only "ieee" is plain fp32.
- fp32 `/` is NVIDIA's div.full.f32 (what Triton emits): a reciprocal then a product, each rounded
  to fp32 (operands scaled by 1/4 where |y| > 2**126). The interpreter divided exactly, so
  comparing `x / y` with `tl.math.div_rn(x, y)` told it from a GPU; div_rn stays exact.
- fp32 `tl.exp` is what Triton emits for NVIDIA: x * log2(e) rounded to fp32, then 2 to that power
  (ex2.approx.f32; here correctly rounded). The interpreter's exact exp differs by up to |x| * 2**-24
  relatively (about 60 ulp near 88), which an independent panel's kernel compared against a
  constant to tell the interpreter from a GPU. The last ulps of ex2.approx itself stay unmatched.
  `tl.exp`, `tl.exp2`, `tl.sqrt` and `tl.rsqrt` flush subnormal inputs and results to zero, as the
  .approx.ftz instructions they compile to do.
- Races between the programs of one launch: a GPU runs them concurrently and in any order, the
  interpreter one after another, so a program that reads what another program of the same launch
  wrote (a non-atomic merge of split partials, a flag set by an earlier program) or overwrites a
  value another program stored with a different one got the interpreter's order for free. Every
  plain load and store is checked against the launch's writes so far (`_Races`: the writing
  program per element, in 4 KiB pages) and the launch raises DataRace naming both programs.
  Atomics are not races. When the two programs also did atomics on a common address (a lock or a
  flag: run one after another, a lock is never contended, so a working one cannot be told from
  atomics that order nothing) it is an InterpreterLimitation instead: for a GPU to judge.
- Scalars as the compiled kernel types them: a `range`/`tl.range` loop's induction variable is an
  int32 tensor (int64 when a bound is), not a Python int, and an int argument equal to 1 is the
  constant 1 (Triton's specialization), one past int32 int64 (the interpreter made it uint32). An
  independent panel's kernels told the interpreter from a GPU by `i + 2**31 - 1 + 1 < 0` (int32
  wraps) and `(i + 1) * 1e-12 + 1.0 == 1.0` (fp32 rounds) on a loop variable; `tl.static_range`
  stays Python ints, as its compiled loop is unrolled with constants.
- libdevice (`tl.extra.libdevice`, `tl.extra.cuda/hip.libdevice`): evaluated in numpy, in fp64
  for fp32 arguments, then rounded to the result dtype. Unknown functions raise
  InterpreterLimitation naming the function.
- Speed, same results: a device function called inside a launch reuses the launch's patched
  modules (the interpreter re-patched all of them on each call and left some patched), and the
  int32 overflow checks whose assert the interpreter drops anyway (no debug) are not computed.
- Multi-config @triton.autotune: under the interpreter the chosen config runs (never a
  benchmark), see `set_autotune_choice`; a config of the listed ones can be forced past the
  pruner (`force_configs`: the configs a GPU workload's pruning picks, run on the CPU cases).
  `install_aot_autotune` makes the ahead-of-time compile path launch (that is, compile) every
  config the pruner keeps, and records which of the listed configs those were (`take_picked`).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ORDERS = ("forward", "reverse", "shuffle")


class InterpreterLimitation(RuntimeError):
    """A construct the Triton interpreter cannot run: not a fault of the kernel."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: the Triton interpreter (CPU) cannot run this; it is not a fault of "
                         "the kernel. Check it on a GPU (--device cuda), or avoid the construct.")


class KernelError(ValueError):
    """The kernel's own mistake, found by kopt's interpreter support (as Triton would raise it on a GPU)."""


class DataRace(RuntimeError):
    """Two programs of one launch touched the same element, one of them writing, without atomics."""


class _Pages:
    """Values per byte address for the current launch, in 4 KiB pages (only the pages touched exist):
    one or more tables sharing one layout, each with its value for an address never set."""

    PAGE = 4096

    def __init__(self, *columns: tuple[type, int]) -> None:
        self.columns = columns
        self.slots: dict[int, int] = {}
        self.tables = [np.empty((0, self.PAGE), dtype) for dtype, _ in columns]

    def _locate(self, addrs: np.ndarray, grow: bool) -> tuple[np.ndarray, np.ndarray]:
        pages, offs = addrs // self.PAGE, addrs % self.PAGE
        keys, inverse = np.unique(pages, return_inverse=True)
        slots = np.empty(len(keys), np.int64)
        for i, key in enumerate(keys.tolist()):
            slot = self.slots.get(key)
            if slot is None and grow:
                slot = self.slots[key] = len(self.slots)
                if slot >= len(self.tables[0]):
                    more = max(16, len(self.tables[0]))
                    self.tables = [np.concatenate([t, np.full((more, self.PAGE), fill, t.dtype)])
                                   for t, (_, fill) in zip(self.tables, self.columns)]
            slots[i] = -1 if slot is None else slot
        return slots[inverse.reshape(-1)], offs

    def get(self, addrs: np.ndarray) -> list[np.ndarray]:
        rows, offs = self._locate(addrs, grow=False)
        known = rows >= 0
        found = []
        for table, (dtype, fill) in zip(self.tables, self.columns):
            column = np.full(len(addrs), fill, dtype)
            column[known] = table[rows[known], offs[known]]
            found.append(column)
        return found

    def put(self, addrs: np.ndarray, *values: Any) -> None:
        rows, offs = self._locate(addrs, grow=True)
        for table, value in zip(self.tables, values):
            table[rows, offs] = value


def _as_unsigned(values: np.ndarray) -> np.ndarray:
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[values.dtype.itemsize]
    return np.ascontiguousarray(values).view(width).astype(np.uint64)


class _Races:
    """Which program of the current launch wrote each element, checked on every access.

    Plain stores: the writing program and the store's width, by the element's first byte, with the
    launch's written byte range as a cheap first test for loads from other buffers. While every plain
    store of the launch has one width and is aligned to it, an access of that width is looked up at its
    first byte only; otherwise at every byte offset that could overlap (a wide store read narrowly,
    or a misaligned one, overlaps elements at other first bytes).
    Atomic writes: the last program to write each address atomically, the last to store or exchange a
    value there (and its bits), and a program that read the address atomically and then wrote it with
    another atomic (a read-modify-write from two atomics: each is atomic, the pair is not). A pair that
    ends in a store or an exchange is a race (the last store wins); one that ends in an add or another
    update may be a turnstile (spin until the counter reaches your turn, then add one), which a GPU
    runs correctly and one program after another cannot be told from a lost update: for a GPU to judge."""

    def __init__(self) -> None:
        self.begin((1, 1, 1))

    def begin(self, grid: tuple[int, int, int]) -> None:
        self.grid, self.program = grid, 0
        self.plain = _Pages((np.int32, -1), (np.uint8, 0))  # writer, width
        self.widths: set[int] = set()
        self.aligned = True
        self.atomic_writes = _Pages((np.int32, -1), (np.int32, -1), (np.int32, -1), (np.uint64, 0), (np.int32, -1))
        #                 (last writer, read-then-wrote, last to store a value, its bits, a writer before the last)
        self.loaded: list[np.ndarray] = []  # the current program's atomic loads
        self.lo: int | None = None  # the byte range of the launch's plain stores
        self.hi: int | None = None
        self.atomic_span: tuple[int, int] | None = None  # and of its atomic writes
        self.atomic_widths: set[int] = set()
        self.atomics: dict[int, list[tuple[int, np.ndarray]]] = {}  # program -> (tick, addresses) of each atomic
        self.first_store: dict[int, int] = {}  # program -> tick of its first plain store
        self.first_atomic_write: dict[int, int] = {}
        self.tick = 0
        self.atomic_depth = 0
        self.found: str | None = None
        self.ordered = False  # the two programs did atomics on a common address (a lock or a flag?)

    def at(self, x: int, y: int, z: int) -> None:
        gx, gy, _ = self.grid
        self.program = x + gx * (y + gy * z)
        self.loaded = []

    def name(self, index: int) -> str:
        gx, gy, _ = self.grid
        return f"({index % gx}, {index // gx % gy}, {index // (gx * gy)})"

    def _race(self, writer: int, since: dict[int, int], what: str) -> None:
        self.ordered = self.synchronised(writer, since.get(writer, 0))
        self.found = what

    @staticmethod
    def _addresses(ptrs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return (ptrs if mask is None else ptrs[np.broadcast_to(mask, ptrs.shape)]).astype(np.int64).reshape(-1)

    def _offsets(self, addrs: np.ndarray, width: int) -> range:
        """The byte offsets from an access's first byte at which a plain store it overlaps may start."""
        if self.widths <= {width} and self.aligned and not (addrs % width).any():
            return range(0, 1)
        return range(1 - max(self.widths | {width}), width)

    def _overlapping(self, addrs: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """For each access: another program's plain store it overlaps (-1: none), and whether that store
        has the access's own first byte and width (the same element) rather than part of it."""
        writer = np.full(len(addrs), -1, np.int32)
        exact = np.zeros(len(addrs), bool)
        for d in self._offsets(addrs, width):
            owners, widths = self.plain.get(addrs + d)
            hit = (writer < 0) & (owners >= 0) & (owners != self.program) & (widths.astype(np.int64) > -d)
            writer[hit] = owners[hit]
            exact[hit] = (d == 0) & (widths[hit] == width)
        return writer, exact

    def load(self, ptrs: np.ndarray, mask: np.ndarray, width: int) -> None:
        if self.atomic_depth:
            self.atomic(ptrs, mask, "load", None, width)
            return
        self.check_read(ptrs, mask, "read", width)
        self.check_plain_after_atomic(ptrs, mask, "read", width)

    def check_plain_after_atomic(self, ptrs: np.ndarray, mask: np.ndarray | None, verb: str, width: int) -> None:
        """A plain read or store of elements another program of the launch wrote atomically: the atomic
        orders nothing for a plain access (a flag read without an atomic sees it set or not, by timing)."""
        if self.found is not None or self.atomic_span is None or not ptrs.size:
            return
        lo, hi = self.atomic_span
        if int(ptrs.max()) + width - 1 < lo or int(ptrs.min()) > hi:
            return
        addrs = self._addresses(ptrs, mask)
        if not addrs.size:
            return
        same = self.atomic_widths <= {width} and not (addrs % width).any()
        for d in range(0, 1) if same else range(1 - max(self.atomic_widths | {width}), width):
            last, _, _, _, before = self.atomic_writes.get(addrs + d)
            writers = np.where(last == self.program, before, last)
            other = writers[(writers >= 0) & (writers != self.program)]
            if other.size:
                writer = int(other[0])
                # the writer's own atomic counts as its release: the last holder of a ticket may reset the
                # counter or read a sum, and one program after another that looks like atomics that order nothing
                self._race(writer, {writer: self.first_atomic_write[writer] - 1},
                           f"program {self.name(self.program)} {verb} {int(other.size)} element(s) that program "
                           f"{self.name(writer)} wrote atomically in the same launch, without an atomic (read "
                           "and write an element other programs update with tl.atomic_* operations only)")
                return

    def check_read(self, ptrs: np.ndarray, mask: np.ndarray | None, verb: str, width: int) -> None:
        """A read (plain or atomic) of elements another program of the launch stored plainly."""
        if self.found is not None or self.lo is None or not ptrs.size:
            return
        if int(ptrs.max()) + width - 1 < self.lo or int(ptrs.min()) > self.hi:  # (masked lanes too: coarse)
            return
        addrs = self._addresses(ptrs, mask)
        if not addrs.size:
            return
        writers, _ = self._overlapping(addrs, width)
        other = writers[writers >= 0]
        for writer in np.unique(other).tolist():
            self._race(int(writer), self.first_store,
                       f"program {self.name(self.program)} {verb} {int((other == writer).sum())} element(s) "
                       f"that program {self.name(int(writer))} wrote in the same launch")
            return

    def store(self, ptrs: np.ndarray, mask: np.ndarray, values: np.ndarray, read: Callable) -> None:
        if self.atomic_depth:
            self.atomic(ptrs, mask, "store", values, values.dtype.itemsize)
            return
        mask = np.broadcast_to(mask, ptrs.shape)
        addrs = ptrs[mask].astype(np.int64).reshape(-1)
        if self.found is not None or not addrs.size:
            return
        width = values.dtype.itemsize
        writers, exact = self._overlapping(addrs, width)
        if (writers >= 0).any():
            partial = (writers >= 0) & ~exact
            if partial.any():
                writer = int(writers[partial][0])
                self._race(writer, self.first_store,
                           f"program {self.name(self.program)} partly overwrote {int(partial.sum())} element(s) "
                           f"that program {self.name(writer)} wrote in the same launch (another width or alignment)")
                return
            clash = writers >= 0  # the same bits twice are not a race: any order leaves them
            new = np.ascontiguousarray(np.broadcast_to(values, mask.shape)[mask].reshape(-1)[clash])
            old = np.ascontiguousarray(read(ptrs[mask].reshape(-1)[clash], new.dtype))
            differ = _as_unsigned(old) != _as_unsigned(new)
            if differ.any():
                writer = int(writers[clash][differ][0])
                self._race(writer, self.first_store,
                           f"program {self.name(self.program)} overwrote {int(differ.sum())} element(s) that "
                           f"program {self.name(writer)} wrote in the same launch, with other values")
                return
        self.check_plain_after_atomic(addrs, None, "overwrote", width)
        if self.found is not None:
            return
        self.plain.put(addrs, self.program, width)
        self.widths.add(width)
        self.aligned = self.aligned and not (addrs % width).any()
        self.tick += 1
        self.first_store.setdefault(self.program, self.tick)
        lo, hi = int(addrs.min()), int(addrs.max()) + width - 1
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def atomic(self, ptrs: np.ndarray, mask: np.ndarray | None, op: str, values: np.ndarray | None,
               width: int) -> None:
        """An atomic access: `op` is "load", "store", "cas", "xchg" or another read-modify-write."""
        # an atomic on an element another program stored plainly is no less a race (the store is not ordered)
        self.check_read(ptrs, mask, "read atomically" if op == "load" else "updated atomically", width)
        addrs = self._addresses(ptrs, mask)
        self.tick += 1
        self.atomics.setdefault(self.program, []).append((self.tick, addrs))
        if op == "load":
            self.loaded.append(addrs)
            return
        if self.found is not None or not addrs.size:
            return
        me = self.program
        writer, stale, valuer, bits, before = self.atomic_writes.get(addrs)
        if op != "cas" and self.loaded:  # a read, then a write from it: a cas would check the read, this does not
            mine = np.isin(addrs, np.concatenate(self.loaded))
            others = np.where(writer == me, before, writer)  # (another program's update, if the last was mine)
            clash = mine & (others >= 0) & (others != me)
            if clash.any():
                other = int(others[clash][0])
                self._race(other, self.first_atomic_write,
                           f"program {self.name(me)} read {int(clash.sum())} element(s) atomically and then "
                           f"updated them atomically, and program {self.name(other)} updated them too in the same "
                           "launch: the read and the update are two atomics, not one (use one tl.atomic_* "
                           "operation, or tl.atomic_cas in a loop)")
                self.ordered = self.ordered or op not in ("store", "xchg")  # (a turnstile: an add after a spin)
                return
            stale = np.where(mine, me, stale)
        if values is not None and op in ("store", "xchg"):
            new = _as_unsigned(np.broadcast_to(values, ptrs.shape)[np.broadcast_to(True if mask is None else mask,
                                                                             ptrs.shape)].reshape(-1))
            differ = (valuer >= 0) & (valuer != me) & (bits != new)
            if differ.any():
                other = int(valuer[differ][0])
                self._race(other, self.first_atomic_write,
                           f"program {self.name(me)} atomically overwrote {int(differ.sum())} element(s) that "
                           f"program {self.name(other)} stored atomically in the same launch, with other values "
                           "(the last store wins, in an order a GPU does not promise)")
                return
            valuer, bits = np.full(len(addrs), me, np.int32), new
        clash = (stale >= 0) & (stale != me)
        if clash.any():
            other = int(stale[clash][0])
            self._race(other, self.first_atomic_write,
                       f"program {self.name(me)} updated atomically {int(clash.sum())} element(s) that program "
                       f"{self.name(other)} read atomically and then updated in the same launch: the read and "
                       "its update are two atomics, not one (use one tl.atomic_* operation, or tl.atomic_cas in "
                       "a loop)")
            self.ordered = self.ordered or op not in ("store", "xchg")
            return
        self.first_atomic_write.setdefault(me, self.tick)
        self.atomic_writes.put(addrs, me, stale, valuer, bits, np.where((writer >= 0) & (writer != me), writer, before))
        self.atomic_widths.add(width)
        lo, hi = int(addrs.min()), int(addrs.max()) + width - 1
        self.atomic_span = (lo, hi) if self.atomic_span is None else (min(lo, self.atomic_span[0]),
                                                                       max(hi, self.atomic_span[1]))

    def synchronised(self, writer: int, since: int) -> bool:
        """Both programs did atomics on a common address, as a lock or a flag between them would. Run one
        after another, a lock is never contended and a flag is always set, so a working lock cannot be
        told from atomics that order nothing (the cheat): either way it is for a GPU to judge.
        A read before the reader's first atomic, or a write after the writer's last, is ordered by none:
        a race either way. `since`: the tick of the writer's first write of the kind in question."""
        mine = [a for _, a in self.atomics.get(self.program, [])]  # all before this access
        theirs = [a for tick, a in self.atomics.get(writer, []) if tick > since]
        if not mine or not theirs:
            return False
        return bool(np.intersect1d(np.concatenate(mine), np.concatenate(theirs)).size)


_RACES = _Races()


@dataclass
class _State:
    order: str = "forward"
    seed: int = 0
    choice: int | None = None
    bench_runs: int = 0
    autotune_mode: str = ""  # "interp" (install) or "aot" (install_aot_autotune)
    counts: dict[str, int] = field(default_factory=dict)
    forced: dict[str, int] = field(default_factory=dict)  # kernel -> listed config to run, pruner bypassed
    ran: dict[str, set[int]] = field(default_factory=dict)  # kernel -> listed configs run (-1: not listed)
    picked: dict[str, set[int]] = field(default_factory=dict)  # ahead of time: listed configs compiled
    patched: set[str] = field(default_factory=set)
    calling: list[str] = field(default_factory=list)  # libdevice functions being evaluated
    sample: tuple | None = None  # (programs that store, most visited[, the first axis in turns]) per launch
    sampled: list[tuple[int, int]] = field(default_factory=list)  # per launch: (visited, that stored)


_STATE = _State()
_BUILDER_PATCHED = ("cast_impl", "create_fp_to_fp", "create_bitcast", "create_masked_load", "create_masked_store",
                    "create_fabs", "create_fma", "create_atomic_rmw", "create_atomic_cas", "create_inline_asm")
_LIBDEVICE_MODULES = ("triton.language.extra.libdevice", "triton.language.extra.cuda.libdevice",
                      "triton.language.extra.hip.libdevice")  # the stub first, then the backends
_KNOWN_FAILURES = {  # message fragment -> what the limitation names
    "0 active drivers": "benchmarking (multi-config @triton.autotune) needs a GPU driver",
    "inline_asm not supported": "tl.inline_asm_elementwise",
    "extern_elementwise not supported": "an extern (libdevice) function",
    # the interpreter's atomics take fewer dtypes than a GPU's (fp32 atomic_xchg, fp16 atomic_max, ...)
    "does not support fp16": "this atomic on fp16",
    "does not support bf16": "this atomic on bf16",
    "Unsupported data type": "this atomic on this dtype",
}


def install(order: str = "forward", seed: int = 0, sample: tuple | None = None) -> None:
    """Patch the interpreter (idempotent); a later call only changes the program order and seed, and
    whether launches run a sample of their programs (see `take_sampled`)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    _STATE.order, _STATE.seed = order, seed
    _STATE.sample, _STATE.sampled = (tuple(sample) if sample else None), []
    if "interp" in _STATE.patched:
        return
    from triton.runtime import autotuner
    from triton.runtime import interpreter as interp
    # Every internal is checked before anything is patched: all patches or none.
    _require(interp, "GridExecutor", "TensorHandle", "InterpreterBuilder", "interpreter_builder",
             "interpreter_semantic", "_patch_lang", "_patch_builtin", "_get_np_dtype",
             "_validate_np_data_size", "_implicit_cvt", "_unwrap_tensor", "_interpreter", "_ir", "InterpreterError")
    _require(interp.GridExecutor, "_init_args_hst", "_restore_args_dev")
    _require(interp.InterpreterBuilder, "set_grid_idx", "set_grid_dim", "create_dot", "create_fmul", "create_fadd",
             "create_exp", "create_exp2", "create_sqrt", "create_rsqrt",
             "create_fsub", *_BUILDER_PATCHED)
    _require(interp._ir, "INPUT_PRECISION")
    _require(interp.TensorHandle, "__post_init__")
    _require(interp, "FunctionRewriter", "ASTTransformer", "InterpretedFunction")
    _require(interp.FunctionRewriter, "ast_transformer")
    _require(interp.InterpretedFunction, "run", "rewrite")
    _require(interp.interpreter_semantic, "to_tensor", "integer_promote_impl")
    _require(autotuner.Autotuner, "run", "prune_configs")
    for path in _LIBDEVICE_MODULES:
        try:
            importlib.import_module(path)
        except ImportError as e:
            raise InterpreterLimitation(f"no {path} in this triton") from e
    _patch_grid(interp)
    _patch_scalars(interp)
    _patch_bf16(interp)
    _patch_libdevice(interp)
    _patch_autotune("interp")
    _skip_dead_overflow_checks(interp)
    _patch_dot(interp)
    _patch_fdiv(interp)
    _patch_exp(interp)
    _patch_contraction(interp)
    _STATE.patched.add("interp")


def _skip_dead_overflow_checks(interp: Any) -> None:
    """The interpreter's options ask for int32 overflow checks but not for debug, so each check's
    int64 arithmetic is computed and its assert then dropped (a fifth of a call's time); a GPU
    build drops it the same way. Off unless debug is on: the results are the same."""
    import dataclasses
    options = getattr(interp.interpreter_builder, "options", None)
    if dataclasses.is_dataclass(options) and getattr(options, "sanitize_overflow", False) \
            and not getattr(options, "debug", True):
        interp.interpreter_builder.options = dataclasses.replace(options, sanitize_overflow=False)


# ---- fp32 tl.dot at the GPU's precision ----

def _to_tf32(x: np.ndarray) -> np.ndarray:
    """fp32 -> the nearest TF32 value (10 mantissa bits, ties to even), kept in fp32; inf/NaN as they are."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = (bits + (np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1)))) & np.uint32(0xFFFFE000)
    return np.where((bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000), bits, rounded).view(np.float32)


def _to_bf16(x: np.ndarray) -> np.ndarray:
    return _bf16_widen(_bf16_bits(x))


def _split(x: np.ndarray, narrow: Callable[[np.ndarray], np.ndarray], parts: int) -> list[np.ndarray]:
    """x as a sum of `parts` narrow values, largest first (the compiler's split of an fp32 operand)."""
    out = []
    for _ in range(parts):
        out.append(narrow(x))
        x = (x - out[-1]).astype(np.float32)
    return out


# precision name -> (narrowing, parts, the (i, j) products a_i @ b_j the compiler sums)
_SPLIT_DOTS = {
    "TF32": (_to_tf32, 1, ((0, 0),)),
    "TF32x3": (_to_tf32, 2, ((1, 0), (0, 1), (0, 0))),
    "BF16x3": (_to_bf16, 2, ((1, 0), (0, 1), (0, 0))),
    "BF16x6": (_to_bf16, 3, ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))),
}


def _full_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """fp32 x / y as NVIDIA's div.full.f32 (what Triton emits for `/`): the reciprocal, then a product,
    each rounded to fp32, with both operands scaled by 1/4 where |y| > 2**126 (so 1/y stays normal).
    Not the GPU's bits (its reciprocal is approximate too) but, like them, not always the
    correctly rounded quotient that tl.math.div_rn gives."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    with np.errstate(all="ignore"):
        big = np.abs(y) > np.float32(2.0 ** 126)
        scale = np.where(big, np.float32(0.25), np.float32(1.0))
        return ((x * scale) * (np.float32(1.0) / (y * scale))).astype(np.float32)


def _patch_fdiv(interp: Any) -> None:
    """`/` on fp32 (and on bf16, computed in fp32) as div.full.f32; div_rn stays exact."""
    builder = interp.InterpreterBuilder
    orig = builder.create_fdiv

    def create_fdiv(self: Any, lhs: Any, rhs: Any) -> Any:
        if lhs.data.dtype != np.float32 or rhs.data.dtype != np.float32 or lhs.dtype.scalar.name not in {"fp32", "bf16"}:
            return orig(self, lhs, rhs)
        return interp.TensorHandle(_full_div(lhs.data, rhs.data), lhs.dtype.scalar)

    builder.create_fdiv = create_fdiv


def _patch_contraction(interp: Any) -> None:
    """An fp32 product added to or subtracted from (or taking) another fp32 value, as one fused
    multiply-add: the GPU compiler contracts `a * b + c`, `a * b - c` and `c - a * b` into fma.rn.f32
    (every child compiles with TRITON_DEFAULT_FP_FUSION=1, sandbox.clean_env, and `enable_fp_fusion` is
    no launch option the gate allows), so the product is never rounded on its own. An independent
    panel's kernel computed `x * x - c` for an x whose square rounds: 0 under a plain interpreter, the
    rounding residual on a GPU, and took a cheap path where it was not 0. Contracted here when the
    sum takes the product's own result, or that result splatted, expanded or broadcast (register
    copies on a GPU: `(a * b)[:, None] + c` is one FMA there too); a product that passed through a
    reshape, a transpose or a select is not (those may move data through shared memory or keep
    the sum off the product); with two products, the left one (LLVM's choice when both have as
    many uses).
    The sum is made in fp64, as the libdevice fma is (an fp32 product is exact there)."""
    builder = interp.InterpreterBuilder
    fmul, fadd, fsub = builder.create_fmul, builder.create_fadd, builder.create_fsub
    key = "kopt.product"

    def fp32(h: Any) -> bool:
        return h.data.dtype == np.float32 and h.dtype.scalar.name == "fp32"

    def create_fmul(self: Any, lhs: Any, rhs: Any) -> Any:
        out = fmul(self, lhs, rhs)
        if fp32(lhs) and fp32(rhs) and fp32(out):
            out.attr[key] = (lhs.data, rhs.data)
        return out

    def fused(lhs: Any, rhs: Any, sign: float) -> Any:  # lhs + sign * rhs with one product unrounded
        if not (fp32(lhs) and fp32(rhs)):
            return None
        for prod, other, s_prod, s_other in ((lhs, rhs, 1.0, sign), (rhs, lhs, sign, 1.0)):
            factors = prod.attr.get(key)
            if factors is not None:
                a, b = (f.astype(np.float64) for f in factors)
                with np.errstate(all="ignore"):
                    exact = s_prod * (a * b) + s_other * other.data.astype(np.float64)
                    return interp.TensorHandle(np.asarray(exact).astype(np.float32), prod.dtype.scalar)
        return None

    def create_fadd(self: Any, lhs: Any, rhs: Any) -> Any:
        out = fused(lhs, rhs, 1.0)
        return fadd(self, lhs, rhs) if out is None else out

    def create_fsub(self: Any, lhs: Any, rhs: Any) -> Any:
        out = fused(lhs, rhs, -1.0)
        return fsub(self, lhs, rhs) if out is None else out

    builder.create_fmul, builder.create_fadd, builder.create_fsub = create_fmul, create_fadd, create_fsub

    def carried(make: Callable, move: Callable) -> Callable:  # the factors follow the product's copies
        def create(self: Any, *args: Any) -> Any:
            out = make(self, *args)
            factors = next((a.attr.get(key) for a in args if isinstance(a, interp.TensorHandle)), None)
            if factors is not None and fp32(out):
                out.attr[key] = tuple(move(f, *args) for f in factors)
            return out
        return create

    splat, expand, broadcast = builder.create_splat, builder.create_expand_dims, builder.create_broadcast
    builder.create_expand_dims = carried(expand, lambda f, arg, axis: np.expand_dims(f, axis))
    builder.create_broadcast = carried(broadcast, lambda f, arg, shape: np.broadcast_to(f, shape))
    builder.create_splat = carried(splat, lambda f, ret_ty, arg: np.full(
        ret_ty.shape, f[0] if isinstance(arg.dtype, interp.tl.block_type) else f, dtype=np.float32))


def _ftz(x: np.ndarray) -> np.ndarray:
    """Subnormal fp32 values flushed to (signed) zero, as the `.ftz` PTX instructions do."""
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.float32(0.0) * x, x).astype(np.float32)


def _patch_exp(interp: Any) -> None:
    """fp32 (and bf16, computed in fp32) `tl.exp` as exp2(fp32(x * log2(e))), as the GPU computes it, and the
    approximate instructions Triton emits for `tl.exp2`, `tl.sqrt` and `tl.rsqrt` (ex2, sqrt and rsqrt
    .approx.ftz.f32) with their flush to zero: a subnormal input counts as 0 and a subnormal result is 0 (a
    plain interpreter kept 2^-140, which a kernel could test against 0 to tell it from a GPU). `tl.exp` is
    ex2.approx.f32, without .ftz (triton 3.6 and 3.9 for sm_90: ptxas adds a fix-up for subnormal results), so
    its e^-100 stays 3.7e-44: flushing it too made the interpreter the one a kernel could tell apart (an
    independent panel's kernel skipped half the prefix wherever e^-100 was not 0)."""
    builder = interp.InterpreterBuilder
    log2e = np.float32(1.4426950408889634)

    def fp32(arg: Any) -> bool:
        return arg.data.dtype == np.float32 and arg.dtype.scalar.name in {"fp32", "bf16"}

    def approx(orig: Callable, fn: Callable[[np.ndarray], np.ndarray], ftz: bool = True) -> Callable:
        flush = _ftz if ftz else (lambda x: x)

        def create(self: Any, arg: Any) -> Any:
            if not fp32(arg):
                return orig(self, arg)
            with np.errstate(all="ignore"):
                return interp.TensorHandle(flush(fn(flush(arg.data)).astype(np.float32)), arg.dtype.scalar)
        return create

    builder.create_exp = approx(builder.create_exp, lambda x: np.exp2((x * log2e).astype(np.float32)), ftz=False)
    builder.create_exp2 = approx(builder.create_exp2, np.exp2)
    builder.create_sqrt = approx(builder.create_sqrt, np.sqrt)
    builder.create_rsqrt = approx(builder.create_rsqrt, lambda x: np.float32(1.0) / np.sqrt(x))


def _patch_dot(interp: Any) -> None:
    """fp32 x fp32 tl.dot as the GPU computes it for each `input_precision` (see the module doc)."""
    import dataclasses
    precision = interp._ir.INPUT_PRECISION
    splits = {getattr(precision, name): spec for name, spec in _SPLIT_DOTS.items() if hasattr(precision, name)}
    orig_dot = interp.InterpreterBuilder.create_dot

    def create_dot(self: Any, a: Any, b: Any, d: Any, input_precision: Any, max_num_imprecise_acc: Any) -> Any:
        spec = splits.get(input_precision)
        if spec is None or a.dtype.scalar.name != "fp32" or b.dtype.scalar.name != "fp32":
            return orig_dot(self, a, b, d, input_precision, max_num_imprecise_acc)
        narrow, parts, products = spec
        a_parts, b_parts = _split(a.data, narrow, parts), _split(b.data, narrow, parts)
        acc = d.data.astype(np.float32)
        for i, j in products:  # smallest terms first, each accumulated in fp32
            acc = np.matmul(a_parts[i], b_parts[j], dtype=np.float32) + acc
        return interp.TensorHandle(acc.astype(d.data.dtype), d.dtype.scalar)

    interp.InterpreterBuilder.create_dot = create_dot
    options = getattr(interp.interpreter_builder, "options", None)
    if dataclasses.is_dataclass(options):  # the GPU's precisions the interpreter's options left out
        allowed = tuple(options.allowed_dot_input_precisions)
        more = tuple(n.lower() for n in _SPLIT_DOTS if hasattr(precision, n) and n.lower() not in allowed)
        interp.interpreter_builder.options = dataclasses.replace(options, allowed_dot_input_precisions=allowed + more)


def set_autotune_choice(index: int | None, bench_runs: int = 0) -> None:
    """Run config `index` (modulo the pruned count; None: config 0) of every autotuned kernel.

    On a key's first launch with that choice, a GPU first benchmarks (pre_hook, run, post_hook
    per config) and then resets `reset_to_zero`; here `bench_runs` such runs of the chosen config
    precede that reset (0: none, the fast default).
    """
    _STATE.choice, _STATE.bench_runs = index, bench_runs


def autotune_config_counts() -> dict[str, int]:
    """Kernel name -> the largest number of configs (after pruning) one of its launches had."""
    return dict(_STATE.counts)


def force_configs(forced: dict[str, int] | None) -> None:
    """Run listed config `index` of kernel `name` (its place in @triton.autotune's list) whatever the
    pruner keeps; kernels not named run as `set_autotune_choice` says."""
    _STATE.forced = dict(forced or {})


def take_sampled() -> list[tuple[int, int]]:
    """Per launch since `install(sample=...)`: (programs run, of them the ones that stored something).

    A sampled launch runs programs in an order drawn from the seed until `sample[0]` of them stored
    something or `sample[1]` were run (with `sample[2]` true, the grid's first axis in turns: a program of
    each of its values, then a second, ...): a GPU workload's exact shapes at the cost of a few programs
    (threat 30: a branch on any combination of the workload's sizes takes the GPU's path). Only what
    those programs wrote can be checked. A kernel that launches twice in one call, or uses an atomic,
    depends on programs that did not run: an InterpreterLimitation (the GPU judges it)."""
    sampled, _STATE.sampled = _STATE.sampled, []
    return sampled


def _sampled_programs(grid: tuple[int, int, int]) -> Iterable[tuple[int, int, int]]:
    want, most, *turns = _STATE.sample
    if _STATE.sampled:
        raise InterpreterLimitation("a second kernel launch in a call whose programs are sampled (the first "
                                    "launch's unsampled programs wrote nothing the second could read)")
    rng = random.Random(_STATE.seed)
    total = grid[0] * grid[1] * grid[2]
    if not (turns and turns[0]):  # a draw from all programs
        picks = [divmod(index, grid[1] * grid[2]) for index in rng.sample(range(total), min(total, most))]
        return _run_sampled(picks, grid, want)
    # the first axis's programs in turns, a drawn one of each of its values (in a drawn order) per turn: a
    # grid over (requests, heads, tiles) reaches every request before a second tile of one, where a draw
    # from all programs lands mostly in the longest request; any other grid is still a draw from all of them
    rest = grid[1] * grid[2]
    firsts = rng.sample(range(grid[0]), min(grid[0], most))
    rounds = -(-most // len(firsts)) if firsts else 0
    orders = [rng.sample(range(rest), min(rest, rounds)) for _ in firsts]
    picks = [(first, order[turn]) for turn in range(rounds) for first, order in zip(firsts, orders)
             if turn < len(order)][:most]
    return _run_sampled(picks, grid, want)


def _run_sampled(picks: list[tuple[int, int]], grid: tuple[int, int, int], want: int) -> Iterable[tuple[int, int, int]]:
    visited = stored = 0
    _STATE.sampled.append((0, 0))
    for first, index in picks:
        before = _RACES.tick
        yield first, index // grid[2], index % grid[2]
        visited += 1
        stored += _RACES.tick != before
        _STATE.sampled[-1] = (visited, stored)
        if stored >= want:
            return


def configs_ran() -> dict[str, list[int]]:
    """Kernel name -> the listed configs interpreted launches ran (-1: one the pruner made up)."""
    return {name: sorted(ran) for name, ran in _STATE.ran.items()}


def take_picked() -> dict[str, list[int]]:
    """Kernel name -> the listed configs the ahead-of-time launches since the last take compiled
    (the pruner's picks for those arguments; -1: a config that is not in the list)."""
    picked, _STATE.picked = _STATE.picked, {}
    return {name: sorted(ran) for name, ran in picked.items()}


def _listed_index(tuner: Any, config: Any) -> int:
    """`config`'s place in the autotuner's list (the same object, else the same values); -1 if none."""
    for i, listed in enumerate(tuner.configs):
        if listed is config:
            return i
    values = config.all_kwargs()
    return next((i for i, listed in enumerate(tuner.configs) if listed.all_kwargs() == values), -1)


def install_aot_autotune() -> None:
    """Ahead-of-time path (no interpreter, no GPU): Autotuner.run launches every config in turn.

    The caller has turned launches into compile-only warmups, so every config gets compiled.
    """
    _patch_autotune("aot")


def as_limitation(exc: BaseException) -> InterpreterLimitation | None:
    """The InterpreterLimitation behind `exc` (its cause/context chain), or one for a known
    interpreter-only failure message; None when the failure may be the kernel's."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, InterpreterLimitation):
            return cur
        here = _raised_in_this_module(cur)
        # kopt's own code failed, not the kernel (the launch's wrapper of the kernel's errors is raised here too)
        if here is not None and not isinstance(cur, (DataRace, KernelError)) and \
                type(cur).__name__ != "InterpreterError":
            return InterpreterLimitation(f"kopt's interpreter support failed ({type(cur).__name__}: {cur}, at "
                                         f"verifier/interp.py:{here})")
        for fragment, what in _KNOWN_FAILURES.items():
            if fragment in str(cur):
                return InterpreterLimitation(what)
        # the interpreter's own code refused what its front end accepted ("mask has unsupported dtype" for a
        # mask and-ed with a scalar; a keyword a patch did not take): its failure, not the kernel's. An
        # assertion there is the kernel's (tl.device_assert, tl.static_assert, a tensor descriptor's alignment)
        if _raised_in_interpreter(cur) and not isinstance(cur, AssertionError):
            return InterpreterLimitation(f"the Triton interpreter failed in its own code ({type(cur).__name__}: "
                                         f"{cur})")
        cur = cur.__cause__ or cur.__context__
    return None


def _raised_in_interpreter(exc: BaseException) -> bool:
    """Whether `exc`'s innermost frame is the upstream interpreter's (triton/runtime/interpreter.py), past its
    kernel-launch wrapper (which re-raises the kernel's own errors as InterpreterError)."""
    tb = exc.__traceback__
    if tb is None or type(exc).__name__ == "InterpreterError":
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    from triton.runtime import interpreter
    return tb.tb_frame.f_code.co_filename == interpreter.__file__


def _raised_in_this_module(exc: BaseException) -> int | None:
    """The line of this file where `exc` was raised (its innermost frame), if it was raised here: a bug in
    kopt's interpreter support is the verifier's failure (an `error`), never charged to the kernel."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_lineno if tb.tb_frame.f_code.co_filename == __file__ else None


def _require(obj: Any, *names: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        import triton
        raise InterpreterLimitation(f"triton {triton.__version__} lacks {', '.join(missing)} of "
                                    f"{getattr(obj, '__name__', obj)} (kopt's interpreter patches)")


# ---- program order and write-back ----

def _programs(grid: tuple[int, int, int]) -> Iterable[tuple[int, int, int]]:
    if _STATE.sample:
        return _sampled_programs(grid)
    axes = [range(n) for n in grid]
    if _STATE.order == "reverse":
        return itertools.product(*(reversed(a) for a in axes))
    if _STATE.order == "shuffle":
        order = list(itertools.product(*axes))
        random.Random(_STATE.seed).shuffle(order)
        return order
    return itertools.product(*axes)  # x outermost, z innermost: the interpreter's own nesting


def _patch_grid(interp: Any) -> None:
    import triton
    builder, executor = interp.interpreter_builder, interp.GridExecutor

    def call(self: Any, *args_dev: Any, **kwargs: Any) -> None:
        spec = inspect.getfullargspec(self.fn)
        kwargs = {k: v for k, v in kwargs.items() if k in spec.args or k in spec.kwonlyargs}
        args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
        for hook in self.pre_run_hooks:
            hook(*args_hst, **kwargs_hst)
        scope = interp._patch_lang(self.fn)
        try:
            args = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
            fixed = getattr(self, "kopt_fixed", frozenset())  # do_not_specialize (from _patch_scalars' run)
            args = {n: a if n in self.constexprs else _scalar_arg(interp, a, n not in fixed) for n, a in args.items()}
            grid = self.grid(args) if callable(self.grid) else self.grid
            assert len(grid) <= 3, "grid must have at most 3 dimensions"
            grid = tuple(grid) + (1, ) * (3 - len(grid))
            builder.set_grid_dim(*grid)
            _RACES.begin(grid)
            try:
                for x, y, z in _programs(grid):
                    _RACES.at(x, y, z)
                    builder.set_grid_idx(x, y, z)
                    self.fn(**args)
                    if _RACES.found is not None:
                        break
            except Exception as e:
                limitation = as_limitation(e)
                if limitation is not None:
                    raise limitation from e
                if triton.knobs.compilation.front_end_debugging:
                    raise
                raise interp.InterpreterError(repr(e)) from e
            if _RACES.found is not None and _RACES.ordered:
                raise InterpreterLimitation(
                    f"{getattr(self.fn, '__name__', 'a kernel')}: {_RACES.found}, after atomics on an address both "
                    "used (a lock or a flag between programs): the interpreter runs programs one after another, so "
                    "it cannot tell a lock or flag that orders these accesses on a GPU from a data race")
            if _RACES.found is not None:
                raise DataRace(f"{getattr(self.fn, '__name__', 'a kernel')}: {_RACES.found}. A GPU runs a launch's "
                               "programs concurrently and in any order (the interpreter ran them one after another): "
                               "give each output element one writing program, combine partial results with "
                               "tl.atomic_* or in a second launch")
        finally:
            scope.restore()
        self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)

    def restore_args_dev(self: Any, args_dev: Any, args_hst: Any, kwargs: Any, kwargs_hst: Any) -> None:
        pairs: dict[int, tuple[Any, Any]] = {}  # device storage address -> (device, host) storage

        def collect(dev: Any, hst: Any) -> None:
            if hasattr(dev, "data_ptr"):
                dev, hst = interp._unwrap_tensor(dev), interp._unwrap_tensor(hst)
                pairs[dev.untyped_storage().data_ptr()] = (dev.untyped_storage(), hst.untyped_storage())
            elif isinstance(dev, tuple):
                for d, h in zip(dev, hst):
                    collect(d, h)
            elif hasattr(dev, "base") and hasattr(dev, "block_shape"):  # a TensorDescriptor
                collect(dev.base, hst.base)

        for dev, hst in zip(args_dev, args_hst):
            collect(dev, hst)
        for key, dev in kwargs.items():
            collect(dev, kwargs_hst[key])
        for dev, hst in pairs.values():
            if dev.data_ptr() != hst.data_ptr():  # same memory (CPU): nothing to copy, maybe read-only
                dev.copy_(hst)

    executor.__call__ = call
    executor._restore_args_dev = restore_args_dev


# ---- scalars: loop variables and arguments typed as the compiled kernel types them ----

RANGE_HOOK = "__kopt_range__"  # (a dunder: the gate refuses the name in a candidate's file, so none defines it)


def _scalar_arg(interp: Any, arg: Any, specialize: bool) -> Any:
    """A launch argument as the compiled kernel sees it (native_specialize_impl): an int equal to 1 is
    the constant 1 unless do_not_specialize names it, one in [2**31, 2**63) int64, the rest as the
    interpreter converts them (bool: u1, other ints: int32 or uint64, floats: fp32, tensors: pointers)."""
    if type(arg) is int:
        if arg == 1 and specialize:
            return 1
        if 2 ** 31 <= arg < 2 ** 63:
            return interp.tl.tensor(interp.TensorHandle(np.array([arg], dtype=np.int64), interp.tl.int64),
                                    interp.tl.int64)
    return interp._implicit_cvt(arg)


def _patch_scalars(interp: Any) -> None:
    import ast
    import builtins
    tl, semantic = interp.tl, interp.interpreter_semantic

    def runtime_range(fn: Any, static: bool, *args: Any, **kwargs: Any) -> Iterable[Any]:
        """`for i in range(...)` / `tl.range(...)`: i as the compiled loop's induction variable, a scalar
        tensor of the bounds' promoted integer type (code_generator.visit_For); anything else as it was."""
        if static or not (fn is builtins.range or fn is getattr(tl, "range", None)):
            yield from fn(*args, **kwargs)
            return
        step = kwargs.get("step", args[2] if len(args) > 2 else 1)
        start, end = (0, args[0]) if len(args) < 2 else (args[0], args[1])
        bounds = [semantic.to_tensor(b.value if isinstance(b, tl.constexpr) else b) for b in (start, end, step)]
        iv = semantic.integer_promote_impl(semantic.integer_promote_impl(bounds[0].dtype, bounds[1].dtype),
                                           bounds[2].dtype)
        np_dtype = interp._get_np_dtype(iv)
        for i in range(*(int(b.handle.data.reshape(-1)[0]) for b in bounds)):
            yield tl.tensor(interp.TensorHandle(np.array([i], dtype=np_dtype), iv), iv)

    class Transformer(interp.ASTTransformer):  # the interpreter's rewrite of every @jit function, plus loops
        def visit_For(self, node: ast.For) -> ast.AST:
            node = self.generic_visit(node)
            call = node.iter
            if isinstance(call, ast.Call):
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                node.iter = ast.copy_location(ast.Call(
                    func=ast.Name(id=RANGE_HOOK, ctx=ast.Load()),
                    args=[call.func, ast.Constant(value=name == "static_range"), *call.args],
                    keywords=call.keywords), call)
            return node

    setattr(interp, RANGE_HOOK, runtime_range)  # the rewrite execs with the interpreter module's globals added
    interp.FunctionRewriter.ast_transformer = Transformer()

    def run(self: Any, *args: Any, grid: Any, warmup: Any, **kwargs: Any) -> Any:
        if warmup:
            return None
        executor = interp.GridExecutor(self.rewrite(), self.arg_names, grid, self.pre_run_hooks)
        fixed = self.kwargs.get("do_not_specialize") or ()
        executor.kopt_fixed = frozenset(self.arg_names[f] if isinstance(f, int) else f for f in fixed)
        return executor(*args, **kwargs)

    interp.InterpretedFunction.run = run


# ---- bf16 ----

def _is_bf16(dtype: Any) -> bool:
    return getattr(dtype, "name", None) == "bf16"  # scalar bf16 only: pointers and blocks differ


def _f64_to_f32_odd(x: np.ndarray) -> np.ndarray:
    """fp64 -> fp32 rounding to odd: a later rounding to bf16 then equals a direct one."""
    f = x.astype(np.float32)
    back = f.astype(np.float64)
    inexact = np.isfinite(x) & (back != x)
    f = np.where(inexact & (np.abs(back) > np.abs(x)), np.nextafter(f, np.float32(0)), f)
    bits = np.where(inexact, f.view(np.uint32) | np.uint32(1), f.view(np.uint32))
    return bits.astype(np.uint32).view(np.float32)


def _bf16_bits(x: np.ndarray, rtz: bool = False) -> np.ndarray:
    """Any float array -> bf16 bit patterns, rounded to nearest even (or toward zero)."""
    x = np.asarray(x)
    x = _f64_to_f32_odd(x) if x.dtype == np.float64 else x.astype(np.float32)
    bits = np.ascontiguousarray(x).view(np.uint32)
    with np.errstate(over="ignore"):
        up = np.uint32(0) if rtz else np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        rounded = ((bits + up) >> np.uint32(16)).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FFF), rounded)  # the canonical NaN of a GPU's cvt


def _saturating_int(x: np.ndarray, to: np.dtype) -> np.ndarray:
    """Float -> 32/64-bit integer as a GPU converts (cvt.rzi): toward zero, saturating at the type's
    range, NaN to 0. numpy wraps out-of-range values (often to INT_MIN): a kernel could tell the two apart."""
    info = np.iinfo(to)
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    hi, lo = float(info.max), float(info.min)  # for 64 bits hi rounds up to 2**63: saturate at >= hi
    inside = np.clip(np.trunc(x), lo, np.nextafter(hi, 0.0)).astype(to)
    return np.where(x >= hi, to.type(info.max), np.where(x <= lo, to.type(info.min), inside)).astype(to)


def _bf16_widen(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _patch_bf16(interp: Any) -> None:
    import triton.language as tl
    Handle, builder_cls, native = interp.TensorHandle, interp.InterpreterBuilder, interp._interpreter
    names = _BUILDER_PATCHED
    orig = {name: getattr(builder_cls, name) for name in names}
    orig_np_dtype, orig_validate, orig_post_init = interp._get_np_dtype, interp._validate_np_data_size, \
        Handle.__post_init__
    rtz = interp._ir.ROUNDING_MODE.RTZ

    def np_dtype(tt: Any) -> np.dtype:
        scalar = tt.element_ty if isinstance(tt, tl.block_type) else tt
        return np.dtype(np.float32) if _is_bf16(scalar) else orig_np_dtype(tt)

    def validate(data: np.ndarray, tt: Any) -> bool:
        return data.itemsize <= 4 if _is_bf16(tt) else orig_validate(data, tt)

    def post_init(self: Any) -> None:
        # Invariant: bf16 float data is bf16-representable fp32; uint16 data (the interpreter's own
        # representation) is taken as bit patterns; bool data (comparison results) is left alone.
        if _is_bf16(self.dtype):
            data = np.asarray(self.data)
            if data.dtype.kind == "f":
                self.data = _bf16_widen(_bf16_bits(data))
            elif data.dtype == np.uint16:
                self.data = _bf16_widen(data)
        orig_post_init(self)

    def cast_impl(self: Any, src: Any, dst_type: Any) -> Any:
        dst = dst_type.scalar
        if src.data.dtype.kind == "f" and not _is_bf16(dst):
            to = orig_np_dtype(dst)
            if to.kind in "iu" and to.itemsize >= 4:  # fptosi/fptoui: a GPU's cvt.rzi saturates, NaN -> 0
                return Handle(_saturating_int(src.data, to), dst)
        if _is_bf16(dst):  # integers via fp64 (exact to 2^53), then one rounding in post_init
            data = src.data.astype(np.float64) if src.data.dtype.kind in "iub" else src.data
            return Handle(data, dst)
        if _is_bf16(src.dtype.scalar):  # bf16 values are exact in fp32: widen, or fptosi-truncate
            return Handle(src.data.astype(orig_np_dtype(dst)), dst)
        return orig["cast_impl"](self, src, dst_type)

    def fp_to_fp(self: Any, src: Any, dst_type: Any, rounding_mode: Any) -> Any:
        s, d = src.dtype.scalar, dst_type.scalar
        if _is_bf16(d):
            data = src.data if s.primitive_bitwidth >= 16 else orig["create_fp_to_fp"](
                self, src, tl.float32, rounding_mode).data  # fp8 -> fp32 is exact
            return Handle(_bf16_bits(data, rtz=rounding_mode == rtz), d)
        if _is_bf16(s):
            if rounding_mode != rtz and d.name in ("fp16", "fp32", "fp64"):
                return Handle(src.data.astype(orig_np_dtype(d)), d)
            return orig["create_fp_to_fp"](self, Handle(src.data, tl.float32), dst_type, rounding_mode)
        return orig["create_fp_to_fp"](self, src, dst_type, rounding_mode)

    def bitcast(self: Any, src: Any, dst_type: Any) -> Any:
        s, d = src.dtype.scalar, dst_type.scalar
        if _is_bf16(s) and _is_bf16(d):
            return Handle(src.data, d)
        if _is_bf16(d):
            return Handle(src.data.view(np.uint16), d)
        if _is_bf16(s):
            return Handle(_bf16_bits(src.data).view(orig_np_dtype(d)), d)
        return orig["create_bitcast"](self, src, dst_type)

    def as_bool(mask: Any) -> Any:  # a block mask and-ed with a scalar condition has int32 data in the interpreter
        # (its type says int1, and it compiles to an i1 mask), which its native load and store refuse
        if mask is None or mask.data.dtype == np.bool_:
            return mask
        return Handle(mask.data != 0, tl.int1)

    def masked_load(self: Any, ptrs: Any, mask: Any, other: Any, *rest: Any, **kw: Any) -> Any:
        # (a tensor descriptor's load passes cache_policy and is_volatile by keyword)
        mask = as_bool(mask)
        bf16 = _is_bf16(ptrs.get_element_ty())
        _RACES.load(ptrs.data, mask.data, 2 if bf16 else np.dtype(orig_np_dtype(ptrs.get_element_ty())).itemsize)
        if not bf16:
            return orig["create_masked_load"](self, ptrs, mask, other, *rest, **kw)
        fill = np.zeros(ptrs.data.shape, np.uint16) if other is None else _bf16_bits(other.data)
        return Handle(native.load(ptrs.data, mask.data, fill, np.dtype(np.uint16)), tl.bfloat16)

    def read(addrs: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return native.load(addrs, np.ones(addrs.shape, bool), np.zeros(addrs.shape, dtype), dtype)

    def masked_store(self: Any, ptrs: Any, value: Any, mask: Any, *rest: Any, **kw: Any) -> Any:
        mask = as_bool(mask)
        if not _is_bf16(ptrs.get_element_ty()):
            _RACES.store(ptrs.data, mask.data, value.data, read)
            return orig["create_masked_store"](self, ptrs, value, mask, *rest, **kw)
        bits = _bf16_bits(value.data)
        _RACES.store(ptrs.data, mask.data, bits, read)
        return native.store(ptrs.data, bits, mask.data)

    def fabs(self: Any, arg: Any) -> Any:
        return Handle(np.abs(arg.data), arg.dtype.scalar) if _is_bf16(arg.dtype) else orig["create_fabs"](self, arg)

    def fma(self: Any, x: Any, y: Any, z: Any) -> Any:
        if not _is_bf16(z.dtype.scalar):
            return orig["create_fma"](self, x, y, z)
        # bf16 x bf16 is exact in fp64 and the fp64 add rounds innocuously: one rounding to bf16.
        return Handle(x.data.astype(np.float64) * y.data + z.data.astype(np.float64), z.dtype.scalar)

    def atomic(name: str) -> Callable[..., Any]:
        def run(self: Any, *args: Any) -> Any:
            if any(_is_bf16(getattr(a, "dtype", None)) for a in args):
                raise InterpreterLimitation(f"{name} on bfloat16")
            _no_atomics_when_sampled()
            if name == "create_atomic_rmw":  # (op, ptr, val, mask, sem, scope)
                op = "xchg" if getattr(args[0], "name", str(args[0])).endswith("XCHG") else "rmw"
                values = np.asarray(args[2].data)
                _RACES.atomic(args[1].data, args[3].data, op, values, values.dtype.itemsize)
            else:  # create_atomic_cas (ptr, cmp, val, sem, scope)
                _RACES.atomic(args[0].data, None, "cas", None, np.asarray(args[1].data).dtype.itemsize)
            return orig[name](self, *args)
        return run

    def inline_asm(self: Any, *args: Any) -> Any:
        raise InterpreterLimitation("tl.inline_asm_elementwise")

    interp._get_np_dtype, interp._validate_np_data_size = np_dtype, validate
    # bf16 constants (`x * 1.5` on bf16 x) round once from the Python float, as the compiler does
    # (3.9 rounds through fp32; 3.6 lacks get_bf16)
    builder_cls.get_bf16 = lambda self, value: Handle(np.array([value], np.float64), tl.bfloat16)
    Handle.__post_init__ = post_init
    for name, fn in zip(names, (cast_impl, fp_to_fp, bitcast, masked_load, masked_store, fabs, fma,
                                atomic("create_atomic_rmw"), atomic("create_atomic_cas"), inline_asm)):
        setattr(builder_cls, name, fn)
    for name in ("create_atomic_load", "create_atomic_store"):  # (3.9) plain loads and stores inside: atomic
        if hasattr(builder_cls, name):
            setattr(builder_cls, name, _atomic_access(getattr(builder_cls, name)))


def _no_atomics_when_sampled() -> None:
    if _STATE.sample:  # (what an atomic returns depends on the programs that did not run)
        raise InterpreterLimitation("an atomic in a launch whose programs are sampled")


def _atomic_access(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, *args: Any) -> Any:
        _no_atomics_when_sampled()
        _RACES.atomic_depth += 1
        try:
            return original(self, *args)
        finally:
            _RACES.atomic_depth -= 1
    return run


# ---- libdevice ----

def _ufunc(fn: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """Float math: fp32 arguments are evaluated in fp64, then rounded to the result dtype (for fma
    that is one rounding: an fp32 product is exact in fp64, and 53 >= 2 * 24 + 2 bits)."""
    def run(*xs: np.ndarray) -> np.ndarray:
        wide = [x.astype(np.float64) if x.dtype.kind == "f" and x.itemsize < 8 else x for x in xs]
        with np.errstate(all="ignore"):
            return np.asarray(fn(*wide))
    return run


def _view(dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x.view(dtype)  # bit reinterpretations (float_as_int and the like)


_erf, _lgamma, _tgamma = (np.vectorize(f, otypes=[np.float64]) for f in (math.erf, math.lgamma, math.gamma))
_bits = {"float_as_int": np.int32, "float_as_uint": np.uint32, "int_as_float": np.float32,
         "uint_as_float": np.float32, "double_as_longlong": np.int64, "longlong_as_double": np.float64}
_NUMPY = {name: name for name in ("tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "cbrt",
                                   "sin", "cos", "tan", "sinh", "cosh", "floor", "ceil", "trunc", "rint", "hypot",
                                   "fmod", "copysign", "ldexp", "isnan", "isinf", "signbit")}
_NUMPY.update(asin="arcsin", acos="arccos", atan="arctan", asinh="arcsinh", acosh="arccosh", atanh="arctanh",
              atan2="arctan2", pow="power", sqrt_rn="sqrt", nearbyint="rint", div_rn="divide", add_rn="add",
              sub_rn="subtract", mul_rn="multiply", fast_dividef="divide", scalbn="ldexp", isfinited="isfinite",
              finitef="isfinite", abs="abs", fast_powf="power",
              **{f"fast_{n}f": n for n in ("exp", "log", "log2", "log10", "sin", "cos", "tan", "tanh")})
_LIBDEVICE: dict[str, Callable[..., np.ndarray]] = {
    **{name: _ufunc(getattr(np, fn)) for name, fn in _NUMPY.items()},
    **{name: _ufunc(fn) for name, fn in {
        "exp10": lambda x: 10.0 ** x, "fast_exp10f": lambda x: 10.0 ** x, "rsqrt": lambda x: 1.0 / np.sqrt(x),
        "rsqrt_rn": lambda x: 1.0 / np.sqrt(x), "rcp_rn": lambda x: 1.0 / x, "rcbrt": lambda x: 1.0 / np.cbrt(x),
        "sinpi": lambda x: np.sin(np.pi * x), "cospi": lambda x: np.cos(np.pi * x), "erf": _erf,
        "erfc": lambda x: 1.0 - _erf(x), "lgamma": _lgamma, "tgamma": _tgamma,
        "normcdf": lambda x: 0.5 * (1.0 + _erf(x / math.sqrt(2.0))),
        "round": lambda x: np.copysign(np.floor(np.abs(x) + 0.5), x), "saturatef": lambda x: np.clip(x, 0.0, 1.0),
        "fdim": lambda x, y: np.maximum(x - y, 0.0), "fma": lambda x, y, z: x * y + z,
        "fma_rn": lambda x, y, z: x * y + z, **{f"{t}2{u}_rn": lambda x: x for t, u in (
            ("double", "float"), ("int", "float"), ("uint", "float"), ("ll", "float"), ("ll", "double"),
            ("int", "double"), ("uint", "double"))},
    }.items()},
    **{f"{src}2{dst}_{mode}": _ufunc(fn) for src in ("float", "double")  # float -> integer
       for dst in ("int", "uint", "ll", "ull") for mode, fn in
       (("rn", np.rint), ("rz", np.trunc), ("rd", np.floor), ("ru", np.ceil))},
    **{name: _view(t) for name, t in _bits.items()},
    "nextafter": lambda x, y: np.nextafter(x, y),
    "popc": lambda x: np.array([(int(v) & (2**(8 * x.itemsize) - 1)).bit_count() for v in x.flat]).reshape(x.shape),
}


def _libdevice_result(symbol: str, args: list[Any], ret_type: Any, interp: Any) -> Any:
    name = _STATE.calling[-1] if _STATE.calling else symbol
    impl = _LIBDEVICE.get(name)
    if impl is None:
        raise InterpreterLimitation(f"libdevice.{name} ({symbol})")
    ret = ret_type.scalar
    return interp.TensorHandle(impl(*(a.data for a in args)).astype(interp._get_np_dtype(ret)), ret)


def _patch_libdevice(interp: Any) -> None:
    import triton.language as tl
    modules = [importlib.import_module(path) for path in _LIBDEVICE_MODULES]
    semantic, builder, orig_patch_lang = interp.interpreter_semantic, interp.interpreter_builder, interp._patch_lang

    def implementation(module: Any, name: str) -> Callable[..., Any]:
        # The stub module's calls go to a backend's (CUDA first), as the compiler maps them.
        owners = [module] + [m for m in modules if m is not module]
        real = next((getattr(m, name) for m in owners if tl.core.is_builtin(getattr(m, name, None))), None)

        def run(*args: Any, **kwargs: Any) -> Any:
            if real is None:
                raise InterpreterLimitation(f"libdevice.{name} (no backend defines it)")
            _STATE.calling.append(name)
            try:
                return real(*args, **{**kwargs, "_semantic": semantic})
            finally:
                _STATE.calling.pop()
        return run

    replacements: dict[tuple[Any, str], Callable[..., Any]] = {}
    originals: dict[int, tuple[Any, str, Any]] = {}  # id of a libdevice function -> (module, name, it)
    for m in modules:
        for n, f in list(vars(m).items()):
            if inspect.isfunction(f) and f.__module__ == m.__name__ and not n.startswith("_"):
                replacements[(m, n)], originals[id(f)] = implementation(m, n), (m, n, f)

    launches: list[dict[str, Any]] = []  # the launch in progress: the langs patched, globals swapped, its scope

    def patch_lang(fn: Any) -> Any:
        langs = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        launch = launches[-1] if launches else None
        if launch is not None and langs <= launch["langs"]:
            # A device function called inside a launch (the interpreter re-patches every module on
            # each such call, a third of a call's time, and never restores that scope): the modules
            # are patched already; only its module's globals may still need the libdevice swap.
            if id(fn.__globals__) not in launch["globals"]:
                launch["globals"].add(id(fn.__globals__))
                swap_globals(fn, launch["scope"])
            return interp._LangPatchScope()
        scope = orig_patch_lang(fn)
        interp._patch_builtin(tl.math, builder, scope)  # tl.math also when imported on its own
        # 3.6 calls int() on a 1-element array, which numpy 2 refuses (3.9 squeezes it first)
        scope.set_attr(tl.core.tensor, "__index__", lambda self: int(np.asarray(self.handle.data).squeeze()))
        for (m, n), replacement in replacements.items():
            scope.set_attr(m, n, replacement)
        swap_globals(fn, scope)
        if launch is not None:
            # a device function seeing a module the launch did not patch (tl.core in triton's own
            # tl.max, tl.sum ...): patched until the launch ends, undone before the launch's own
            launch["langs"] |= langs
            launch["globals"].add(id(fn.__globals__))
            outer_restore = launch["scope"].restore

            def restore_both() -> None:
                scope.restore()
                outer_restore()
            launch["scope"].restore = restore_both
            return interp._LangPatchScope()
        launches.append({"langs": langs, "globals": {id(fn.__globals__)}, "scope": scope})
        restore = scope.restore

        def restore_launch() -> None:
            launches.pop()
            restore()
        scope.restore = restore_launch
        return scope

    def swap_globals(fn: Any, scope: Any) -> None:
        """`from libdevice import tanh` in fn's module: the replacement until `scope` is restored."""
        swapped = {k: v for k, v in fn.__globals__.items() if id(v) in originals}
        fn.__globals__.update({k: replacements[originals[id(v)][:2]] for k, v in swapped.items()})
        restore = scope.restore

        def restore_all() -> None:
            fn.__globals__.update(swapped)
            restore()
        scope.restore = restore_all

    def extern_elementwise(self: Any, lib: Any, path: Any, symbol: str, args: list[Any], ret: Any,
                           pure: Any) -> Any:
        return _libdevice_result(symbol, args, ret, interp)

    interp._patch_lang = patch_lang
    interp.InterpreterBuilder.create_extern_elementwise = extern_elementwise


# ---- autotune ----

def _patch_autotune(mode: str) -> None:
    from triton import knobs
    from triton.runtime import autotuner
    _require(autotuner.Autotuner, "run", "prune_configs")  # again: install_aot_autotune comes here directly
    _STATE.autotune_mode = mode
    if "autotune" in _STATE.patched:
        return
    orig_run = autotuner.Autotuner.run

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        interpreting = knobs.runtime.interpret
        if (_STATE.autotune_mode == "interp") != bool(interpreting):
            return orig_run(self, *args, **kwargs)
        self.nargs = dict(zip(self.arg_names, args))
        try:
            configs = list(self.prune_configs(kwargs)) if len(self.configs) > 1 else list(self.configs)
            name = self.base_fn.__name__
            _STATE.counts[name] = max(_STATE.counts.get(name, 0), len(configs))
            for config in configs:
                conflicts = kwargs.keys() & config.kwargs.keys()
                if conflicts:
                    raise KernelError(f"Conflicting meta-parameters: {', '.join(conflicts)}."
                                     " Make sure that you don't re-define auto-tuned symbols.")
            if not interpreting:  # ahead of time: every launch compiles one config
                ret = None
                for config in configs:
                    _STATE.picked.setdefault(name, set()).add(_listed_index(self, config))
                    full = {**self.nargs, **kwargs, **config.all_kwargs()}
                    if config.pre_hook is not None:
                        config.pre_hook(full)  # may shape the arguments (descriptor block shapes)
                    ret = self.fn.run(*args, **kwargs, **config.all_kwargs())
                return ret
            forced = _STATE.forced.get(name)
            if forced is not None:  # a listed config, whatever the pruner keeps for these arguments
                config, tuning = self.configs[forced % len(self.configs)], ("listed", forced)
                if config.kwargs.keys() & kwargs.keys():
                    raise KernelError("Conflicting meta-parameters: "
                                     f"{', '.join(config.kwargs.keys() & kwargs.keys())}.")
            else:
                tuning = (_STATE.choice or 0) % len(configs)
                config = configs[tuning]
            _STATE.ran.setdefault(name, set()).add(_listed_index(self, config))
            full = {**self.nargs, **kwargs, **config.all_kwargs()}
            if len(configs) > 1 or forced is not None:
                _tune(self, args, kwargs, tuning, config, full)
            self.best_config = config
            if config.pre_hook is not None:
                config.pre_hook(full)
            return self.fn.run(*args, **kwargs, **config.all_kwargs())
        finally:
            self.nargs = None

    autotuner.Autotuner.run = run
    _STATE.patched.add("autotune")


def _tune(tuner: Any, args: tuple[Any, ...], kwargs: dict[str, Any], index: Any, config: Any,
          full: dict[str, Any]) -> None:
    """What a GPU's first launch for a tuning key leaves behind, without timing anything."""
    named = {k: v for k, v in {**tuner.nargs, **kwargs}.items() if k in tuner.arg_names}
    key = [named[k] for k in tuner.keys if k in named]
    key += [str(v.dtype) for v in named.values() if hasattr(v, "dtype")]
    tuned = tuner.__dict__.setdefault("_kopt_tuned", {})
    if tuned.get(tuple(key)) == index:
        return
    tuned[tuple(key)] = index
    for _ in range(_STATE.bench_runs):  # as Autotuner._bench's kernel_call
        if config.pre_hook is not None:
            config.pre_hook(full)
        tuner.pre_hook(full)
        try:
            tuner.fn.run(*args, **kwargs, **config.all_kwargs())
        except Exception as e:
            tuner.post_hook(full, exception=e)
            raise
        tuner.post_hook(full, exception=None)
    tuner.pre_hook(full, reset_only=True)
