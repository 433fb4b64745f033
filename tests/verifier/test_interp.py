"""kopt.verifier.interp on the real Triton interpreter.

TRITON_INTERPRET is read when a kernel module is imported, so each check runs a snippet in a
fresh `python` with TRITON_INTERPRET=1; the snippet prints one JSON line that the test reads.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kopt.verifier.interp import InterpreterLimitation, as_limitation, install

REPO = Path(__file__).resolve().parents[2]
PRELUDE = """
import json, math, mmap, os, sys, tempfile, warnings
import numpy as np, torch, triton, triton.language as tl
from kopt.verifier import interp
"""


def run_snippet(*parts: str, interpret: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + parts (each dedented on its own) as a script (@triton.jit reads its source)."""
    env = {**os.environ, "TRITON_INTERPRET": "1" if interpret else "0", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "snippet.py"
        script.write_text(PRELUDE + "".join(textwrap.dedent(part) for part in parts))
        return subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)


def run_json(*parts: str, interpret: bool = True) -> Any:
    done = run_snippet(*parts, interpret=interpret)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bad_order_and_known_failures_without_a_subprocess():
    with pytest.raises(ValueError):
        install(order="sideways")
    assert isinstance(as_limitation(RuntimeError("0 active drivers ([]). There should only be one.")),
                      InterpreterLimitation)
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = InterpreterLimitation("libdevice.j0")
    assert "not a fault of the kernel" in str(as_limitation(wrapped))
    assert as_limitation(ValueError("index out of range")) is None


def test_program_order_forward_reverse_and_seeded_shuffle():
    got = run_json("""
        interp.install()
        call = triton.runtime.interpreter.GridExecutor.__call__
        @triton.jit
        def record(counter, order):
            t = tl.atomic_add(counter, 1)
            pid = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
            tl.store(order + t, pid)
        def run(grid):
            counter, order = torch.zeros(1, dtype=torch.int32), torch.full((12,), -1, dtype=torch.int32)
            record[grid](counter, order)
            return order.tolist()
        out = {"forward": run((4, 3))}
        for order, seed in (("reverse", 0), ("shuffle", 1), ("shuffle", 1), ("shuffle", 2)):
            interp.install(order, seed)
            out[f"{order}{seed}" + ("b" if f"{order}{seed}" in out else "")] = run((4, 3))
        out["same_patch"] = triton.runtime.interpreter.GridExecutor.__call__ is call
        print(json.dumps(out))
    """)
    assert got["forward"] == list(range(12))
    assert got["reverse0"] == list(range(12))[::-1]
    assert sorted(got["shuffle1"]) == list(range(12)) and got["shuffle1"] != got["forward"]
    assert got["shuffle1"] == got["shuffle1b"] and got["shuffle2"] != got["shuffle1"]
    assert got["same_patch"]  # install() again changed the order, not the patch


READ_ONLY = """
    interp.install()
    x = np.arange(64, dtype=np.float32)
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(x.tobytes())
    with open(f.name, "rb") as f:
        region = mmap.mmap(f.fileno(), x.nbytes, prot=mmap.PROT_READ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the buffer is not writable
        ro = torch.frombuffer(region, dtype=torch.float32)
    @triton.jit
    def double(src, dst, N: tl.constexpr):
        o = tl.program_id(0) * N + tl.arange(0, N)
        tl.store(dst + o, 2 * tl.load(src + o))
"""


def test_kernel_reading_read_only_memory_runs_and_writing_it_faults():
    got = run_json(READ_ONLY, """
        copies = []
        copy = torch.UntypedStorage.copy_
        torch.UntypedStorage.copy_ = lambda self, src, *a: copies.append(1) or copy(self, src, *a)
        out = torch.zeros(64)
        double[(4,)](ro, out, 16)
        launched_copies = len(copies)
        dev, hst = torch.zeros(4), torch.arange(4.0)  # distinct memory, as with a real device
        triton.runtime.interpreter.GridExecutor._restore_args_dev(None, (dev,), (hst,), {}, {})
        print(json.dumps({"out": out.tolist(), "copies": launched_copies, "dev": dev.tolist()}))
    """)
    assert got["out"] == [2.0 * i for i in range(64)]
    assert got["copies"] == 0  # host and device storage are the same memory: no self-copy
    assert got["dev"] == [0.0, 1.0, 2.0, 3.0]  # different memory is still written back
    done = run_snippet(READ_ONLY, """
        double[(4,)](torch.ones(64), ro, 16)
        print("survived")
    """)
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stderr[-2000:])


def test_bf16_loads_arithmetic_casts_and_stores_round_like_a_gpu():
    got = run_json("""
        interp.install()
        @triton.jit
        def ops(a, b, c, x, out, acc, N: tl.constexpr):
            r = tl.arange(0, N)
            tile = r[:, None] * N + r[None, :]
            A, B, C = tl.load(a + tile), tl.load(b + tile), tl.load(c + tile)
            X = tl.load(x + tile)  # fp32
            tl.store(out + 0 * N * N + tile, A + B)
            tl.store(out + 1 * N * N + tile, A * B * 1.5)
            tl.store(out + 2 * N * N + tile, tl.maximum(A, B))
            tl.store(out + 3 * N * N + tile, tl.where(A > 0, A - B, C))
            tl.store(out + 4 * N * N + tile, X.to(tl.bfloat16))
            tl.store(out + 5 * N * N + tile, (X * 3.0).to(tl.bfloat16) + A)
            tl.store(out + 6 * N * N + tile, tl.exp(A.to(tl.float32)).to(tl.bfloat16))
            tl.store(out + 7 * N * N + tile, tl.abs(A))
            tl.store(out + 8 * N * N + tile, tl.fma(A, B, C))
            tl.store(out + 9 * N * N + tile, (A.to(tl.int16, bitcast=True) ^ 1).to(tl.bfloat16, bitcast=True))
            tl.store(acc + tile, tl.dot(A, B) + A.to(tl.float32))
        N = 16
        g = torch.Generator().manual_seed(0)
        a, b, c = (torch.randn(N, N, generator=g).bfloat16() for _ in range(3))
        x = torch.randn(N, N, generator=g) * 100
        bits = x.view(torch.int32)
        bits[:2] = (bits[:2] & ~0xFFFF) | 0x8000  # exact ties: round to even
        x[2, :3] = torch.tensor([float("inf"), float("nan"), 3.4e38])
        out = torch.empty(10, N, N, dtype=torch.bfloat16)
        acc = torch.empty(N, N)
        ops[(1,)](a, b, c, x, out, acc, N)
        f, r = (lambda t: t.float()), (lambda t: t.to(torch.bfloat16))
        want = [r(f(a) + f(b)), r(f(r(f(a) * f(b))) * 1.5), torch.maximum(a, b),
                torch.where(a > 0, r(f(a) - f(b)), c), r(x), r(f(r(x * 3.0)) + f(a)), r(torch.exp(f(a))),
                a.abs(), r(a.double() * b.double() + c.double()), (a.view(torch.int16) ^ 1).view(torch.bfloat16)]
        ulps = [(o.view(torch.int16).int() - w.view(torch.int16).int())[~w.isnan()].abs().max().item()
                + 1000 * (o.isnan() != w.isnan()).sum().item() for o, w in zip(out, want)]
        nan_kept = bool(torch.isnan(out[4, 2, 1]))
        dot_err = ((acc - (f(a) @ f(b) + f(a))).abs().max() / (f(a) @ f(b)).abs().max()).item()
        print(json.dumps({"ulps": ulps, "nan": nan_kept, "dot": dot_err, "inf": out[4, 2, 2].item()}))
    """)
    ulps = got["ulps"]
    assert ulps[:6] == [0] * 6 and ulps[7:] == [0] * 3, ulps  # bit-exact
    assert ulps[6] <= 1, ulps  # exp: numpy's and torch's fp32 exp may differ in the last fp32 bit
    assert got["nan"] and got["inf"] == float("inf")  # 3.4e38 rounds up past bf16's largest finite
    assert got["dot"] < 1e-6  # fp32 accumulation of exact bf16 products


def test_bf16_flash_attention_baseline_matches_fp64_like_a_gpu():
    got = run_json("""
        import importlib.util
        interp.install()
        def load(name):
            spec = importlib.util.spec_from_file_location(name, f"kernels/extend_attention/{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        baseline, reference = load("baseline"), load("reference")
        case = {"heads": [2, 1], "head_dim": 64, "requests": [[40, 24], [0, 20]], "logit_cap": 20.0}
        errors = {}
        for seed in (0, 1):
            inputs = reference.make_inputs(case, torch.bfloat16, seed)
            names = list(inputs)
            baseline.extend_attention_fwd(*(inputs[n] for n in names[:13]), **{n: inputs[n] for n in names[13:]})
            want = reference.reference(inputs)["o_extend"]
            got = inputs["o_extend"].double()
            errors[seed] = ((got - want).norm() / want.norm()).item()
        print(json.dumps(errors))
    """)
    for seed, rel_l2 in got.items():
        assert 1e-4 < rel_l2 < 4e-3, (seed, rel_l2)  # bf16's 8-bit mantissa: ~2e-3 on a GPU too


LIBDEVICE_KERNEL = """
    interp.install()
    from triton.language.extra import libdevice
    from triton.language.extra.cuda import libdevice as cuda_libdevice
    from triton.language.extra.libdevice import tanh as imported_tanh
    NAMES = ["tanh", "exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "rsqrt", "pow", "erf",
             "fast_expf", "fast_logf", "fma", "floor", "ceil", "div_rn", "isnan", "isinf", "cuda_tanh",
             "imported_tanh", "math_exp", "math_div_rn", "math_rsqrt", "math_erf", "math_fma", "math_sqrt_rn"]
    @triton.jit
    def apply(x, y, out, N: tl.constexpr, F: tl.constexpr):
        o = tl.arange(0, N)
        v, w = tl.load(x + o), tl.load(y + o)
        if F == 0: r = libdevice.tanh(v)
        if F == 1: r = libdevice.exp(v)
        if F == 2: r = libdevice.exp2(v)
        if F == 3: r = libdevice.expm1(v)
        if F == 4: r = libdevice.log(w)
        if F == 5: r = libdevice.log2(w)
        if F == 6: r = libdevice.log1p(w)
        if F == 7: r = libdevice.sqrt(w)
        if F == 8: r = libdevice.rsqrt(w)
        if F == 9: r = libdevice.pow(w, v)
        if F == 10: r = libdevice.erf(v)
        if F == 11: r = libdevice.fast_expf(v)
        if F == 12: r = libdevice.fast_logf(w)
        if F == 13: r = libdevice.fma(v, w, v)
        if F == 14: r = libdevice.floor(v)
        if F == 15: r = libdevice.ceil(v)
        if F == 16: r = libdevice.div_rn(v, w)
        if F == 17: r = libdevice.isnan(v / 0.0 * 0.0).to(tl.float32)
        if F == 18: r = libdevice.isinf(v / 0.0).to(tl.float32)
        if F == 19: r = cuda_libdevice.tanh(v)
        if F == 20: r = imported_tanh(v)
        if F == 21: r = tl.math.exp(v)
        if F == 22: r = tl.math.div_rn(v, w)
        if F == 23: r = tl.math.rsqrt(w)
        if F == 24: r = tl.math.erf(v)
        if F == 25: r = tl.math.fma(v, w, v)
        if F == 26: r = tl.math.sqrt_rn(w)
        if F == 27: r = libdevice.j0(v)
        tl.store(out + o, r)
"""


def test_libdevice_and_math_functions_match_fp64_references():
    got = run_json(LIBDEVICE_KERNEL, """
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, generator=g) * 2
        y = torch.rand(64, generator=g) * 4 + 0.1
        X, Y = x.double(), y.double()
        want = [X.tanh(), X.exp(), torch.exp2(X), X.expm1(), Y.log(), Y.log2(), Y.log1p(), Y.sqrt(), Y.rsqrt(),
                Y.pow(X), torch.erf(X), X.exp(), Y.log(), X * Y + X, X.floor(), X.ceil(), X / Y,
                torch.ones(64), torch.ones(64), X.tanh(), X.tanh(), X.exp(), X / Y, Y.rsqrt(), torch.erf(X),
                X * Y + X, Y.sqrt()]
        err = {}
        for f, (name, w) in enumerate(zip(NAMES, want)):
            out = torch.full((64,), float("nan"))
            apply[(1,)](x, y, out, 64, f)
            err[name] = ((out.double() - w).abs() / w.abs().clamp_min(1e-30)).max().item()
        try:
            apply[(1,)](x, y, out, 64, 27)
            err["j0"] = "ran"
        except interp.InterpreterLimitation as e:
            err["j0"] = str(e)
        print(json.dumps(err))
    """)
    limitation = got.pop("j0")
    assert "libdevice.j0" in limitation and "not a fault of the kernel" in limitation
    bad = {name: e for name, e in got.items() if not e <= 2.5e-7}  # within ~2 fp32 ulps
    assert not bad, bad


AUTOTUNED = """
    interp.install()
    seen = []
    @triton.autotune(configs=[triton.Config({"BLOCK": 4}, pre_hook=lambda a: seen.append("cfg0")),
                              triton.Config({"BLOCK": 8})],
                     key=["n"], reset_to_zero=["acc"], post_hook=lambda a, exception: seen.append("post"))
    @triton.jit
    def tiled(x, acc, blocks, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        o = pid * BLOCK + tl.arange(0, BLOCK)
        tl.atomic_add(acc + o, tl.load(x + o, mask=o < n), mask=o < n)
        tl.store(blocks + pid, BLOCK)
    @triton.heuristics({"BLOCK": lambda args: triton.next_power_of_2(args["n"])})
    @triton.jit
    def whole(x, blocks, n, BLOCK: tl.constexpr):
        tl.store(blocks, BLOCK)
    def launch(n=16, start=5.0):
        x, acc, blocks = torch.ones(n), torch.full((n,), start), torch.zeros(8, dtype=torch.int32)
        tiled[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, acc, blocks, n)
        return {"acc": acc.tolist(), "blocks": blocks.tolist()}
"""


def test_autotune_runs_the_chosen_config_with_reset_and_hooks():
    got = run_json(AUTOTUNED, """
        out = {}
        for choice in (None, 1, 3, 0):
            interp.set_autotune_choice(choice)
            out[str(choice)] = launch()
        out["again"] = launch()  # same key, same choice: no second reset, as after a GPU's tuning
        interp.set_autotune_choice(1, bench_runs=1)
        out["bench"] = launch(n=12)  # new key: one emulated benchmark run, then the reset
        out["counts"], out["seen"] = interp.autotune_config_counts(), seen
        blocks = torch.zeros(8, dtype=torch.int32)
        whole[(1,)](torch.ones(5), blocks, 5)
        out["heuristic"] = blocks[0].item()
        print(json.dumps(out))
    """)
    assert got["None"]["blocks"] == [4, 4, 4, 4, 0, 0, 0, 0] and got["None"]["acc"] == [1.0] * 16
    assert got["1"]["blocks"] == [8, 8, 0, 0, 0, 0, 0, 0] and got["1"]["acc"] == [1.0] * 16
    assert got["3"]["blocks"] == got["1"]["blocks"]  # index modulo the number of configs ...
    assert got["3"]["acc"] == [6.0] * 16  # ... the same config for the same key: tuned once, no reset
    assert got["0"]["blocks"][:4] == [4] * 4 and got["0"]["acc"] == [1.0] * 16  # choice changed: reset again
    assert got["again"]["acc"] == [6.0] * 16  # no reset: the 5.0 it started with stays
    assert got["bench"]["acc"] == [1.0] * 12 and got["bench"]["blocks"][:2] == [8, 8]
    assert got["counts"] == {"tiled": 2}
    assert got["seen"] == ["cfg0", "cfg0", "cfg0", "post"]  # config 0's pre_hook on its runs; post after bench
    assert got["heuristic"] == 8


def test_autotune_pruning_and_the_ahead_of_time_path():
    got = run_json("""
        from triton.runtime.autotuner import Autotuner
        interp.install_aot_autotune()
        @triton.jit
        def kernel(x, n, BLOCK: tl.constexpr):
            pass
        configs = [triton.Config({"BLOCK": b}, pre_hook=lambda a, b=b: hooked.append(b)) for b in (16, 32, 64)]
        hooked, launched = [], []
        tuner = Autotuner(kernel, kernel.arg_names, configs, key=["n"], reset_to_zero=None, restore_value=None,
                          prune_configs_by={"early_config_prune": lambda cs, nargs, **kw: cs[:2]})
        tuner.fn = type("Compile", (), {"run": lambda self, *a, **kw: launched.append(kw["BLOCK"])})()
        tuner.run(torch.ones(4), 4, grid=(1,))
        picked = interp.take_picked()  # the listed configs the pruner kept for these arguments
        made_up = Autotuner(kernel, kernel.arg_names, configs, key=["n"], reset_to_zero=None, restore_value=None,
                            prune_configs_by={"early_config_prune": lambda cs, nargs, **kw: [
                                cs[2], triton.Config({"BLOCK": 128})]})
        made_up.fn = tuner.fn
        made_up.run(torch.ones(4), 5, grid=(1,))
        print(json.dumps({"launched": launched, "hooked": hooked, "counts": interp.autotune_config_counts(),
                          "picked": picked, "made_up": interp.take_picked(), "taken": interp.take_picked()}))
    """, interpret=False)
    assert got == {"launched": [16, 32, 64, 128], "hooked": [16, 32, 64], "counts": {"kernel": 2},
                   "picked": {"kernel": [0, 1]}, "made_up": {"kernel": [-1, 2]}, "taken": {}}


def test_a_listed_config_is_forced_past_the_pruner():
    """What the CPU checker does with a config the pruner gives only GPU workloads: it runs it on a case."""
    got = run_json("""
        interp.install()
        @triton.autotune(configs=[triton.Config({"BLOCK": 4}), triton.Config({"BLOCK": 8})], key=["n"],
                         prune_configs_by={"early_config_prune": lambda cs, nargs, **kw: cs[:1]})
        @triton.jit
        def tiled(x, blocks, n, BLOCK: tl.constexpr):
            pid = tl.program_id(0)
            tl.store(blocks + pid, BLOCK)
        def launch():
            blocks = torch.zeros(4, dtype=torch.int32)
            tiled[lambda meta: (triton.cdiv(16, meta["BLOCK"]),)](torch.ones(16), blocks, 16)
            return blocks.tolist()
        out = {"pruned": launch(), "ran": interp.configs_ran()}
        interp.force_configs({"tiled": 1})
        out["forced"] = launch()
        interp.force_configs({"other": 1})  # another kernel named: this one runs as the pruner says
        out["others"], out["ran_after"] = launch(), interp.configs_ran()
        print(json.dumps(out))
    """)
    assert got["pruned"] == [4, 4, 4, 4] and got["ran"] == {"tiled": [0]}
    assert got["forced"] == [8, 8, 0, 0] and got["others"] == [4, 4, 4, 4]
    assert got["ran_after"] == {"tiled": [0, 1]}


HELPER_MODULE = """
import triton
import triton.language.core as core
from triton.language.extra.libdevice import tanh

@triton.jit
def inner(v):
    return core.maximum(tanh(v), v * 0.0)

@triton.jit
def outer(v):
    return inner(v) + inner(v * 2.0)
"""


def test_device_functions_in_other_modules_are_patched_once_per_launch_and_restored_after():
    """A device function called inside a launch reuses the launch's patched modules (the
    interpreter re-patched them on every call: a third of a call's time); one whose module sees
    a module the launch did not patch (tl.core, `from libdevice import tanh`) gets it patched
    until the launch ends; after it nothing of triton's modules or the callers' globals stays
    patched (the interpreter left tl.core patched for good)."""
    got = run_json(f"HELPER_MODULE = {HELPER_MODULE!r}\n", """
        interp.install()
        helper_dir = tempfile.mkdtemp()
        with open(os.path.join(helper_dir, "helper_mod.py"), "w") as f:
            f.write(HELPER_MODULE)
        sys.path.insert(0, helper_dir)
        import helper_mod
        from triton.language.extra import libdevice

        @triton.jit
        def kernel(x, out, N: tl.constexpr):
            o = tl.arange(0, N)
            v = tl.load(x + o)
            acc = tl.zeros([N], dtype=tl.float32)
            for _ in range(3):
                acc += helper_mod.outer(v)
            tl.store(out + o, acc + tl.max(v, axis=0))

        def snapshot():
            mods = [tl, tl.core, tl.math, tl.core.tensor, libdevice]
            return {f"{m.__name__}.{n}": id(v) for m in mods for n, v in vars(m).items()} | \\
                   {f"helper.{n}": id(v) for n, v in vars(helper_mod).items()}
        before = snapshot()
        x = torch.linspace(-2, 2, 16)
        out = torch.empty(16)
        kernel[(1,)](x, out, 16)
        kernel[(2,)](x, out, 16)
        want = 3 * ((x.tanh().clamp_min(0)) + (2 * x).tanh().clamp_min(0)) + x.max()
        after = snapshot()  # (names the interpreter adds to a module when it rewrites a function are no patch)
        changed = sorted(k for k, v in before.items() if after.get(k) != v)
        print(json.dumps({"err": (out - want).abs().max().item(), "changed": changed,
                          "tanh_restored": helper_mod.tanh is libdevice.tanh}))
    """)
    assert got["err"] < 1e-6
    assert got["changed"] == [] and got["tanh_restored"]


def test_int32_arithmetic_wraps_as_on_a_gpu_without_the_dropped_overflow_checks():
    """Without debug the interpreter dropped its int32 overflow asserts after computing them in
    int64; install() stops computing them (a fifth of a call's time): int32 still wraps as a
    GPU's does, and with debug on the checks stay."""
    got = run_json("""
        from triton.runtime import interpreter as I
        interp.install()
        @triton.jit
        def wrap(x, out):
            v = tl.load(x)
            tl.store(out, v * 65536 + 7)
        x, out = torch.tensor([40000], dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
        wrap[(1,)](x, out)
        print(json.dumps({"value": out.item(), "sanitize": I.interpreter_builder.options.sanitize_overflow}))
    """)
    assert got == {"value": (40000 * 65536 + 7 + 2**31) % 2**32 - 2**31, "sanitize": False}
    kept = run_json("""
        import dataclasses
        from triton.runtime import interpreter as I
        I.interpreter_builder.options = dataclasses.replace(I.interpreter_builder.options, debug=True)
        interp.install()
        print(json.dumps({"sanitize": I.interpreter_builder.options.sanitize_overflow}))
    """)
    assert kept == {"sanitize": True}


def test_fp32_dots_run_at_the_precision_the_gpu_uses():
    """The interpreter multiplied fp32 operands in full fp32 whatever input_precision said, so TF32
    (the NVIDIA default) passed on CPU and failed on a GPU. Each precision now runs as the GPU
    computes it: TF32 is exactly the fp32 product of operands rounded to 10 mantissa bits, the
    split precisions are near-fp32, and ieee is plain fp32; fp16 dots are untouched."""
    got = run_json("""
        interp.install()
        @triton.jit
        def dot(a, b, out, PREC: tl.constexpr, N: tl.constexpr):
            r = tl.arange(0, N)
            t = r[:, None] * N + r[None, :]
            A, B = tl.load(a + t), tl.load(b + t)
            if PREC == "default":
                tl.store(out + t, tl.dot(A, B))
            else:
                tl.store(out + t, tl.dot(A, B, input_precision=PREC))
        def tf32(x):  # round to nearest even at 10 mantissa bits, independently of the patch
            bits = x.view(torch.int32).long()
            bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
            return (((bits + 2**31) % 2**32) - 2**31).int().view(torch.float32)
        N = 32
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(N, N, generator=g), torch.randn(N, N, generator=g)
        exact = a.double() @ b.double()
        res = {}
        for prec in ["ieee", "tf32", "tf32x3", "bf16x3", "bf16x6", "default"]:
            out = torch.empty(N, N)
            dot[(1,)](a, b, out, prec, N)
            res[prec] = float((out.double() - exact).norm() / exact.norm())
        out = torch.empty(N, N)
        dot[(1,)](a, b, out, "tf32", N)
        res["tf32_is_rounded_operands"] = float((out.double() - tf32(a).double() @ tf32(b).double()).abs().max())
        h = torch.empty(N, N)
        dot[(1,)](a.half(), b.half(), h, "tf32", N)
        res["fp16"] = float((h.double() - a.half().double() @ b.half().double()).abs().max())
        print(json.dumps(res))
    """)
    assert got["ieee"] < 1e-6 and got["tf32x3"] < 1e-6 and got["bf16x6"] < 1e-6, got
    assert 1e-4 < got["tf32"] < 2e-3 and got["default"] == got["tf32"], got  # the default is TF32
    assert 1e-6 < got["bf16x3"] < 1e-4, got  # two bf16 parts: 16 bits of each operand
    assert got["tf32_is_rounded_operands"] < 1e-5, got
    assert got["fp16"] < 1e-5, got


def test_float_to_int_conversions_saturate_as_on_a_gpu():
    """numpy wrapped out-of-range conversions (1e12 -> INT_MIN), a GPU's cvt.rzi saturates and sends NaN
    to 0: a kernel could branch on the difference and take a cheap path only on the GPU."""
    got = run_json("""
        interp.install()
        @triton.jit
        def conv(x, o32, o64, ou, N: tl.constexpr):
            r = tl.arange(0, N)
            v = tl.load(x + r)
            tl.store(o32 + r, v.to(tl.int32))
            tl.store(o64 + r, v.to(tl.int64))
            tl.store(ou + r, v.to(tl.uint32))
        x = torch.tensor([1e12, -1e12, float("nan"), -2.7, 2.7, float("inf"), -float("inf"), 3e9])
        res = {}
        for dt in (torch.float32, torch.bfloat16):
            a, b = torch.empty(8, dtype=torch.int32), torch.empty(8, dtype=torch.int64)
            c = torch.empty(8, dtype=torch.uint32)
            conv[(1,)](x.to(dt), a, b, c, 8)
            res[str(dt)] = [a.tolist(), b.tolist(), c.tolist()]
        print(json.dumps(res))
    """)
    i32, i64, u32 = got["torch.float32"]
    assert i32 == [2**31 - 1, -2**31, 0, -2, 2, 2**31 - 1, -2**31, 2**31 - 1]
    assert i64[2:7] == [0, -2, 2, 2**63 - 1, -2**63] and i64[7] == 3000000000
    assert u32 == [2**32 - 1, 0, 0, 0, 2, 2**32 - 1, 0, 3000000000]
    assert got["torch.bfloat16"][0] == i32


def test_an_fp32_product_and_a_sum_contract_into_one_fma_as_a_gpu_compiles_them():
    """The GPU compiler fuses `a * b - c` (and `a * b + c`, `c - a * b`) into fma.rn.f32, the product never
    rounded on its own; the interpreter rounded it: `x * x - c` with c = x * x was 0 there and the rounding
    residual on a GPU (an independent panel's probe took a cheap path where it was not 0). Now each form is
    the fp64 sum of the exact product, rounded once, and a product nobody adds stays the fp32 product."""
    got = run_json("""
        interp.install()
        @triton.jit
        def fused(x, y, r, s, t, p, N: tl.constexpr):
            o = tl.arange(0, N)
            a, b = tl.load(x + o), tl.load(y + o)
            c = a * b
            tl.store(r + o, a * b - c)
            tl.store(s + o, 1.0 - a * b)
            tl.store(t + o, a * b + b)
            tl.store(p + o, c)
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(1024, generator=g) + 0.5, torch.rand(1024, generator=g) + 0.5
        r, s, t, p = (torch.empty(1024) for _ in range(4))
        fused[(1,)](x, y, r, s, t, p, 1024)
        xd, yd = x.double(), y.double()
        prod = (xd * yd).float()
        print(json.dumps({"residual": bool((r == (xd * yd - prod.double()).float()).all()),
                          "nonzero": int((r != 0).sum()),
                          "sub": bool((s == (1 - xd * yd).float()).all()),
                          "add": bool((t == (xd * yd + yd).float()).all()),
                          "product": bool((p == x * y).all())}))
    """)
    assert got["residual"] and got["nonzero"] > 500, got
    assert got["sub"] and got["add"] and got["product"], got


def test_a_splatted_expanded_or_broadcast_product_still_contracts_and_a_transposed_one_does_not():
    """The product's copies in registers (a scalar splatted over a block, `[:, None]`, a broadcast to the
    sum's shape) are still one FMA on a GPU: `(a * b)[:, None] - c` told the interpreter apart once it fused
    only a product the sum took directly. A transpose is left unfused (it may go through shared memory)."""
    got = run_json("""
        interp.install()
        @triton.jit
        def copies(x, y, c, r, s, t, N: tl.constexpr):
            o = tl.arange(0, N)
            a, b = tl.load(x + o), tl.load(y + o)
            two = o[:, None] * 2 + tl.arange(0, 2)[None, :]
            tl.store(r + two, (a * b)[:, None] - tl.load(c + two))  # expand, then broadcast to [N, 2]
            sa, sb = tl.load(x), tl.load(y)
            tl.store(s + o, sa * sb - tl.load(c))  # a scalar product splatted over [N]
            sq = o[:, None] * N + o[None, :]
            prod = a[:, None] * b[None, :]
            tl.store(t + sq, tl.trans(prod) - tl.trans(tl.load(c + 2 * N + sq)))
        g = torch.Generator().manual_seed(1)
        n = 64
        x, y = torch.rand(n, generator=g) + 0.5, torch.rand(n, generator=g) + 0.5
        prod = x * y
        outer = x[:, None] * y[None, :]
        c = torch.cat([prod.repeat_interleave(2), outer.flatten()])
        c[0] = c[1] = float(prod[0])
        r, s, t = torch.empty(n, 2), torch.empty(n), torch.empty(n, n)
        copies[(1,)](x, y, c, r, s, t, n)
        residual = ((x.double() * y.double()) - prod.double()).float()
        print(json.dumps({"expanded": bool((r == residual[:, None]).all()), "nonzero": int((residual != 0).sum()),
                          "splat": bool((s == residual[0]).all()), "transposed": bool((t == 0).all())}))
    """)
    assert got["nonzero"] > 30 and got["expanded"] and got["splat"] and got["transposed"], got


def test_fp32_division_is_the_gpus_approximate_one_and_div_rn_stays_exact():
    """Triton emits div.full.f32 for fp32 `/` on NVIDIA (an approximate quotient, up to 2 ulp off), while the
    interpreter divided exactly: comparing x / y with tl.math.div_rn(x, y) told the two apart (an independent
    panel's probe took a cheap path only where they differed). Now `/` is a reciprocal then a product, each
    rounded to fp32, as the GPU's is: not always the correctly rounded quotient, always within 2 ulp."""
    got = run_json("""
        interp.install()
        @triton.jit
        def div(x, y, q, r, N: tl.constexpr):
            o = tl.arange(0, N)
            a, b = tl.load(x + o), tl.load(y + o)
            tl.store(q + o, a / b)
            tl.store(r + o, tl.math.div_rn(a, b))
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(1024, generator=g) + 0.5, torch.rand(1024, generator=g) + 0.5
        y[0] = 2.0 ** 127  # the range div.full scales for
        q, r = torch.empty(1024), torch.empty(1024)
        div[(1,)](x, y, q, r, 1024)
        exact = (x.double() / y.double()).float()
        ulp = (q.double() - exact.double()).abs() / torch.finfo(torch.float32).eps / exact.double().abs()
        print(json.dumps({"differ": int((q != r).sum()), "rn_exact": bool((r == exact).all()),
                          "max_ulp": float(ulp.max()), "big": float(q[0] / exact[0])}))
    """)
    assert got["differ"] > 50 and got["rn_exact"], got
    assert got["max_ulp"] <= 2.0 and abs(got["big"] - 1) < 1e-6, got


OUTCOME = """
def outcome(fn):
    try:
        fn()
        return "ok"
    except interp.DataRace as exc:
        return "race: " + str(exc)
    except interp.InterpreterLimitation as exc:
        return "limitation: " + str(exc)
    except Exception as exc:  # the interpreter wraps a kernel's failure
        cause = exc.__cause__ or exc.__context__
        return ("race: " if isinstance(cause, interp.DataRace) else type(exc).__name__ + ": ") + str(cause or exc)
"""

RACES = """
    interp.install()

    @triton.jit
    def merge(X, O, N: tl.constexpr):  # every program adds its part into O: a non-atomic merge
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        tl.store(O + offs, tl.load(O + offs) + tl.load(X + pid * N + offs))

    @triton.jit
    def own_rows(X, O, N: tl.constexpr):  # each program reads and writes its own rows only
        pid = tl.program_id(0)
        offs = pid * N + tl.arange(0, N)
        tl.store(O + offs, tl.load(X + offs) * 2.0)
        tl.store(O + offs, tl.load(O + offs) + 1.0)  # its own store read back: no race

    @triton.jit
    def atomic_merge(X, O, N: tl.constexpr):
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        tl.atomic_add(O + offs, tl.load(X + pid * N + offs))

    @triton.jit
    def same_value(O, N: tl.constexpr, BY_PID: tl.constexpr):  # every program writes the first N elements
        offs = tl.arange(0, N)
        value = tl.program_id(0).to(tl.float32) if BY_PID else 7.0
        tl.store(O + offs, tl.zeros([N], tl.float32) + value)

    @triton.jit
    def flag_then_read(S, FLAG, O, N: tl.constexpr, SYNC: tl.constexpr):
        # program 0 writes scratch and raises a flag; program 1 reads the scratch
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        if pid == 0:
            tl.store(S + offs, offs.to(tl.float32))
            if SYNC:
                tl.atomic_xchg(FLAG, 1)
        else:
            if SYNC:
                tl.atomic_add(FLAG, 0)  # (a spin on the flag, which the earlier program has set)
            tl.store(O + offs, tl.load(S + offs))

    @triton.jit
    def dummy_atomics(X, O, DUMMY, N: tl.constexpr):  # the cheat: atomics that order nothing, then `merge`
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        tl.atomic_add(DUMMY, 0)
        tl.store(O + offs, tl.load(O + offs) + tl.load(X + pid * N + offs))
        tl.atomic_add(DUMMY, 0)

    @triton.jit
    def locked_sum(X, O, LOCK, N: tl.constexpr):  # Triton's layer-norm backward tutorial: a spin lock
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        while tl.atomic_cas(LOCK, 0, 1) == 1:
            pass
        tl.store(O + offs, tl.load(O + offs) + tl.load(X + pid * N + offs))
        tl.atomic_xchg(LOCK, 0)

    @triton.jit
    def atomic_reads(X, O, N: tl.constexpr):  # the merge with atomic reads: the store is still plain
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        tl.store(O + offs, tl.atomic_add(O + offs, tl.zeros([N], tl.float32)) + tl.load(X + pid * N + offs))

    @triton.jit
    def xchg(O, N: tl.constexpr):  # fp32 atomic_xchg: a GPU runs it, the interpreter cannot
        tl.atomic_xchg(O + tl.arange(0, N), tl.zeros([N], tl.float32))

    @triton.jit
    def produce(S, N: tl.constexpr):
        tl.store(S + tl.program_id(0) * N + tl.arange(0, N), tl.program_id(0).to(tl.float32))

    @triton.jit
    def consume(S, O, N: tl.constexpr):  # reads what every program of the earlier launch wrote
        offs = tl.arange(0, N)
        acc = tl.zeros([N], tl.float32)
        for p in range(4):
            acc += tl.load(S + p * N + offs)
        tl.store(O + tl.program_id(0) * N + offs, acc)


    x, o = torch.randn(4 * 16), torch.zeros(4 * 16)
    s, flag = torch.zeros(4 * 16), torch.zeros(1, dtype=torch.int32)
    got = {
        "merge": outcome(lambda: merge[(4,)](x, o, N=16)),
        "own_rows": outcome(lambda: own_rows[(4,)](x, o, N=16)),
        "atomic_merge": outcome(lambda: atomic_merge[(4,)](x, o, N=16)),
        "same_value": outcome(lambda: same_value[(4,)](o, N=16, BY_PID=False)),
        "by_pid": outcome(lambda: same_value[(4,)](o, N=16, BY_PID=True)),
        "flag_unsynced": outcome(lambda: flag_then_read[(2,)](s, flag, o, N=16, SYNC=False)),
        "flag_synced": outcome(lambda: flag_then_read[(2,)](s, flag, o, N=16, SYNC=True)),
        "two_launches": outcome(lambda: (produce[(4,)](s, N=16), consume[(4,)](s, o, N=16))),
        "atomic_reads": outcome(lambda: atomic_reads[(4,)](x, o, N=16)),
        "xchg": outcome(lambda: xchg[(1,)](o, N=16)),
        "dummy_atomics": outcome(lambda: dummy_atomics[(4,)](x, o, flag, N=16)),
        "locked_sum": outcome(lambda: locked_sum[(4,)](x, o, torch.zeros(1, dtype=torch.int32), N=16)),
    }
    interp.install(order="reverse")
    got["merge_reverse"] = outcome(lambda: merge[(4,)](x, o, N=16))
    print(json.dumps(got))
"""


def test_races_between_programs_of_one_launch_are_found_and_atomics_and_own_rows_are_not():
    """The interpreter runs a launch's programs one after another, so a non-atomic merge of partials
    (the cheat: an order a GPU never promises) gave the right sum; now each plain load and store is
    checked against what other programs of the launch wrote. Honest patterns pass: each program on
    its own rows, atomics, identical values, a second launch reading the first's. Accesses ordered by atomics
    on a common address (a lock, a flag; or the cheat's atomics that order nothing: one after another, the
    interpreter cannot tell them apart) are an interpreter limitation, for a GPU to judge: never `ok`."""
    got = run_json(OUTCOME, RACES)
    for name in ("merge", "merge_reverse", "by_pid", "flag_unsynced"):
        assert got[name].startswith("race: "), (name, got[name])
        assert "same launch" in got[name] and "A GPU runs a launch's programs concurrently" in got[name]
    assert "merge: program (1, 0, 0) read 16 element(s) that program (0, 0, 0) wrote" in got["merge"]
    assert "program (2, 0, 0) read 16 element(s) that program (3, 0, 0) wrote" in got["merge_reverse"]
    assert "overwrote 16 element(s)" in got["by_pid"] and "with other values" in got["by_pid"]
    assert got["atomic_reads"].startswith("race: ") and "updated atomically 16 element(s)" in got["atomic_reads"]
    assert got["xchg"].startswith("limitation: this atomic on this dtype"), got["xchg"]
    for name in ("flag_synced", "dummy_atomics", "locked_sum"):
        assert got[name].startswith("limitation: "), (name, got[name])
        assert "cannot tell a lock or flag" in got[name] and "not a fault of the kernel" in got[name]
    for name in ("own_rows", "atomic_merge", "same_value", "two_launches"):
        assert got[name] == "ok", (name, got[name])


ATOMIC_PAIRS_AND_WIDTHS = """
    interp.install()
    PAIRS = hasattr(tl, "atomic_load")  # (3.9; 3.6 has no tl.atomic_load or tl.atomic_store)

    @triton.jit
    def last_xchg_wins(O, N: tl.constexpr):  # every program exchanges in its own id: the last one stays
        tl.atomic_xchg(O + tl.arange(0, N), tl.zeros([N], tl.int32) + tl.program_id(0))

    @triton.jit
    def release_lock(O, LOCK, N: tl.constexpr):  # every program exchanges in the same value: a lock's release
        while tl.atomic_cas(LOCK, 0, 1) == 1:
            pass
        tl.store(O + tl.program_id(0) * N + tl.arange(0, N), tl.program_id(0).to(tl.float32))
        tl.atomic_xchg(LOCK, 0)

    @triton.jit
    def wide_then_narrow(W, H, O, N: tl.constexpr):  # program 1 reads the high halves of program 0's int32s
        offs = tl.arange(0, N)
        if tl.program_id(0) == 0:
            tl.store(W + offs, offs + 65536 * 3)
        else:
            tl.store(O + N + offs, tl.load(H + 2 * offs + 1).to(tl.float32))

    @triton.jit
    def narrow_over_wide(W, H, N: tl.constexpr):  # program 1 overwrites the low halves of program 0's int32s
        offs = tl.arange(0, N)
        if tl.program_id(0) == 0:
            tl.store(W + offs, offs)
        else:
            tl.store(H + 2 * offs, tl.zeros([N], tl.int16) + 5)

    @triton.jit
    def two_widths_own_rows(X, O, H, N: tl.constexpr):  # fp32 and int16 stores, each program on its own rows
        offs = tl.program_id(0) * N + tl.arange(0, N)
        tl.store(O + offs, tl.load(X + offs) * 2.0)
        tl.store(H + offs, offs.to(tl.int16))
        tl.store(O + offs, tl.load(O + offs) + tl.load(H + offs).to(tl.float32))

    @triton.jit
    def plain_read_of_atomic_sum(X, S, O, N: tl.constexpr):  # the cheat: a plain read of a sum others add to
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        if pid == 0:
            tl.atomic_add(S + offs, tl.load(X + offs))
        else:
            tl.store(O + pid * N + offs, tl.load(S + offs))

    @triton.jit
    def plain_store_over_atomic(C):  # the cheat: a reset while other programs may still be counting
        if tl.program_id(0) == 1:
            tl.store(C, 0)
        else:
            tl.atomic_add(C, 1)

    @triton.jit
    def ticket_reset(C):  # the last to take a ticket resets the counter: right on a GPU, for it to judge
        if tl.atomic_add(C, 1) == tl.num_programs(0) - 1:
            tl.store(C, 0)

    @triton.jit
    def last_block_sums(X, S, C, O, N: tl.constexpr):  # honest on a GPU: the last to arrive reads the sum
        pid = tl.program_id(0)
        offs = tl.arange(0, N)
        tl.atomic_add(S + offs, tl.load(X + pid * N + offs))
        if tl.atomic_add(C, 1) == tl.num_programs(0) - 1:
            tl.store(O + offs, tl.load(S + offs))
            tl.store(C, 0)

    @triton.jit
    def own_atomic_then_plain(S, N: tl.constexpr):  # each program adds to and reads its own rows: honest
        offs = tl.program_id(0) * N + tl.arange(0, N)
        tl.atomic_add(S + offs, tl.zeros([N], tl.float32) + 1.0)
        tl.store(S + offs, tl.load(S + offs) * 2.0)

    if PAIRS:
        @triton.jit
        def two_atomic_rmw(X, O, N: tl.constexpr):  # the cheat: a merge from an atomic load and an atomic store
            offs = tl.arange(0, N)
            tl.atomic_store(O + offs, tl.atomic_load(O + offs) + tl.load(X + tl.program_id(0) * N + offs))

        @triton.jit
        def load_then_add(X, O, N: tl.constexpr):  # a running max from an atomic load and an add of the rise
            offs = tl.arange(0, N)
            old = tl.atomic_load(O + offs)
            tl.atomic_add(O + offs, tl.maximum(old, tl.load(X + tl.program_id(0) * N + offs)) - old)

        @triton.jit
        def last_store_wins(O, N: tl.constexpr):
            tl.atomic_store(O + tl.arange(0, N), tl.zeros([N], tl.int32) + tl.program_id(0))

        @triton.jit
        def done_flag(FLAG, O, N: tl.constexpr):  # every program stores the same flag value: honest
            tl.store(O + tl.program_id(0) * N + tl.arange(0, N), tl.program_id(0).to(tl.float32))
            tl.atomic_store(FLAG, 1)

        @triton.jit
        def cas_increment(C):  # an atomic load, then compare-and-swap until it holds: honest
            old = tl.atomic_load(C)
            while tl.atomic_cas(C, old, old + 1) != old:
                old = tl.atomic_load(C)

        @triton.jit
        def wait_for_flag(FLAG, C):  # an atomic load of a flag, then an atomic add elsewhere: honest
            tl.atomic_load(FLAG)
            tl.atomic_add(C, 1)

        @triton.jit
        def turnstile(T, O, N: tl.constexpr):  # each program waits for its turn, then passes it on: a GPU's to judge
            pid = tl.program_id(0)
            while tl.atomic_load(T) != pid:
                pass
            tl.store(O + pid * N + tl.arange(0, N), pid.to(tl.float32))
            tl.atomic_add(T, 1)

        @triton.jit
        def locked_pair(C, LOCK):  # the pair under a spin lock: right on a GPU, for a GPU to judge
            while tl.atomic_cas(LOCK, 0, 1) == 1:
                pass
            tl.atomic_store(C, tl.atomic_load(C) + 1)
            tl.atomic_xchg(LOCK, 0)


    def i32(n=1):
        return torch.zeros(n, dtype=torch.int32)

    x, o = torch.randn(4 * 16), torch.zeros(4 * 16)
    w = i32(16)
    got = {
        "pairs": PAIRS,
        "last_xchg_wins": outcome(lambda: last_xchg_wins[(4,)](i32(16), N=16)),
        "release_lock": outcome(lambda: release_lock[(4,)](o, i32(), N=16)),
        "wide_then_narrow": outcome(lambda: wide_then_narrow[(2,)](w, w.view(torch.int16), o, N=16)),
        "narrow_over_wide": outcome(lambda: narrow_over_wide[(2,)](w, w.view(torch.int16), N=16)),
        "two_widths_own_rows": outcome(
            lambda: two_widths_own_rows[(4,)](x, o, torch.zeros(64, dtype=torch.int16), N=16)),
        "plain_read_of_atomic_sum": outcome(lambda: plain_read_of_atomic_sum[(4,)](x, torch.zeros(16), o, N=16)),
        "plain_store_over_atomic": outcome(lambda: plain_store_over_atomic[(4,)](i32())),
        "ticket_reset": outcome(lambda: ticket_reset[(4,)](i32())),
        "last_block_sums": outcome(lambda: last_block_sums[(4,)](x, torch.zeros(16), i32(), o, N=16)),
        "own_atomic_then_plain": outcome(lambda: own_atomic_then_plain[(4,)](torch.zeros(64), N=16)),
    }
    if PAIRS:
        got.update({
            "two_atomic_rmw": outcome(lambda: two_atomic_rmw[(4,)](x, torch.zeros(16), N=16)),
            "load_then_add": outcome(lambda: load_then_add[(4,)](x, torch.zeros(16), N=16)),
            "last_store_wins": outcome(lambda: last_store_wins[(4,)](i32(16), N=16)),
            "done_flag": outcome(lambda: done_flag[(4,)](i32(), o, N=16)),
            "cas_increment": outcome(lambda: cas_increment[(4,)](i32())),
            "wait_for_flag": outcome(lambda: wait_for_flag[(4,)](i32(), i32())),
            "locked_pair": outcome(lambda: locked_pair[(4,)](i32(), i32())),
            "turnstile": outcome(lambda: turnstile[(4,)](i32(), o, N=16)),
        })
        c = i32()
        cas_increment[(4,)](c)
        got["cas_count"] = int(c[0])
    print(json.dumps(got))
"""


def test_read_modify_writes_from_two_atomics_and_overlaps_of_other_widths_are_races():
    """Gaps of the race check that docs/threats.md listed. A read-modify-write built from
    tl.atomic_load and tl.atomic_store (or an add of a difference computed from an atomic load) is two
    atomics, not one: run one program after another it gave the right merge, on a GPU updates are lost.
    And elements were keyed by their first byte, so an int32 one program stored and another read as
    int16 halves (or partly overwrote) was not seen. Honest patterns pass: a flag every program stores
    with the same value, an atomic load then compare-and-swap until it holds, a lock's release, stores of
    two widths each on the program's own rows. The pair under a lock, and a load then an add (a turnstile
    does that honestly, and one program after another it looks like the cheat), are for a GPU to judge.
    A plain read or store of an element another program wrote atomically is a race too (a sum read while
    others still add, a counter reset while others count), and a program's plainly reading its own atomic
    rows is not; the last program to arrive by a counter reading the sum is for a GPU to judge."""
    got = run_json(OUTCOME, ATOMIC_PAIRS_AND_WIDTHS)
    hint = "A GPU runs a launch's programs concurrently"
    assert got["wide_then_narrow"].startswith("race: ") and hint in got["wide_then_narrow"], got
    assert "program (1, 0, 0) read 16 element(s) that program (0, 0, 0) wrote" in got["wide_then_narrow"]
    assert "partly overwrote 16 element(s)" in got["narrow_over_wide"] and hint in got["narrow_over_wide"], got
    assert "atomically overwrote 16 element(s)" in got["last_xchg_wins"], got
    assert "the last store wins" in got["last_xchg_wins"]
    for name in ("release_lock", "two_widths_own_rows", "own_atomic_then_plain"):
        assert got[name] == "ok", (name, got[name])
    # a plain access of what another program wrote atomically: the atomic orders nothing for it
    assert got["plain_read_of_atomic_sum"].startswith("race: "), got
    assert "program (1, 0, 0) read 16 element(s) that program (0, 0, 0) wrote atomically" in \
        got["plain_read_of_atomic_sum"], got
    assert "program (1, 0, 0) overwrote 1 element(s) that program (0, 0, 0) wrote atomically" in \
        got["plain_store_over_atomic"] and got["plain_store_over_atomic"].startswith("race: "), got
    # the last program to arrive (by a counter every program updates) reads the sum or resets the counter:
    # right on a GPU, and one program after another it looks like atomics that order nothing
    for name in ("last_block_sums", "ticket_reset"):
        assert got[name].startswith("limitation: "), (name, got[name])
        assert "wrote atomically" in got[name] and "cannot tell a lock or flag" in got[name], (name, got[name])
    import triton.language as tl
    assert got["pairs"] == hasattr(tl, "atomic_load")
    if not got["pairs"]:
        return
    assert got["two_atomic_rmw"].startswith("race: ") and hint in got["two_atomic_rmw"], got
    assert "the read and the update are two atomics, not one" in got["two_atomic_rmw"], got
    for name in ("load_then_add", "turnstile"):  # the cheat and an honest turnstile look alike: never ok
        assert got[name].startswith("limitation: ") and "two atomics, not one" in got[name], (name, got[name])
        assert "cannot tell a lock or flag" in got[name], (name, got[name])
    assert "atomically overwrote 16 element(s)" in got["last_store_wins"], got
    for name in ("done_flag", "cas_increment", "wait_for_flag"):
        assert got[name] == "ok", (name, got[name])
    assert got["cas_count"] == 4
    assert got["locked_pair"].startswith("limitation: ") and "cannot tell a lock or flag" in got["locked_pair"]


def test_a_failure_of_kopts_own_interpreter_support_is_an_error_never_the_kernels():
    """An independent panel's kernel was rejected with `TypeError("_Races.load() missing 1 required positional
    argument")`: kopt's own patch failed inside the interpreter and the failure was charged to the kernel. An
    exception raised in verifier/interp.py itself (other than a DataRace) is now an interpreter limitation, an
    `error` that says it is not the kernel's fault; the kernel's own errors stay the kernel's."""
    got = run_json("""
        interp.install()

        @triton.jit
        def copy(X, O, N: tl.constexpr):
            offs = tl.arange(0, N)
            tl.store(O + offs, tl.load(X + offs))

        @triton.jit
        def bad_shape(X, O, N: tl.constexpr):  # the kernel's own error: a block shape that is not a power of 2
            tl.store(O + tl.arange(0, N), tl.load(X + tl.arange(0, N)))

        def outcome(fn):
            try:
                fn()
                return "ok"
            except Exception as exc:
                limitation = interp.as_limitation(exc)
                return ("limitation: " + str(limitation)) if limitation else ("kernel: " + type(exc).__name__)

        x, o = torch.randn(16), torch.zeros(16)
        got = {"before": outcome(lambda: copy[(1,)](x, o, N=16)), "kernel": outcome(lambda: bad_shape[(1,)](x, o, N=12))}
        interp._RACES.load = lambda ptrs, mask: None  # kopt's bug: a call with an argument it lacks
        got["broken"] = outcome(lambda: copy[(1,)](x, o, N=16))
        print(json.dumps(got))
    """)
    assert got["before"] == "ok" and got["kernel"].startswith("kernel: "), got
    assert got["broken"].startswith("limitation: kopt's interpreter support failed (TypeError"), got
    assert "verifier/interp.py:" in got["broken"] and "not a fault of the kernel" in got["broken"], got


SAMPLED = """
    interp.install()

    @triton.jit
    def rows(X, O, N: tl.constexpr):  # programs past the data store nothing
        pid = tl.program_id(0)
        if pid < 6:
            tl.store(O + pid * N + tl.arange(0, N), tl.load(X + pid * N + tl.arange(0, N)) * 2.0)

    @triton.jit
    def nothing(X):
        if tl.program_id(0) < 0:
            tl.store(X, 1.0)

    @triton.jit
    def count(C):
        tl.atomic_add(C, 1)

    @triton.jit
    def tiles(O, N: tl.constexpr):  # a grid over (requests, tiles): every program stores
        at = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        tl.store(O + at * N + tl.arange(0, N), tl.full((N,), 1.0, tl.float32))

    x = torch.randn(64 * 16)
    got = {}
    for seed in range(3):
        o = torch.full((64 * 16,), float("nan"))
        interp.install(order="shuffle", seed=seed, sample=(2, 4096))
        rows[(64,)](x, o, N=16)
        written = torch.isfinite(o).view(64, 16).all(1).nonzero().flatten().tolist()
        got[f"seed{seed}"] = {"sampled": interp.take_sampled(), "written": written,
                              "right": bool(torch.equal(o[torch.isfinite(o)], (x * 2.0)[torch.isfinite(o)]))}
    for seed in range(5):
        o = torch.full((3 * 40 * 16,), float("nan"))
        interp.install(order="shuffle", seed=seed, sample=(3, 4096, True))
        tiles[(3, 40)](o, N=16)
        written = torch.isfinite(o).view(3 * 40, 16).all(1).nonzero().flatten().tolist()
        got[f"turns{seed}"] = {"requests": sorted({row // 40 for row in written}), "tiles": [row % 40 for row in written]}
    interp.install(order="forward", seed=0, sample=(2, 4096))
    o = torch.full((64 * 16,), float("nan"))

    def twice():
        rows[(64,)](x, o, N=16)
        rows[(64,)](x, o, N=16)

    got["two_launches"] = outcome(twice)
    interp.install(order="forward", seed=0, sample=(2, 4096))
    got["atomic"] = outcome(lambda: count[(4,)](torch.zeros(1, dtype=torch.int32)))
    interp.install(order="forward", seed=0, sample=(2, 8))  # no program stores: 8 run, then it gives up
    nothing[(64,)](x)
    got["capped"] = interp.take_sampled()
    interp.install(order="forward", seed=0)
    o = torch.full((64 * 16,), float("nan"))
    rows[(64,)](x, o, N=16)
    got["unsampled_written"] = int(torch.isfinite(o).view(64, 16).all(1).sum())
    print(json.dumps(got))
"""


def test_a_sampled_launch_runs_programs_until_two_stored_and_refuses_what_it_cannot_judge():
    """The workloads' exact shapes are checked on a sample of their programs (threat 30): drawn from the seed,
    run until two of them stored something (or the cap), so only those programs' rows are written, and
    written right; the grid's first axis in turns, so a grid over requests reaches each request first. A second launch in the call (it would read what unsampled programs did not write) and an
    atomic (what it returns depends on them) are limitations: the workload stays for the GPU to judge."""
    got = run_json(OUTCOME, SAMPLED)
    drawn = set()
    for seed in range(3):
        one = got[f"seed{seed}"]
        assert len(one["written"]) == 2 and set(one["written"]) <= set(range(6)) and one["right"], one
        visited, stored = one["sampled"][0]
        assert stored == 2 and visited >= 2, one
        drawn.add(tuple(one["written"]))
    assert len(drawn) > 1, got  # the sample follows the seed
    # the first axis in turns: three programs that store reach each of three requests (a draw from all 120
    # programs reaches all three in 2 of 9 seeds), at drawn tiles
    assert all(got[f"turns{seed}"]["requests"] == [0, 1, 2] for seed in range(5)), got
    assert len({tuple(got[f"turns{seed}"]["tiles"]) for seed in range(5)}) > 1, got
    assert got["two_launches"].startswith("limitation: ") and "second kernel launch" in got["two_launches"], got
    assert got["atomic"].startswith("limitation: ") and "an atomic in a launch" in got["atomic"], got
    assert got["capped"] == [[8, 0]], got
    assert got["unsampled_written"] == 6, got


def test_loop_variables_and_an_argument_of_1_are_typed_as_in_a_compiled_kernel():
    """A compiled loop's induction variable is an int32 tensor (int64 when a bound is): `i + 2^31 - 1` wraps and
    `(i + 1) * 1e-12 + 1.0` rounds to 1 in fp32, where a Python int does neither (an independent panel's kernels
    used both to take a cheap path only on a GPU). An int argument equal to 1 is Triton's constant 1 (no int32
    wrap), one past int32 is int64 (the interpreter made it uint32), and `tl.static_range` stays Python ints."""
    got = run_json("""
        interp.install()
        @triton.jit
        def loops(out, one, big, lo64):
            for i in range(0, 3):
                tl.store(out + i, ((i + 2147483647) < 0).to(tl.int32))  # wraps for i >= 1
                tl.store(out + 3 + i, ((i + 1) * 1e-12 + 1.0 == 1.0).to(tl.int32))
            for j in tl.range(lo64, lo64 + 1):
                tl.store(out + 6, (j + 2147483647 > 0).to(tl.int32))  # int64: no wrap
            tl.store(out + 7, (one + 2147483647) > 0)  # the constant 1 (a Python bool here, as when compiled)
            tl.store(out + 8, ((big * 0 - 1) < 0).to(tl.int32))  # int64, not uint32 (which wraps to 2^32 - 1)
            for k in tl.static_range(2):
                tl.store(out + 9 + k, (k + 1) * 1e-12 + 1.0 == 1.0)  # Python floats: not 1.0
        @triton.jit(do_not_specialize=["one"])
        def unspecialized(out, one):
            tl.store(out, ((one + 2147483647) < 0).to(tl.int32))  # an int32 then: it wraps
        out = torch.full((11,), -1, dtype=torch.int32)
        loops[(1,)](out, 1, 2 ** 31 + 5, 2 ** 40)
        again = torch.full((1,), -1, dtype=torch.int32)
        unspecialized[(1,)](again, 1)
        print(json.dumps({"out": out.tolist(), "unspecialized": again.tolist()}))
    """)
    assert got["out"] == [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], got
    assert got["unspecialized"] == [1], got


def test_approximate_exp2_sqrt_and_rsqrt_flush_subnormals_to_zero_as_the_gpu_instructions_do():
    """Triton compiles tl.exp2, tl.sqrt and tl.rsqrt (fp32) to ex2/sqrt/rsqrt.approx.ftz.f32: a subnormal input
    counts as 0 and a subnormal result is 0. A plain interpreter kept 2^-140, which a kernel could compare with
    0 to tell it from a GPU. tl.exp is ex2.approx.f32 of the rounded x * log2(e), without .ftz: e^-100 stays
    3.7e-44, as on a GPU (kopt flushed it, and an independent panel's kernel took that for the interpreter).
    Normal values are unchanged and fp64 is not flushed."""
    got = run_json("""
        interp.install()
        @triton.jit
        def approx(x, s, out, x64, out64):
            o = tl.arange(0, 4)
            v, w = tl.load(x + o), tl.load(s + o)
            tl.store(out + o, tl.exp(v))
            tl.store(out + 4 + o, tl.exp2(v))
            tl.store(out + 8 + o, tl.sqrt(w))
            tl.store(out + 12 + o, tl.rsqrt(w))
            tl.store(out64 + o, tl.exp(tl.load(x64 + o)))
        x = torch.tensor([-100.0, -140.0, 0.5, 2.0])
        s = torch.tensor([1e-40, 1e-39, 4.0, 16.0])  # two subnormals
        out, out64 = torch.empty(16), torch.empty(4, dtype=torch.float64)
        approx[(1,)](x, s, out, x.double(), out64)
        print(json.dumps({"out": [float(v) for v in out], "out64": [float(v) for v in out64],
                          "subnormal": bool(s[0] > 0)}))
    """)
    out = got["out"]
    e100 = float(np.exp2(np.float32(-100.0) * np.float32(1.4426950408889634)))
    assert got["subnormal"] and 0.0 < out[0] == e100 < 2.0 ** -126 and out[1] == 0.0, out  # (e^-140 < 2^-149)
    assert abs(out[2] - math.exp(0.5)) < 1e-6 and abs(out[3] - math.exp(2.0)) < 1e-5, out
    assert out[4] == 2.0 ** -100 and out[5] == 0.0 and out[6] == pytest.approx(2 ** 0.5) and out[7] == 4.0, out
    assert out[8:12] == [0.0, 0.0, 2.0, 4.0] and out[12:16] == [math.inf, math.inf, 0.5, 0.25], out
    assert got["out64"][0] > 0.0, got  # fp64 keeps e^-100


def test_a_failure_inside_the_interpreters_own_code_is_a_limitation_but_its_assertions_are_the_kernels():
    """Valid Triton the interpreter's own code refuses (an independent panel's honest kernels: a mask and-ed with a
    scalar, "mask has unsupported dtype"; a keyword kopt's patch did not take) is the verifier's limit, an
    `error`; an assertion raised there (tl.device_assert, a tensor descriptor's 16-byte alignment) is the
    kernel's, as a failure in the kernel's own code is."""
    got = run_json("""
        interp.install()
        from triton.runtime import interpreter as I
        b = I.InterpreterBuilder()
        b.set_grid_dim(1, 1, 1)
        out = {}
        for name, call in (("internal", lambda: b.set_grid_idx(5, 0, 0)),
                           ("assertion", lambda: b.create_assert(False, "kernel's own check")),
                           ("kernel", lambda: (_ for _ in ()).throw(ValueError("the kernel's")))):
            try:
                call()
            except Exception as e:
                lim = interp.as_limitation(e)
                out[name] = None if lim is None else str(lim)
        print(json.dumps(out))
    """)
    assert got["internal"] is not None and "failed in its own code (ValueError: x >= grid_dim[0])" in got["internal"]
    assert got["assertion"] is None and got["kernel"] is None, got
