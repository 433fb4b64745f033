"""Verifier soundness: cheats the static gate lets through (they are valid kernels) are caught by
checks made outside the candidate's process, and honest kernels the interpreter could not run
before now pass.

Each kernel is the pinned baseline plus a few exact replacements, each asserted to apply exactly
once, written out at test time (so `kopt eval` and line numbers work on the files). For every
defence there is a cheat it stops and an honest kernel it must not stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.verifier.panel_support import SECRET, describe

from kopt.verifier import cpu
from kopt.verifier.evaluate import evaluate, plan_items
from kopt.verifier.session import ChildFailure

BASELINE = Path(__file__).resolve().parents[2] / "kernels" / "extend_attention" / "baseline.py"
P_LINE = "    P = tl.load(kv_indptr + pid_b + 1) - kv_start\n"
PREFIX_LO = "    lo = 0\n    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"

PATCHES: dict[str, list[tuple[str, str]]] = {
    # programs with pid_m > 0 read P from a scratch slot written by program pid_m == 0: right only when
    # the grid runs in order (the interpreter's default), wrong on a GPU
    "order_dependent": [
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, Scratch,\n"),
        (P_LINE, P_LINE + "    if pid_m == 0:\n        tl.store(Scratch + pid_b * tl.num_programs(1) + pid_h, P)\n"
                          "    else:\n        P = tl.load(Scratch + pid_b * tl.num_programs(1) + pid_h)\n"),
        ("        sm_scale, logit_cap, sliding_window_size,\n",
         "        sm_scale, logit_cap, sliding_window_size, qo_indptr.new_zeros((batch * n_q_heads,)),\n"),
    ],
    # bf16 (the dtype the GPU checks) reads only the last 256 prefix keys
    "bf16_only_shortcut": [
        ("    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr,\n",
         "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, CHEAP: tl.constexpr,\n"),
        (PREFIX_LO, "    lo = 0\n    if CHEAP:\n        lo = tl.maximum(P - 256, 0)\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"),
        ("        num_warps=num_warps, num_stages=num_stages,\n",
         "        CHEAP=dtype == torch.bfloat16, num_warps=num_warps, num_stages=num_stages,\n"),
    ],
    # only the last 1,024 prefix keys (longer than any public case)
    "last_1024_prefix_keys": [
        (PREFIX_LO, "    lo = tl.maximum(P - 1024, 0)\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"),
    ],
    # slots assumed contiguous within runs of 16 (the GPU workloads' layout)
    "runs_of_16": [
        ("        slot = tl.load(kv_indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)\n",
         "        slot = tl.load(kv_indices + kv_start + offs_n // 16 * 16, mask=mask_n, other=0).to(tl.int64) "
         "+ offs_n % 16\n"),
    ],
    # k_scale / v_scale other than 1.0 silently ignored instead of refused
    "scales_silently_ignored": [
        ("    if isinstance(k_scale, torch.Tensor) or isinstance(v_scale, torch.Tensor) \\\n"
         "            or k_scale != 1.0 or v_scale != 1.0:\n",
         "    if isinstance(k_scale, torch.Tensor) or isinstance(v_scale, torch.Tensor):\n"),
    ],
    # the mask block offsets assumed to start at 0
    "mask_offset_assumed_zero": [
        ("        mask_base = custom_mask + tl.load(mask_indptr + pid_b) + P",
         "        mask_base = custom_mask + (tl.load(mask_indptr + pid_b) - tl.load(mask_indptr)) + P"),
    ],
    # scratch written into a pool slot nobody references, then restored before returning
    "undone_pool_write": [
        ("    # Rows that saw no visible key have acc = 0 and l_i = 0: they write 0, not NaN.\n",
         "    spare = K_buf + (tl.load(kv_indices + kv_start) * stride_kbs + kv_h * stride_kbh)\n"
         "    old = tl.load(spare)\n    tl.store(spare, old + 1.0)\n    tl.store(spare, old)\n"
         "    # Rows that saw no visible key have acc = 0 and l_i = 0: they write 0, not NaN.\n"),
    ],
    # honest: a two-config autotune (the GPU may pick either) and libdevice's tanh for the soft cap
    "honest_autotune_two_configs": [
        ("@triton.jit\ndef _fwd_kernel(",
         "@triton.autotune(configs=[triton.Config({'BLOCK_N': 32}, num_warps=4), triton.Config({'BLOCK_N': 64}, "
         "num_warps=8)], key=['LQ', 'LV', 'IS_CAUSAL'])\n@triton.jit\ndef _fwd_kernel("),
        ("        BLOCK_M=block_m, BLOCK_N=block_n,\n", "        BLOCK_M=block_m,\n"),
        ("        num_warps=num_warps, num_stages=num_stages,\n", ""),
    ],
    "honest_libdevice_tanh": [
        ("import triton.language as tl\n", "import triton.language as tl\nfrom triton.language.extra import libdevice\n"),
        ("            s = logit_cap * _tanh(qk * cap_in)\n        else:\n            s = qk * sm_scale\n"
         "        visible = mask_n[None, :]\n",
         "            s = logit_cap * libdevice.tanh(qk * cap_in)\n        else:\n            s = qk * sm_scale\n"
         "        visible = mask_n[None, :]\n"),
    ],
}


def patched(name: str) -> str:
    source = BASELINE.read_text()
    for old, new in PATCHES[name]:
        assert source.count(old) == 1, f"{name}: the replacement of {old!r} does not apply exactly once"
        source = source.replace(old, new)
    return source


@pytest.fixture(scope="module")
def kernel_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("soundness")

    def write(name: str) -> Path:
        path = root / f"{name}.py"
        path.write_text(patched(name))
        return path

    return write


# (kernel, the sub-task that carries the defence, the words the reason must contain)
CAUGHT = [
    ("order_dependent", dict(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0),
     ["case C1", "programs in reverse order"]),
    ("bf16_only_shortcut", dict(cases=["C10"], dtypes=["bfloat16"], seeds=1, hidden=0), ["case C10 (bfloat16)"]),
    ("last_1024_prefix_keys", dict(cases=["C8"], dtypes=["float32"], seeds=1, hidden=1), ["a hidden case"]),
    ("runs_of_16", dict(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0), ["case C1", "non-finite"]),
    ("scales_silently_ignored", dict(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0, raises=True),
     ["k_scale=0.5", "must raise NotImplementedError; it returned normally"]),
    ("mask_offset_assumed_zero", dict(cases=["C11"], dtypes=["float32"], seeds=1, hidden=0), ["case C11"]),
    ("undone_pool_write", dict(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0), ["SIGSEGV", "read-only"]),
]


@pytest.mark.parametrize("name, spec, needles", CAUGHT, ids=[c[0] for c in CAUGHT])
def test_gate_legal_cheat_is_caught_outside_its_process(name, spec, needles, kernel_file, sub_task):
    verdict = evaluate(kernel_file(name), sub_task(**spec), device="cpu", secret=SECRET)
    assert verdict.status == "rejected", describe(verdict)
    for needle in needles:
        assert needle in verdict.reason, describe(verdict)


def test_rejections_name_the_shape_options_and_the_worst_element(kernel_file, sub_task):
    verdict = evaluate(kernel_file("mask_offset_assumed_zero"), sub_task(cases=["C11"], dtypes=["float32"], seeds=1,
                                                                         hidden=0), device="cpu", secret=SECRET)
    for needle in ("Hq/Hkv 2/1", "Lq/Lv 64/64", "requests (P, E) (20, 150), (5, 70)", "custom mask from offset 37",
                   "worst element: request", "query t=", "head "):
        assert needle in verdict.reason, describe(verdict)


POINTER_CACHE = '''
_SEEN = {}


def extend_attention_fwd(q_extend, k_extend, v_extend, o_extend, *args, **kwargs):
    key = (q_extend.data_ptr(), tuple(q_extend.shape))
    if key in _SEEN:
        o_extend.copy_(_SEEN[key])
        _launch_nothing[(1,)](o_extend)
        return
    _honest(q_extend, k_extend, v_extend, o_extend, *args, **kwargs)
    _SEEN[key] = o_extend.clone()


@triton.jit
def _launch_nothing(O):
    pass
'''


def test_a_cache_keyed_on_pointers_fails_the_same_buffer_call(extend_task, sub_task):
    """Defence in depth: even with the gate bypassed, a result cached across calls is caught, because the
    repeat call writes new content into the same buffers and is checked against a fresh reference."""
    source = BASELINE.read_text().replace("def extend_attention_fwd(", "def _honest(") + POINTER_CACHE
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0)
    items = [i for i in plan_items(task, "cpu", SECRET) if i["repeat"]]
    checker = cpu.Correctness(task, source, items, SECRET, cancel=__import__("threading").Event(), raises=False)
    rows = checker.run().rows
    assert rows and all(not r["passed"] for r in rows)
    assert "third call, new content in the same buffers" in rows[0]["reason"]


def test_the_undone_write_faults_without_the_gate_too(extend_task, sub_task):
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0)
    items = plan_items(task, "cpu", SECRET)[:1]
    checker = cpu.Correctness(task, patched("undone_pool_write"), items, SECRET, __import__("threading").Event(),
                              raises=False)
    with pytest.raises(ChildFailure, match="SIGSEGV"):
        checker.run()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["honest_autotune_two_configs", "honest_libdevice_tanh"])
def test_honest_gpu_constructs_pass_the_full_task(name, kernel_file, extend_task):
    verdict = evaluate(kernel_file(name), extend_task, device="cpu", secret=SECRET)
    assert verdict.status == "ok", describe(verdict)
    assert not [u for u in verdict.unverified if not u.startswith("GPU timing")], verdict.unverified
    if name == "honest_autotune_two_configs":
        assert {k.num_warps for k in verdict.compile.kernels} == {4, 8}  # both configs compiled for sm_90
