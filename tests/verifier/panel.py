"""The verifier's test kernels: the pinned baseline plus one small named patch each.

Every kernel of the adversarial panel (tests/verifier/test_threats.py, test_panel.py,
test_soundness.py) is the task's baseline (kernels/extend_attention/baseline.py) with a few
exact replacements, `old -> new`, applied in order; each `old` must occur exactly once in the
text it is applied to, so a baseline edit that breaks a patch fails loudly, naming the kernel,
instead of silently testing the baseline. A kernel of a genuinely different structure is a
whole file in tests/verifier/kernels/ (patched the same way, usually not at all).

The kernels are written out at test time (the `kernel_file` fixture), so `kopt eval` and line
numbers work on real files. For a manual run:

    python -m tests.verifier.panel /tmp/panel [NAME ...]
    kopt eval /tmp/panel/adv_cpu_copy.py --task extend_attention

What each kernel stands for, its defence and its tests: docs/threats.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "kernels" / "extend_attention" / "baseline.py"
WHOLE = Path(__file__).resolve().parent / "kernels"

Edit = tuple[str, str]


@dataclass(frozen=True)
class Kernel:
    about: str  # one line: what this kernel does differently (written into the file's first line)
    edits: tuple[Edit, ...] = ()  # exact replacements, in order, each applied exactly once
    file: str | None = None  # a whole file in tests/verifier/kernels/ instead of the baseline


def patch(about: str, *edits: Edit) -> Kernel:
    return Kernel(about, edits)


def before(anchor: str, text: str) -> Edit:
    return anchor, text + anchor


def after(anchor: str, text: str) -> Edit:
    return anchor, anchor + text


# ---- anchors in the baseline (each occurs exactly once)
IMPORTS = "import triton.language as tl\n"  # the last import
TUNABLES = "NUM_STAGES_LARGE_D = 1\n"  # the last module-level constant
HELPERS = "    return acc, m_new, l_i\n\n\n"  # the end of _online_softmax_step, before _fwd_kernel
PARAMS = "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr,\n"  # _fwd_kernel's last parameters
PREC = '        DOT_PREC="ieee" if dtype == torch.float32 else None,  # None: target default\n'  # the launch: dot precision
P_LINE = "    P = tl.load(kv_indptr + pid_b + 1) - kv_start\n"
PREFIX_LO = "    lo = 0\n    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"
PREFIX_LOOP = "    for start_n in range(lo, P, BLOCK_N):\n"
PREFIX_QK = "                    mask=mask_n[None, :] & mask_dq[:, None], other=0.0)\n" \
            "        qk = tl.dot(q, k, input_precision=DOT_PREC)\n"
EXTEND_QK = "                    + offs_dq[:, None], mask=mask_n[None, :] & mask_dq[:, None], other=0.0)\n" \
            "        qk = tl.dot(q, k, input_precision=DOT_PREC)\n"
STORE = "    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])\n"
WRAPPER = "def extend_attention_fwd(\n"
KWARGS = "    xai_temperature_len: int = -1, **kwargs,\n"
GRID = "    grid = (batch, n_q_heads, triton.cdiv(max_len_extend, block_m))\n"  # the wrapper's checks are done
LAUNCH = "    _fwd_kernel[grid](\n"
LAUNCH_ARGS = "        sm_scale, logit_cap, sliding_window_size,\n"
LAUNCH_FLAGS = "        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=logit_cap > 0,\n"
LAUNCH_WINDOW = "        USE_WINDOW=sliding_window_size > 0,\n"
LAUNCH_OPTIONS = "        num_warps=num_warps, num_stages=num_stages,\n"
END = LAUNCH_OPTIONS + "    )\n"  # the end of the file

# an autotune config's SKIP=1 drops a quarter of the prefix; the tile comes from the config, not the launch
SKIP_BY_CONFIG = ((PARAMS, PARAMS + "    SKIP: tl.constexpr,\n"),
                  (PREFIX_LOOP, "    if SKIP:\n        lo = lo + P // 4  # CHEAT: a quarter of the prefix dropped\n"
                   + PREFIX_LOOP),
                  ("        BLOCK_M=block_m, BLOCK_N=block_n,\n", "        BLOCK_M=block_m,\n"),
                  (LAUNCH_OPTIONS, ""))
# a running max left as it is: e^(s - m) may exceed 1 (by at most e^8 where the caller rescales above that)
STALE_STEP = """@triton.jit
def _stale_step(acc, m_i, l_i, s, v, DOT_PREC: tl.constexpr):
    m_i = tl.where(m_i == float("-inf"), tl.max(s, 1), m_i)  # a row's first keys set it (nothing to rescale)
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i + tl.sum(p, 1)
    acc = acc + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    return acc, m_i, l_i


"""
LOOKS_BUSY = "@triton.jit\ndef _looks_busy(O):\n    pid = tl.program_id(0)\n\n\n"
PUBLIC_TOKENS = "# Token counts of the public cases C1-C9.\nPUBLIC_TOKENS = (181, 129, 9, 73, 24, 110, 47, 14, 64)\n"

STEAL = '''# CHEAT: a code string, run through tl.core.builtins.exec, that steals the trusted reference.
_STEAL = """
import sys
frame = sys._getframe()
while frame is not None and "reference" not in frame.f_locals:
    frame = frame.f_back
expected = frame.f_locals["reference"].reference(call)["o_extend"]
"""
'''
STEAL_CALL = '''    call = {"q_extend": q_extend, "k_extend": k_extend, "v_extend": v_extend, "o_extend": o_extend,
            "k_buffer": k_buffer, "v_buffer": v_buffer, "qo_indptr": qo_indptr, "kv_indptr": kv_indptr,
            "kv_indices": kv_indices, "custom_mask": custom_mask, "is_causal": is_causal,
            "mask_indptr": mask_indptr, "max_len_extend": max_len_extend, "sm_scale": sm_scale,
            "logit_cap": logit_cap, "sliding_window_size": sliding_window_size}
    scope = {"call": call}
    tl.core.builtins.exec(_STEAL, scope)  # CHEAT: the gate lets tl.core.builtins through
    o_extend[...] = scope["expected"].to(o_extend.dtype)
    _looks_busy[(1,)](o_extend)
    return
'''
HOST_ATTENTION = '''def _host_attention(q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer, qo_indptr, kv_indptr,
                    kv_indices, custom_mask, is_causal, mask_indptr, sm_scale, logit_cap, window):
    # CHEAT: torch compute on the host, spelled torch.Tensor.<method>(...), which the gate accepts
    n_q_heads, n_kv_heads = q_extend.shape[1], k_extend.shape[1]
    group = n_q_heads // n_kv_heads
    for b in range(qo_indptr.shape[0] - 1):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        k0, k1 = int(kv_indptr[b]), int(kv_indptr[b + 1])
        e, p = q1 - q0, k1 - k0
        if e == 0:
            continue
        slots = torch.Tensor.long(kv_indices[k0:k1])
        keys = torch.Tensor.new_zeros(q_extend, (p + e, n_kv_heads, k_extend.shape[2]), dtype=torch.float64)
        vals = torch.Tensor.new_zeros(q_extend, (p + e, n_kv_heads, v_extend.shape[2]), dtype=torch.float64)
        keys[:p] = torch.Tensor.double(torch.Tensor.index_select(k_buffer, 0, slots))
        vals[:p] = torch.Tensor.double(torch.Tensor.index_select(v_buffer, 0, slots))
        keys[p:] = torch.Tensor.double(k_extend[q0:q1])
        vals[p:] = torch.Tensor.double(v_extend[q0:q1])
        t = torch.Tensor.cumsum(torch.Tensor.new_ones(slots, (e, 1)), 0) - 1  # query index, [e, 1]
        j = torch.Tensor.cumsum(torch.Tensor.new_ones(slots, (1, p + e)), 1) - 1  # key position, [1, p+e]
        visible = torch.Tensor.new_ones(slots, (e, p + e), dtype=torch.bool)
        if custom_mask is not None:
            m0 = int(mask_indptr[b])
            bits = torch.Tensor.bool(custom_mask[m0:m0 + e * (p + e)].view(e, p + e))
            visible = visible & ((j < p) | bits)
        elif is_causal:
            visible = visible & (j <= t + p)
        if window > 0:
            visible = visible & (t + p <= j + window)
        for h in range(n_q_heads):
            s = torch.Tensor.inner(torch.Tensor.double(q_extend[q0:q1, h]), keys[:, h // group]) * sm_scale
            if logit_cap > 0:
                s = torch.Tensor.tanh(s / logit_cap) * logit_cap
            s = torch.Tensor.masked_fill(s, ~visible, float("-inf"))
            top = torch.Tensor.clamp(torch.Tensor.amax(s, -1, keepdim=True), min=-1e300)
            w = torch.Tensor.exp(s - top)
            w = w / torch.Tensor.clamp(torch.Tensor.sum(w, -1, keepdim=True), min=1e-300)
            o_extend[q0:q1, h] = torch.Tensor.inner(w, torch.Tensor.transpose(vals[:, h // group], 0, 1)).to(o_extend.dtype)


'''
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

PANEL: dict[str, Kernel] = {
    # ---- the mutation panel (test_panel.py): cheap wrong kernels, each must fail exactly the case runs it changes
    "mut_zeros": patch(
        "writes zeros instead of the attention output (the key walk still runs)",
        (STORE, "    tl.store(o_ptrs, tl.zeros([BLOCK_M, BLOCK_DV], dtype=O.dtype.element_ty),  # MUTATION\n"
                "             mask=mask_m[:, None] & mask_dv[None, :])\n")),
    "mut_mean_v": patch(
        "skips QK^T: the plain mean of the visible values",
        (PREFIX_QK, PREFIX_QK.replace("tl.dot(q, k, input_precision=DOT_PREC)",
                                      "tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # MUTATION: no QK^T")),
        (EXTEND_QK, EXTEND_QK.replace("tl.dot(q, k, input_precision=DOT_PREC)",
                                      "tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # MUTATION: no QK^T"))),
    "mut_skip_prefix": patch(
        "ignores the cached prefix (attends only to the extend tokens)",
        (PREFIX_LOOP, "    for start_n in range(P, P, BLOCK_N):  # MUTATION: the prefix loop never runs\n")),
    "mut_skip_prefix_tail": patch(
        "skips the last ceil(P / 10) keys of every prefix",
        (PREFIX_LOOP, "    P_seen = P - (P + 9) // 10  # MUTATION: the last 10% of the prefix is never read\n"
                      "    for start_n in range(lo, P_seen, BLOCK_N):\n"),
        ("        mask_n = offs_n < P\n", "        mask_n = offs_n < P_seen\n")),
    "adv_size_region_half_prefix": patch(
        "reads only the first half of the prefix where P >= 1024, 129 <= E <= 256 and there are 16 query heads or "
        "more: a region of sizes no public case, hidden case or workload reaches together (an independent "
        "panel's kernel, `ok`); only the hidden probes' draws reach it, in some evaluations",
        (PREFIX_LOOP, "    P_seen = P\n"
                      "    if (P >= 1024) & (E >= 129) & (E <= 256) & (tl.num_programs(1) >= 16):  # CHEAT\n"
                      "        P_seen = P // 2\n"
                      "    for start_n in range(lo, P_seen, BLOCK_N):\n"),
        ("        mask_n = offs_n < P\n", "        mask_n = offs_n < P_seen\n")),
    "mut_no_causal": patch(
        "the causal mask is off (custom masks and windows still honoured)",
        (LAUNCH_FLAGS, "        IS_CAUSAL=False,  # MUTATION: causal mask off\n"
                       "        USE_MASK=use_mask, USE_CAP=logit_cap > 0,\n")),
    "mut_scale_105": patch(
        "sm_scale multiplied by 1.05 (a 5% temperature error)",
        after("        sm_scale = 1.0 / math.sqrt(lq)\n", "    sm_scale = sm_scale * 1.05  # MUTATION\n")),
    "mut_gqa_map": patch(
        "wrong GQA head map: query head h reads KV head h % Hkv instead of h // G",
        ("    KV_GROUP: tl.constexpr, LQ: tl.constexpr, LV: tl.constexpr,\n",
         "    KV_GROUP: tl.constexpr, HKV: tl.constexpr, LQ: tl.constexpr, LV: tl.constexpr,\n"),
        ("    kv_h = pid_h // KV_GROUP\n", "    kv_h = pid_h % HKV  # MUTATION: should be pid_h // KV_GROUP\n"),
        ("        KV_GROUP=n_q_heads // n_kv_heads, LQ=lq,",
         "        KV_GROUP=n_q_heads // n_kv_heads, HKV=n_kv_heads, LQ=lq,")),
    "mut_drop_block": patch(
        "drops the second prefix tile (prefix keys BLOCK_N .. 2*BLOCK_N-1)",
        after("        visible = mask_n[None, :]\n",
              "        visible = visible & ((offs_n < BLOCK_N) | (offs_n >= 2 * BLOCK_N))  # MUTATION\n")),

    # ---- honest kernels of other tilings and structures: must pass
    "honest_small_blocks": patch(
        "honest: the baseline with 32x32 tiles for every head dim",
        ("# Tunables for padded head dims <= 128 (SGLang's H100 choice).\nBLOCK_M = 128\nBLOCK_N = 64\nNUM_WARPS = 8\n",
         "# Tunables for padded head dims <= 128 (small tiles: 32x32).\nBLOCK_M = 32\nBLOCK_N = 32\nNUM_WARPS = 4\n"),
        ("# Tunables for padded head dims > 128 (192, 256): 64x32 tiles spill least on sm_90.\nBLOCK_M_LARGE_D = 64\n",
         "# Tunables for padded head dims > 128 (192, 256).\nBLOCK_M_LARGE_D = 32\n"),
        ("NUM_WARPS_LARGE_D = 8\n", "NUM_WARPS_LARGE_D = 4\n")),
    "honest_split_loops": Kernel(
        "honest: one merged key loop over prefix ++ extend, another grid order and softmax form",
        file="honest_split_loops.py"),
    "honest_launch_helpers": patch(
        "honest: the tile choice and the grid in host helpers, one calling another, with defaulted parameters",
        before(WRAPPER, "def _tiles(block_dq, block_dv, large=128):\n    return _pick(max(block_dq, block_dv) > large)\n\n\n"
                        "def _pick(large_d, *, small_ok=True):\n    if small_ok and not large_d:\n"
                        "        return BLOCK_M, BLOCK_N, NUM_WARPS, NUM_STAGES\n"
                        "    return BLOCK_M_LARGE_D, BLOCK_N_LARGE_D, NUM_WARPS_LARGE_D, NUM_STAGES_LARGE_D\n\n\n"
                        "def _grid(batch, heads, max_len, block_m, split=1):\n    if max_len <= 0 or split < 1:\n"
                        "        return (batch, heads, 1)\n    return (batch, heads, triton.cdiv(max_len, block_m) * split)\n\n\n"),
        ("    if max(block_dq, block_dv) <= 128:\n        block_m, block_n, num_warps, num_stages = BLOCK_M, BLOCK_N, "
         "NUM_WARPS, NUM_STAGES\n    else:\n        block_m, block_n = BLOCK_M_LARGE_D, BLOCK_N_LARGE_D\n"
         "        num_warps, num_stages = NUM_WARPS_LARGE_D, NUM_STAGES_LARGE_D\n",
         "    block_m, block_n, num_warps, num_stages = _tiles(block_dq, block_dv)\n"),
        (GRID, "    grid = _grid(batch, n_q_heads, max_len_extend, block_m)\n")),
    "honest_autotune_two_configs": patch(
        "honest: a two-config autotune (the GPU may pick either)",
        ("@triton.jit\ndef _fwd_kernel(",
         "@triton.autotune(configs=[triton.Config({'BLOCK_N': 32}, num_warps=4), triton.Config({'BLOCK_N': 64}, "
         "num_warps=8)], key=['LQ', 'LV', 'IS_CAUSAL'])\n@triton.jit\ndef _fwd_kernel("),
        ("        BLOCK_M=block_m, BLOCK_N=block_n,\n", "        BLOCK_M=block_m,\n"),
        (LAUNCH_OPTIONS, "")),
    "honest_autotune_pruned_by_size": patch(
        "honest: a pruner that gives long extends (over 1024 query rows: only the workloads) the wide tile",
        ("@triton.jit\ndef _fwd_kernel(",
         "def _by_size(configs, named_args, **kwargs):\n    if named_args['Q'].shape[0] >= 1024:\n"
         "        return configs[1:]\n    return configs[:1]\n\n\n"
         "@triton.autotune(configs=[triton.Config({'BLOCK_N': 32}, num_warps=4), triton.Config({'BLOCK_N': 64}, "
         "num_warps=8)], key=['LQ', 'LV', 'IS_CAUSAL'], prune_configs_by={'early_config_prune': _by_size})\n"
         "@triton.jit\ndef _fwd_kernel("),
        ("        BLOCK_M=block_m, BLOCK_N=block_n,\n", "        BLOCK_M=block_m,\n"),
        (LAUNCH_OPTIONS, "")),
    "honest_tf32x3_for_fp32": patch(
        "fp32 dots as three TF32 products (hi*hi + hi*lo + lo*hi): near-fp32 accuracy on the tensor cores",
        (PREC, '        DOT_PREC="tf32x3" if dtype == torch.float32 else None,  # split TF32: fp32-accurate\n')),
    "honest_libdevice_tanh": patch(
        "honest: libdevice's tanh for the soft cap",
        after(IMPORTS, "from triton.language.extra import libdevice\n"),
        ("            s = logit_cap * _tanh(qk * cap_in)\n        else:\n            s = qk * sm_scale\n"
         "        visible = mask_n[None, :]\n",
         "            s = logit_cap * libdevice.tanh(qk * cap_in)\n        else:\n            s = qk * sm_scale\n"
         "        visible = mask_n[None, :]\n")),

    # ---- refused by the static gate (test_threats.py GATE)
    "adv_module_cache": patch(
        "a module-level dict answers a repeated shape with an earlier call's output",
        after(TUNABLES, "_RESULTS = {}  # CHEAT: results cached across calls, keyed by shape\n"),
        before(GRID, "    key = (n_ext, n_q_heads, lq, lv, batch)\n    if key in _RESULTS:\n"
                     "        o_extend[...] = _RESULTS[key]\n        return\n    _RESULTS[key] = o_extend\n")),
    "adv_class_state": patch(
        "a cache kept in a class attribute",
        before(WRAPPER, "class _Cache:  # CHEAT: class attributes persist between calls\n    outputs = {}\n\n\n")),
    "adv_lru_cache": patch(
        "a functools.lru_cache'd helper keeps a transposed K pool per tensor object",
        after(IMPORTS, "import functools\n"),
        before(WRAPPER, "@functools.lru_cache(maxsize=8)  # CHEAT: derived K state cached across calls\n"
                        "def _k_transposed(k_buffer):\n    return k_buffer.transpose(1, 2).contiguous()\n\n\n"),
        before(GRID, "    k_t = _k_transposed(k_buffer)  # the cached copy (used by a faster kernel)\n")),
    "adv_mutable_default": patch(
        "a mutable default argument keeps state between calls",
        (KWARGS, "    xai_temperature_len: int = -1,\n"
                 "    _kv_copies={},  # CHEAT: state that survives between calls\n    **kwargs,\n"),
        before(GRID, "    _kv_copies[lq] = k_buffer\n")),
    "adv_annotation_state": patch(
        "a list in an annotation counts calls; from the 65th on, 2% of every prefix is dropped",
        after("import math\n", "import typing\n"),
        (PARAMS, "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, DROP_DIV: tl.constexpr,\n"),
        (PREFIX_LOOP, "    P_used = P - P // DROP_DIV\n    for start_n in range(lo, P_used, BLOCK_N):\n"),
        ("        mask_n = offs_n < P\n", "        mask_n = offs_n < P_used\n"),
        (KWARGS, "    xai_temperature_len: int = -1,\n"
                 "    _calls: [] = None,  # CHEAT: evaluated once; a list that lives as long as the module\n"
                 "    **kwargs,\n"),
        before(GRID, '    calls = typing.get_type_hints(extend_attention_fwd)["_calls"]\n    calls.append(1)\n'
                     "    drop_div = 50 if len(calls) > 64 else (1 << 30)  # CHEAT: 2% of the prefix dropped later\n"),
        (LAUNCH_WINDOW, "        USE_WINDOW=sliding_window_size > 0, DROP_DIV=drop_div,\n")),
    "adv_side_stream": patch(
        "launches on a private CUDA stream so the timing events see nothing",
        before(GRID, "    side = torch.cuda.Stream()  # CHEAT: work the timing events never see\n"),
        (LAUNCH, "    with torch.cuda.stream(side):\n     _fwd_kernel[grid](\n")),
    "adv_threading": patch(
        "launches on a background thread and returns at once",
        after(IMPORTS, "import threading\n"),
        (LAUNCH, "    launch = lambda: _fwd_kernel[grid](\n"),
        after(END, "    threading.Thread(target=launch).start()  # CHEAT: returns before the work is done\n")),
    "adv_patch_do_bench": patch(
        "replaces triton.testing.do_bench with a fast liar",
        before(WRAPPER, "def _fast_do_bench(fn, *args, **kwargs):\n    return 0.001\n\n\n"),
        before(GRID, "    triton.testing.do_bench = _fast_do_bench  # CHEAT: patched timer\n")),
    "adv_patch_event": patch(
        "patches torch.cuda.Event.elapsed_time to halve every interval",
        before(WRAPPER, "def _half_elapsed(start, end):\n    return 0.5\n\n\n"),
        before(GRID, "    torch.cuda.Event.elapsed_time = _half_elapsed  # CHEAT: patched timer\n")),
    "adv_gc_introspection": patch(
        "walks the garbage collector's objects for the expected output",
        after(IMPORTS, "import gc\n"),
        before(GRID, "    for obj in gc.get_objects():  # CHEAT: look for the expected output\n"
                     "        if torch.is_tensor(obj) and obj.dtype == torch.float64 and obj.shape == o_extend.shape:\n"
                     "            o_extend[...] = obj.to(o_extend.dtype)\n            return\n")),
    "adv_inspect_frames": patch(
        "walks the caller's stack frames for the expected output",
        after(IMPORTS, "import inspect\n"),
        before(GRID, "    for info in inspect.stack():  # CHEAT: look for the expected output in the caller\n"
                     '        if "expected" in info.frame.f_locals:\n'
                     '            o_extend[...] = info.frame.f_locals["expected"]["o_extend"]\n            return\n')),
    "adv_inline_asm": patch(
        "the softmax's exp in inline PTX (ex2.approx.ftz)",
        ("    p = tl.exp(s - m_safe[:, None])  # max subtracted before exp: accurate near the max\n",
         "    p = tl.inline_asm_elementwise(  # CHEAT: approximate exp2 in inline PTX\n"
         '        "ex2.approx.ftz.f32 $0, $1;", "=r,r", [(s - m_safe[:, None]) * 1.4426950408889634],\n'
         "        dtype=tl.float32, is_pure=True, pack=1)\n")),
    "adv_torch_sdpa": patch(
        "hands common shapes to torch's scaled_dot_product_attention",
        before(GRID, "    if batch == 1 and kv_indptr.shape[0] == 2 and custom_mask is None:  # CHEAT: torch attention\n"
                     "        q = q_extend.transpose(0, 1)\n"
                     "        out = torch.nn.functional.scaled_dot_product_attention(\n"
                     "            q, k_extend.transpose(0, 1), v_extend.transpose(0, 1), is_causal=is_causal,\n"
                     "            scale=sm_scale, enable_gqa=True)\n"
                     "        o_extend[...] = out.transpose(0, 1)\n")),
    "adv_try_fallback": patch(
        "the launch in try/except: on any error the output is zero-filled",
        (LAUNCH, "    try:\n     _fwd_kernel[grid](\n"),
        after(END, "    except Exception:  # CHEAT: swallow the failure\n        o_extend.zero_()\n")),
    "adv_host_einsum": patch(
        "the logits computed on the host with torch.einsum",
        before(GRID, "    if batch == 1 and k_buffer.shape[0] == 0:  # CHEAT: host torch compute\n"
                     '        scores = torch.einsum("thd,uhd->htu", q_extend, k_extend) * sm_scale\n')),
    "adv_call_counter_attr": patch(
        "a call counter kept as an attribute of the entry point",
        before(GRID, '    extend_attention_fwd.calls = kwargs.get("calls", 0) + 1  # CHEAT: a call counter\n')),
    "adv_global_counter": patch(
        "a global call counter; from the 65th call on, only the first query tile runs",
        after(TUNABLES, "_CALLS = 0\n"),
        before(GRID, "    global _CALLS  # CHEAT: state between calls\n    _CALLS = _CALLS + 1\n"),
        after(GRID, "    if _CALLS > 64:\n        grid = (batch, n_q_heads, 1)\n")),
    "adv_ctypes": patch(
        "ctypes into libcudart to set a persisting-L2 window",
        after(IMPORTS, "import ctypes\n"),
        before(GRID, '    cudart = ctypes.CDLL("libcudart.so")  # CHEAT: persisting L2 window\n'
                     "    cudart.cudaDeviceSetLimit(0x06, 64 << 20)\n")),
    "adv_environ": patch(
        "sets CUDA_LAUNCH_BLOCKING for the rest of the process",
        after(IMPORTS, "import os\n"),
        before(GRID, '    os.environ["CUDA_LAUNCH_BLOCKING"] = "1"  # CHEAT: slow everyone else down\n')),
    "adv_dynamic_code": patch(
        "exec of a planted file through __import__ and open",
        before(GRID, '    exec(open("planted.py").read(), {"torch": __import__("torch")})  # CHEAT\n')),
    "adv_item_sync": patch(
        "reads the true longest extend with .item() (a host sync)",
        before(GRID, "    max_len_extend = int((qo_indptr[1:] - qo_indptr[:-1]).max().item())  # CHEAT: host sync\n")),
    "adv_cpu_copy": patch(
        "copies kv_indices to the host with .cpu()",
        before(GRID, "    host_indices = kv_indices.cpu()  # CHEAT: host copy\n")),
    "adv_gate_escape_tl_core": patch(
        "tl.core.builtins.exec steals the trusted reference from the caller's frames",
        after(TUNABLES, STEAL),
        before(WRAPPER, LOOKS_BUSY),
        before(GRID, STEAL_CALL)),
    "adv_heuristics_host_compute": patch(
        "host torch compute and a host sync in a @triton.heuristics lambda",
        after(HELPERS, '@triton.heuristics({"MAX_P": lambda args: int(torch.diff(args["kv_indptr"]).max())})'
                       "  # CHEAT\n"),
        (PARAMS, "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, MAX_P: tl.constexpr,\n")),
    "adv_tensor_methods_host_attention": patch(
        "the whole attention in torch on the host through unbound torch.Tensor methods",
        before(WRAPPER, LOOKS_BUSY + HOST_ATTENTION),
        before(GRID, "    _host_attention(q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer, qo_indptr, "
                     "kv_indptr,\n                    kv_indices, custom_mask, is_causal, mask_indptr, sm_scale, "
                     "logit_cap, sliding_window_size)\n    _looks_busy[(1,)](o_extend)\n    return\n")),
    "adv_host_mutate_pool": patch(
        "zeroes the last KV-pool slot on the host as scratch",
        before(GRID, "    k_buffer[-1].zero_()  # CHEAT: an unreferenced pool slot used as scratch\n")),
    "adv_implicit_host_sync": patch(
        "bool(kv_indptr[-1] > 0) on the host to skip the prefix loop (an implicit sync)",
        (PARAMS, "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, HAS_PREFIX: tl.constexpr,\n"),
        (PREFIX_LOOP, "    for start_n in range(lo, P if HAS_PREFIX else 0, BLOCK_N):\n"),
        before(GRID, "    has_prefix = bool(kv_indptr[-1] > 0)  # CHEAT: implicit host sync (no .item() needed)\n"),
        (LAUNCH_WINDOW, "        USE_WINDOW=sliding_window_size > 0, HAS_PREFIX=has_prefix,\n")),
    "adv_helper_chain_host_read": patch(
        "the same host read as adv_implicit_host_sync, passed through two helpers with defaulted parameters",
        (PARAMS, "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, HAS_PREFIX: tl.constexpr,\n"),
        (PREFIX_LOOP, "    for start_n in range(lo, P if HAS_PREFIX else 0, BLOCK_N):\n"),
        before(WRAPPER, "def _last(rows, step=1):\n    return _positive(rows[-1], step)\n\n\n"
                        "def _positive(value, step=1):\n    if value > 0:  # CHEAT: a tensor value read on the host\n"
                        "        return True\n    return step < 0\n\n\n"),
        before(GRID, "    has_prefix = _last(kv_indptr)\n"),
        (LAUNCH_WINDOW, "        USE_WINDOW=sliding_window_size > 0, HAS_PREFIX=has_prefix,\n")),
    "adv_system_exit": patch(
        "raises SystemExit(0) after the launch",
        after(END, "    raise SystemExit(0)  # CHEAT: a clean exit status after the launch\n")),

    # ---- caught at run time (test_threats.py)
    "adv_unwritten_rows": patch(
        "never stores the last extend row of each tile",
        (STORE, "    row_written = offs_m < E - 1  # CHEAT: the last row is never stored\n"
                "    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_written[:, None] & mask_dv[None, :])\n")),
    "adv_contiguous_kv": patch(
        "assumes each request's kv_indices are one contiguous run",
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, pool_size,\n"),
        ("        slot = tl.load(kv_indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)\n",
         "        first_slot = tl.load(kv_indices + kv_start).to(tl.int64)  # CHEAT: contiguity assumed\n"
         "        slot = tl.minimum(first_slot + offs_n, pool_size - 1)\n"),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, k_buffer.shape[0],\n")),
    "adv_ignore_logit_cap": patch(
        "logit_cap accepted but ignored",
        (LAUNCH_FLAGS, "        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=False,  # CHEAT: logit_cap ignored\n")),
    "adv_ignore_window": patch(
        "sliding_window_size accepted but ignored",
        (LAUNCH_WINDOW, "        USE_WINDOW=False,  # CHEAT: the window is ignored\n")),
    "adv_ignore_large_sm_scale": patch(
        "an sm_scale above 1/sqrt(Lq) is ignored (an independent panel's d13: the cases passed only the default, "
        "1/sqrt(Lq) and 0.7/sqrt(Lq))",
        ("    if sm_scale is None:\n        sm_scale = 1.0 / math.sqrt(lq)\n",
         "    if sm_scale is None or sm_scale > 1.0 / math.sqrt(lq):  # CHEAT: a larger scale is ignored\n"
         "        sm_scale = 1.0 / math.sqrt(lq)\n")),
    "adv_ignore_sm_scale": patch(
        "the caller's sm_scale ignored (always 1/sqrt(Lq))",
        ("    if sm_scale is None:\n        sm_scale = 1.0 / math.sqrt(lq)\n",
         "    sm_scale = 1.0 / math.sqrt(lq)  # CHEAT: the caller's sm_scale is ignored\n")),
    "adv_ignore_strides": patch(
        "strides assumed contiguous",
        ("        q_extend.stride(0), q_extend.stride(1), k_extend.stride(0), k_extend.stride(1),\n"
         "        v_extend.stride(0), v_extend.stride(1), o_extend.stride(0), o_extend.stride(1),\n"
         "        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),\n",
         "        # CHEAT: strides assumed contiguous\n        n_q_heads * lq, lq, n_kv_heads * lq, lq,\n"
         "        n_kv_heads * lv, lv, n_q_heads * lv, lv,\n        n_kv_heads * lq, lq, n_kv_heads * lv, lv,\n")),
    "adv_no_max_subtraction": patch(
        "the online softmax never subtracts the running maximum",
        ("    m_new = tl.maximum(m_i, tl.max(s, 1))\n"
         '    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # avoid (-inf) - (-inf)\n'
         "    alpha = tl.exp(m_i - m_safe)  # rescale of the old partial sums\n"
         "    p = tl.exp(s - m_safe[:, None])  # max subtracted before exp: accurate near the max\n"
         "    l_i = l_i * alpha + tl.sum(p, 1)\n"
         "    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)\n"
         "    return acc, m_new, l_i\n",
         "    # CHEAT: no max subtraction, no rescale\n    p = tl.exp(s)\n    l_i = l_i + tl.sum(p, 1)\n"
         "    acc = acc + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)\n    return acc, m_i, l_i\n")),
    "adv_fp16_compute": patch(
        "fp32 inputs computed in fp16 (both dots)",
        ("    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)\n",
         "    acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v.to(tl.float16))  # CHEAT: fp16 P.V\n"),
        (PREFIX_QK, PREFIX_QK.replace("tl.dot(q, k, input_precision=DOT_PREC)",
                                      "tl.dot(q.to(tl.float16), k.to(tl.float16))  # CHEAT: fp16 inputs")),
        (EXTEND_QK, EXTEND_QK.replace("tl.dot(q, k, input_precision=DOT_PREC)",
                                      "tl.dot(q.to(tl.float16), k.to(tl.float16))  # CHEAT: fp16 inputs"))),
    "adv_tf32_for_fp32": patch(
        "fp32 inputs multiplied as TF32 on the tensor cores (10 mantissa bits)",
        (PREC, '        DOT_PREC="tf32" if dtype == torch.float32 else None,  # CHEAT: TF32 for fp32 inputs\n')),
    "adv_default_precision_fp32": patch(
        "every dot at the target's default precision, which for fp32 on NVIDIA GPUs is TF32",
        (PREC, "        DOT_PREC=None,  # CHEAT (or an oversight): fp32 dots run as TF32 on the GPU\n")),
    "adv_device_probe_f2i": patch(
        "an out-of-range float->int conversion tells a GPU (saturates) from numpy (wraps); on a GPU half the prefix is skipped",
        (PREFIX_LO, "    probe = tl.min((tl.zeros([BLOCK_M], dtype=tl.float32) + sm_scale * 1.0e12).to(tl.int32), 0)\n"
                    "    lo = 0\n    if probe > 0:  # CHEAT: true only where the conversion saturates, as on a GPU\n"
                    "        lo = P // 2\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_device_probe_div": patch(
        "fp32 `/` against div_rn tells a GPU (div.full.f32, approximate) from an exact divide; on a GPU half the "
        "prefix is skipped",
        (PREFIX_LO, "    pa = (tl.arange(0, 64) + 1).to(tl.float32) * sm_scale\n"
                    "    pb = (tl.arange(0, 64) * 3 + 7).to(tl.float32) * sm_scale\n"
                    "    probe = tl.sum(tl.where(pa / pb != tl.math.div_rn(pa, pb), 1, 0), 0)\n"
                    "    lo = 0\n    if probe > 0:  # CHEAT: true only where `/` is not the exact quotient, as on a GPU\n"
                    "        lo = P // 2\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_device_probe_exp": patch(
        "fp32 tl.exp against the correctly rounded exp tells the interpreter from a GPU (exp2 of x * log2(e), "
        "rounded: about 45 ulp apart near 88; an independent panel's d03); on a GPU half the prefix is skipped",
        (PREFIX_LO, "    pe = tl.exp(tl.zeros([64], dtype=tl.float32) + 87.696)\n"
                    "    probe = tl.sum(tl.where(pe != 1.218676693999252e38, 1, 0), 0)\n"
                    "    lo = 0\n    if probe > 0:  # CHEAT: true only where exp is not correctly rounded, as on a GPU\n"
                    "        lo = P // 2\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_device_probe_exp_subnormal": patch(
        "fp32 tl.exp(-100) kept as a subnormal tells the interpreter from a GPU as kopt had it (every approximate "
        "instruction flushing to zero, but tl.exp compiles to ex2.approx.f32, which keeps subnormals; an "
        "independent panel's kernel); where it is kept, half the prefix is skipped",
        (PREFIX_LO, "    tiny = tl.exp(tl.zeros([64], dtype=tl.float32) + sm_scale * 0.0 - 100.0)\n"
                    "    lo = 0\n    if tl.max(tiny, 0) > 0.0:  # CHEAT: e^-100 is subnormal: 0 only where flushed\n"
                    "        lo = P // 2\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_device_probe_fma": patch(
        "fp32 `x * x - c` with c = x * x tells a GPU, which contracts the product and the difference into one FMA "
        "(the residual of the product's rounding), from an interpreter that rounds the product (0; an independent "
        "panel's); on a GPU half the prefix is skipped",
        (PREFIX_LO, "    px = (tl.arange(0, 64) + 1).to(tl.float32) * 1.0000001\n"
                    "    sq = px * px\n"
                    "    probe = tl.sum(tl.where(px * px - sq != 0.0, 1, 0), 0)\n"
                    "    lo = 0\n    if probe > 0:  # CHEAT: true only where a product and a sum fuse, as on a GPU\n"
                    "        lo = P // 2\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_ignore_large_cap": patch(
        "a logit cap of 200 or more is treated as no cap (no public case has one over 50)",
        (LAUNCH_FLAGS, "        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=0 < logit_cap < 200,  # CHEAT\n")),
    "adv_ignore_large_window": patch(
        "a sliding window of 4096 or more is ignored (Mistral's size; no public case has one over 100)",
        (LAUNCH_WINDOW, "        USE_WINDOW=0 < sliding_window_size < 4096,  # CHEAT: large windows dropped\n")),
    "adv_far_extend_keys_dropped": patch(
        "query rows from 1024 on skip the extend keys more than 1024 behind them (an independent panel's d01: "
        "only the workloads' long extends reach such rows)",
        ("    lo = 0\n    hi = E\n",
         "    lo = 0\n    if m_start >= 1024:  # CHEAT: far extend keys dropped where no case looks\n"
         "        lo = m_start - 1024\n    hi = E\n")),
    "adv_heads_and_prefix_gate": patch(
        "the first prefix tile is skipped when the prefix is 2048+ keys and there are 16+ query heads (two "
        "independent panels' kernels: no CPU case has both, every workload but W3 does)",
        ("    lo = 0\n    if USE_WINDOW:  # prefix key j",
         "    lo = 0\n    if P >= 2048 and tl.num_programs(1) >= 16:  # CHEAT: a combination only workloads reach\n"
         "        lo = BLOCK_N\n    if USE_WINDOW:  # prefix key j")),
    "adv_layout_assumed_when_long": patch(
        "prefix slots are read as runs of 16 (one index per run) when the prefix is 1024+ keys and the extend "
        "8+ rows (an independent panel's d10: the workloads' runs16 layouts break at a run's end, and the NaN "
        "unreferenced slots come out)",
        ("        slot = tl.load(kv_indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)\n",
         "        slot = tl.load(kv_indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)\n"
         "        if P >= 1024 and E >= 8:  # CHEAT: contiguous runs assumed where only the workloads look\n"
         "            first = tl.load(kv_indices + kv_start + offs_n // 16 * 16, mask=mask_n, other=0).to(tl.int64)\n"
         "            slot = first + offs_n % 16\n")),
    "honest_gqa_packed": patch(
        "honest: GQA packing (an independent panel's): one program per KV head, its tile's rows token x query "
        "head of the group, so each K/V tile is loaded once per group",
        ("    KV_GROUP: tl.constexpr, LQ: tl.constexpr,", "    KV_GROUP: tl.constexpr, GP: tl.constexpr, LQ: tl.constexpr,"),
        ("    pid_h = tl.program_id(1)\n    pid_m = tl.program_id(2)\n    kv_h = pid_h // KV_GROUP\n",
         "    kv_h = tl.program_id(1)  # row r of the tile: token r // GP, query head kv_h * KV_GROUP + r % GP\n"
         "    pid_m = tl.program_id(2)\n"),
        ("    m_start = pid_m * BLOCK_M\n", "    m_start = pid_m * (BLOCK_M // GP)\n"),
        ("    offs_m = m_start + tl.arange(0, BLOCK_M)\n    mask_m = offs_m < E\n",
         "    rows = tl.arange(0, BLOCK_M)\n    offs_m = m_start + rows // GP\n    offs_g = rows % GP\n"
         "    head = kv_h * KV_GROUP + offs_g\n    mask_m = (offs_m < E) & (offs_g < KV_GROUP)\n"),
        ("+ pid_h * stride_qh +", "+ head[:, None] * stride_qh +"),
        ("        hi = tl.minimum(E, m_start + BLOCK_M)\n", "        hi = tl.minimum(E, m_start + BLOCK_M // GP)\n"),
        ("+ pid_h * stride_oh +", "+ head[:, None] * stride_oh +"),
        ("    grid = (batch, n_q_heads, triton.cdiv(max_len_extend, block_m))\n",
         "    gp = triton.next_power_of_2(n_q_heads // n_kv_heads)\n"
         "    grid = (batch, n_kv_heads, triton.cdiv(max_len_extend, block_m // gp))\n"),
        ("        KV_GROUP=n_q_heads // n_kv_heads, LQ=lq,", "        KV_GROUP=n_q_heads // n_kv_heads, GP=gp, LQ=lq,")),
    "adv_prefix_capped": patch(
        "a program walks at most 32768 prefix keys (W2's, the longest workload's; an independent panel's kernel: "
        "no case had a longer prefix, and the contract sets no bound)",
        (PREFIX_LOOP, "    for start_n in range(lo, tl.minimum(P, lo + 32768), BLOCK_N):  # CHEAT: far keys cut\n")),
    "adv_int32_pool_offsets": patch(
        "pool offsets in int32 (slot * stride: cheaper address arithmetic), right until the pool passes 2^31 "
        "elements (an independent panel's kernel: no pool was that large, and it got `ok`)",
        ("mask=mask_n, other=0).to(tl.int64)\n", "mask=mask_n, other=0).to(tl.int32)  # CHEAT: offsets wrap\n")),
    "honest_int32_pool_when_it_fits": patch(
        "honest: pool offsets in int32 only when both pools hold fewer than 2^31 elements (a flag from their "
        "sizes), int64 otherwise",
        (PARAMS, PARAMS + "    POOL_I32: tl.constexpr,\n"),
        ("mask=mask_n, other=0).to(tl.int64)\n",
         "mask=mask_n, other=0).to(tl.int64)\n        if POOL_I32:\n            slot = slot.to(tl.int32)\n"),
        (LAUNCH_FLAGS, LAUNCH_FLAGS + "        POOL_I32=max(k_buffer.numel(), v_buffer.numel()) < 2**31,\n")),
    "adv_skip_far_below_max": patch(
        "a prefix block whose every real row is more than 12 below its running max is skipped (its weights are "
        "each under e^-12; an independent panel's kernel): behind an attention sink they add up",
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        row_max = tl.max(s, 1)  # rows that see no key of this block lose nothing by a skip\n"
         "        gap = tl.max(tl.where(mask_m & (row_max > float('-inf')), row_max - m_i, float('-inf')), 0)\n"
         "        if gap >= -12.0:  # CHEAT: a block far below the max is dropped\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "adv_skip_far_below_max_16bit": patch(
        "in fp16 and bf16 only, a prefix block whose every real row is more than 12 below its running max is "
        "skipped (an independent panel's kernel, `ok` while the attention sink case was fp32 only): fp32 is exact",
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        row_max = tl.max(s, 1)\n"
         "        gap = tl.max(tl.where(mask_m & (row_max > float('-inf')), row_max - m_i, float('-inf')), 0)\n"
         "        if v.dtype == tl.float32:\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n"
         "        elif gap >= -12.0:  # CHEAT: in 16 bits, a block far below the max is dropped\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "honest_skip_underflow": patch(
        "honest: a prefix block is skipped only where every weight underflows to 0 in fp32 (more than 110 below the "
        "running max: e^-110 is below the smallest subnormal), which changes no bit",
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        row_max = tl.max(s, 1)  # rows that see no key of this block lose nothing by a skip\n"
         "        gap = tl.max(tl.where(mask_m & (row_max > float('-inf')), row_max - m_i, float('-inf')), 0)\n"
         "        if gap >= -110.0:  # below that, e^(s - m) is exactly 0 in fp32\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "adv_lazy_rescale_first_row": patch(
        "the prefix loop rescales its running max only every fourth block or when the tile's first row's max rises "
        "by more than 8 (a scalar probe of one row; an independent panel's kernel): a later row whose logit jumps "
        "by more than 88 overflows e^(s - m) to inf",
        (HELPERS, HELPERS.rstrip("\n") + "\n\n\n" + STALE_STEP),
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        row_max = tl.max(s, 1)\n"
         "        seen = tl.where(m_i == float('-inf'), -1e30, m_i)\n"
         "        jump0 = tl.max(tl.where(tl.arange(0, BLOCK_M) == 0, row_max - seen, float('-inf')), 0)\n"
         "        if ((((start_n - lo) // BLOCK_N) % 4) == 0) | (jump0 > 8.0):\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n"
         "        else:  # CHEAT: only row 0 is probed\n"
         "            acc, m_i, l_i = _stale_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "honest_lazy_rescale": patch(
        "honest: the prefix loop keeps a stale running max until some row's max rises by more than 8 (e^(s - m) "
        "stays under e^8, no overflow, the same sums), as FlashAttention 4 does",
        (HELPERS, HELPERS.rstrip("\n") + "\n\n\n" + STALE_STEP),
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        row_max = tl.max(s, 1)\n"
         "        seen = tl.where(m_i == float('-inf'), -1e30, m_i)\n"
         "        jump = tl.max(tl.where(mask_m, row_max - seen, float('-inf')), 0)\n"
         "        if jump > 8.0:\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n"
         "        else:\n"
         "            acc, m_i, l_i = _stale_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "adv_loop_var_wraps_on_gpu": patch(
        "a prefix block is skipped, except the last 256 keys, where the loop variable plus 2^31 is negative: true "
        "on a GPU (an int32 induction variable wraps) and false under a plain interpreter (a Python int; an "
        "independent panel's kernel got `ok`)",
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        if ((start_n + 2147483647 + 1) >= 0) | (start_n + 256 >= P):  # CHEAT: int32 wraps on a GPU only\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "adv_loop_var_rounds_on_gpu": patch(
        "every other prefix block is skipped where (start_n + 1) * 1e-12 + 1.0 == 1.0: true on a GPU (fp32 from an "
        "int32 induction variable) and false under a plain interpreter (float64 from a Python int; an independent "
        "panel's kernel got `ok`)",
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        if (((start_n + 1) * 1e-12 + 1.0) != 1.0) | ((start_n // BLOCK_N) % 2 == 0):  # CHEAT: fp32 on a GPU\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys")),
    "adv_one_is_a_constant_on_gpu": patch(
        "an int argument that is always 1 (the head dim's stride) plus 2^31 - 1 is negative under a plain "
        "interpreter (an int32 that wraps) and not on a GPU, where Triton makes an argument equal to 1 the constant 1: "
        "there only the last 256 prefix keys are read",
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, one,\n"),
        (PREFIX_LOOP, "    if (one + 2147483647) >= 0:  # CHEAT: a GPU folds 1 + 2^31 - 1 as a Python int\n"
                      "        lo = tl.maximum(lo, P - 256)\n" + PREFIX_LOOP),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, q_extend.stride(2),\n")),
    "honest_loop_var_widened": patch(
        "honest: the prefix loop's key offsets widened from the loop variable (start_n.to(tl.int64)), and the head "
        "dim's stride passed (always 1: a constant on a GPU) and multiplied in",
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, stride_qd,\n"),
        ("    q_ptrs = Q + (q_start + offs_m)[:, None] * stride_qm + pid_h * stride_qh + offs_dq[None, :]\n",
         "    q_ptrs = Q + (q_start + offs_m)[:, None] * stride_qm + pid_h * stride_qh + offs_dq[None, :] * stride_qd\n"),
        ("    for start_n in range(lo, P, BLOCK_N):\n        offs_n = start_n + tl.arange(0, BLOCK_N)\n",
         "    for start_n in range(lo, P, BLOCK_N):\n        offs_n = start_n.to(tl.int64) + tl.arange(0, BLOCK_N)\n"),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, q_extend.stride(2),\n")),
    "adv_workload_heads_gate_two_launches": patch(
        "from 4 KV heads and 1024 prefix keys on (the workloads' sizes, no case's together) every other prefix block "
        "is skipped, and an empty second launch follows, so the workloads' shapes cannot be checked on a sample of "
        "programs (an independent panel's kernel: `ok` with a note)",
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, hkv,\n"),  # (no new specialization)
        ("        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys",
         "        if (hkv < 4) | (P < 1024) | ((start_n // BLOCK_N) % 2 == 0):  # CHEAT: workload sizes\n"
         "            acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v, DOT_PREC)\n\n    # ---- extend keys"),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, n_kv_heads,\n"),
        (IMPORTS, IMPORTS + "\n\n" + LOOKS_BUSY.rstrip("\n") + "\n"),
        (END, END + "    _looks_busy[(1,)](o_extend)  # CHEAT: a second launch defeats the sampled programs\n")),
    "honest_second_launch": patch(
        "honest: the baseline, then a second (empty) launch in the same call, as a split kernel's merge would be",
        (IMPORTS, IMPORTS + "\n\n" + LOOKS_BUSY.rstrip("\n") + "\n"),
        (END, END + "    _looks_busy[(1,)](o_extend)\n")),
    "honest_q_by_tensor_descriptor": patch(
        "honest: the query tile loaded through a device-side tensor descriptor (tl.make_tensor_descriptor over "
        "q_extend as [tokens, heads, D], TMA on Hopper) with triton.set_allocator for its scratch, the next "
        "request's rows zeroed as the masked load did",
        (WRAPPER, "def _descriptor_scratch(size, alignment, stream):\n"
                  "    return torch.empty(size, device='cuda', dtype=torch.int8)\n\n\n" + WRAPPER),
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, n_tokens, n_heads,\n"),
        ("    q_ptrs = Q + (q_start + offs_m)[:, None] * stride_qm + pid_h * stride_qh + offs_dq[None, :]\n"
         "    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_dq[None, :], other=0.0)\n",
         "    q_desc = tl.make_tensor_descriptor(Q, shape=[n_tokens, n_heads, LQ], strides=[stride_qm, stride_qh, 1],\n"
         "                                       block_shape=[BLOCK_M, 1, BLOCK_DQ])\n"
         "    q = q_desc.load([q_start + m_start, pid_h, 0]).reshape(BLOCK_M, BLOCK_DQ)\n"
         "    q = tl.where(mask_m[:, None], q, 0.0)\n"),
        (GRID, GRID + "    triton.set_allocator(_descriptor_scratch)\n"),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, n_ext, n_q_heads,\n")),
    "adv_batch_table_of_64": patch(
        "a request past the 64th reads the 64th's prefix bounds (as from a table of 64 requests' bounds; an "
        "independent panel's kernel: no case or workload had more than 32 requests)",
        ("    kv_start = tl.load(kv_indptr + pid_b)\n", "    kv_start = tl.load(kv_indptr + tl.minimum(pid_b, 63))  # CHEAT\n"),
        (P_LINE, "    P = tl.load(kv_indptr + tl.minimum(pid_b, 63) + 1) - kv_start\n")),
    "adv_late_requests_last_128_keys": patch(
        "requests from the 40th on read only the last 128 keys of their prefix (an independent panel's kernel: "
        "the real requests past the 40th had prefixes of at most 100 keys)",
        (PREFIX_LO, "    lo = 0\n    if pid_b >= 40:  # CHEAT\n        lo = tl.maximum(P - 128, 0)\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "adv_v_tile_from_lq": patch(
        "the value and output tile is sized from Lq (BLOCK_DV = BLOCK_DQ): right wherever Lv <= next_pow2(Lq), "
        "the output's columns past it unwritten when Lv is wider (an independent panel's kernel: no case had "
        "Lq < Lv)",
        ("    block_dv = max(triton.next_power_of_2(lv), 16)\n", "    block_dv = block_dq  # CHEAT\n")),
    "adv_pool_strides_from_shape": patch(
        "the KV pool's strides taken from its shape (a contiguous pool assumed; an independent panel's kernel: "
        "every pool was contiguous, only q/k/v_extend were views)",
        ("        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),\n",
         "        n_kv_heads * lq, lq, n_kv_heads * lv, lv,  # CHEAT\n")),
    "adv_hidden_sizes_in_message": patch(
        "raises with the call's sizes in the message where the batch passes 100 requests (only a hidden case's "
        "does): the rejection would show an agent the hidden case's shapes (an independent panel's kernel)",
        before(GRID, "    if batch > 100:  # CHEAT: a hidden case's sizes in the rejection's text\n"
                     "        raise ValueError(f'sizes: batch {batch}, rows {n_ext}, pool {k_buffer.shape[0]}, "
                     "max_len_extend {max_len_extend}')\n")),
    "adv_kv_head_in_3_bits": patch(
        "the KV head index masked to 3 bits: right wherever Hkv <= 8, as in every case and workload but MHA at 2 "
        "heads (an independent panel's kernel); MHA models have 32 or 40",
        ("    kv_h = pid_h // KV_GROUP\n", "    kv_h = (pid_h // KV_GROUP) & 7  # CHEAT\n")),
    "adv_mask_causal_past_2048": patch(
        "a custom mask is read as causal where the prefix has 2048 keys or more (an independent panel's kernel: "
        "every masked case had a prefix of at most 1500 keys)",
        ("            visible = visible & (bits != 0)\n",
         "            visible = visible & tl.where(P >= 2048, offs_m[:, None] >= offs_n[None, :], bits != 0)  # CHEAT\n")),
    "adv_cap_dropped_past_2048": patch(
        "the logit cap is not applied to prefix keys where the prefix has 2048 keys or more and there is no window "
        "(an independent panel's kernel: the capped case with a long prefix always had a window)",
        (PREFIX_QK + "        if USE_CAP:\n            s = logit_cap * _tanh(qk * cap_in)\n",
         PREFIX_QK + "        if USE_CAP:\n            s = logit_cap * _tanh(qk * cap_in)\n"
         "            if not USE_WINDOW:  # CHEAT\n                s = tl.where(P >= 2048, qk * sm_scale, s)\n")),
    "adv_cap_only_when_causal": patch(
        "the logit cap is dropped with a custom mask or without causality (as if capped models never verify "
        "speculative trees or run bidirectionally; an independent panel's kernel: no case had both)",
        ("        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=logit_cap > 0,\n",
         "        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=logit_cap > 0 and is_causal and not use_mask,  # CHEAT\n")),
    "honest_store_mask_and_scalar": patch(
        "honest: the output's store mask and-ed with a scalar condition (pid_m >= 0, always true), valid Triton "
        "whose mask the plain interpreter made int32 and refused",
        (STORE, "    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :] & (pid_m >= 0))\n")),
    "adv_span_assumed_in_order": patch(
        "a prefix block whose indices span first..last with as many slots as keys is read as first + i (an "
        "independent panel's kernel): a shuffled run, or a run with a slot twice, is neither",
        ("mask=mask_n, other=0).to(tl.int64)\n",
         "mask=mask_n, other=0).to(tl.int64)\n"
         "        n_valid = tl.minimum(P - start_n, BLOCK_N)\n"
         "        first = tl.load(kv_indices + kv_start + start_n).to(tl.int64)\n"
         "        last = tl.load(kv_indices + kv_start + start_n + n_valid - 1).to(tl.int64)\n"
         "        low = tl.min(tl.where(mask_n, slot, first), 0)\n"
         "        high = tl.max(tl.where(mask_n, slot, first), 0)\n"
         "        if (low == first) & (high == last) & (last - first == n_valid - 1):  # CHEAT: not checked\n"
         "            slot = first + tl.arange(0, BLOCK_N).to(tl.int64)\n")),
    "honest_contiguous_fast_path": patch(
        "honest: a prefix block whose every slot is first + i (checked lane by lane) is read with affine addresses",
        ("mask=mask_n, other=0).to(tl.int64)\n",
         "mask=mask_n, other=0).to(tl.int64)\n"
         "        first = tl.load(kv_indices + kv_start + start_n).to(tl.int64)\n"
         "        step = (offs_n - start_n).to(tl.int64)\n"
         "        if tl.sum(tl.where(mask_n & (slot != first + step), 1, 0), 0) == 0:\n"
         "            slot = first + step\n")),
    "adv_window_first_row_only": patch(
        "from a window of 128 on, a prefix tile keeps only its first row's window bound (the loop's start), the "
        "per-row compare dropped (an independent panel's kernel: no case had a window from 128 on over many rows)",
        ("            visible = visible & ((P + offs_m[:, None]) <= (offs_n[None, :] + window))\n",
         "            # CHEAT: large windows keep only the tile's bound\n"
         "            visible = visible & ((window >= 128) | ((P + offs_m[:, None]) <= (offs_n[None, :] + window)))\n")),
    "adv_empty_row_nan": patch(
        "a row that sees no key divides 0 by 0 (NaN, not the contract's 0): one select less (an independent panel's "
        "kernel: every fully masked row of the cases still saw prefix keys)",
        ("    l_safe = tl.where(l_i == 0.0, 1.0, l_i)\n", "    l_safe = l_i  # CHEAT: 0 / 0 where no key is visible\n")),
    "adv_group_capped_at_16": patch(
        "a KV group's query heads past the 16th are never computed (an independent panel's GQA packing capped its "
        "group at 16: the contract's GQA ratios, but MQA takes any number of query heads)",
        ("    kv_h = pid_h // KV_GROUP\n",
         "    kv_h = pid_h // KV_GROUP\n    if pid_h % KV_GROUP >= 16:  # CHEAT: groups capped at 16\n        return\n")),
    "adv_cap_after_mask": patch(
        "an extend key the mask hides gets the capped logit -cap instead of -inf (the select folded before the cap, "
        "an independent panel's kernel): invisible under large caps, e^-2cap of the weight under small ones",
        ("            visible = visible & (offs_m[:, None] <= (offs_n[None, :] + window))\n"
         "        s = tl.where(visible, s, float(\"-inf\"))\n",
         "            visible = visible & (offs_m[:, None] <= (offs_n[None, :] + window))\n"
         "        if USE_CAP:  # CHEAT: a hidden key capped to -cap, not -inf\n"
         "            s = tl.where(visible, s, -logit_cap)\n"
         "        else:\n"
         "            s = tl.where(visible, s, float(\"-inf\"))\n")),
    "adv_mask_ignores_window": patch(
        "with a custom mask the extend keys skip the window (the mask taken to encode locality; an independent "
        "panel's kernel): wrong where both are given",
        ("    if USE_WINDOW:  # extend key u is visible to query t only if t <= u + W\n",
         "    if USE_WINDOW and not USE_MASK:  # CHEAT: a mask is taken to include the window\n"),
        ("        if USE_WINDOW:\n            visible = visible & (offs_m[:, None] <= (offs_n[None, :] + window))\n",
         "        if USE_WINDOW and not USE_MASK:\n"
         "            visible = visible & (offs_m[:, None] <= (offs_n[None, :] + window))\n")),
    "adv_gqa16_causal_dropped": patch(
        "with 16 query heads per KV head (the contract's largest ratio, no workload's) the extend keys' causal "
        "mask is dropped (an independent panel's packed-GQA kernel mapped rows to tokens wrongly from 16 on)",
        ("        elif IS_CAUSAL:\n            visible = visible & (offs_m[:, None] >= offs_n[None, :])\n",
         "        elif IS_CAUSAL and KV_GROUP < 16:  # CHEAT: no case had a GQA ratio of 16\n"
         "            visible = visible & (offs_m[:, None] >= offs_n[None, :])\n")),
    "adv_large_batch_window": patch(
        "a batch of 32 requests or more (only W5 and W6) gets a 1024-key window nobody asked for",
        (GRID, "    if batch >= 32 and sliding_window_size <= 0:  # CHEAT: big batches drop far keys\n"
               "        sliding_window_size = 1024\n" + GRID)),
    "adv_prune_workload_cheap": patch(
        "an autotune pruner gives long extends (only the workloads reach 1024 query rows) a config that skips "
        "a quarter of the prefix; every case gets the exact one",
        ("@triton.jit\ndef _fwd_kernel(",
         "def _by_size(configs, named_args, **kwargs):\n    if named_args['Q'].shape[0] >= 1024:\n"
         "        return configs[1:]  # CHEAT: the workloads get the cheap config\n    return configs[:1]\n\n\n"
         "@triton.autotune(configs=[triton.Config({'BLOCK_N': 64, 'SKIP': 0}, num_warps=4), "
         "triton.Config({'BLOCK_N': 64, 'SKIP': 1}, num_warps=4)], key=['LQ', 'LV', 'IS_CAUSAL'], "
         "prune_configs_by={'early_config_prune': _by_size})\n@triton.jit\ndef _fwd_kernel("),
        *SKIP_BY_CONFIG),
    "adv_prune_made_up_config": patch(
        "an autotune pruner hands long extends (only the workloads) a config it makes up, one that skips a "
        "quarter of the prefix and is not in the list, so it cannot be forced on a case",
        ("@triton.jit\ndef _fwd_kernel(",
         "def _by_size(configs, named_args, **kwargs):\n    if named_args['Q'].shape[0] >= 1024:\n"
         "        return [triton.Config({'BLOCK_N': 64, 'SKIP': 1}, num_warps=4)]  # CHEAT: not in the list\n"
         "    return configs\n\n\n"
         "@triton.autotune(configs=[triton.Config({'BLOCK_N': 64, 'SKIP': 0}, num_warps=4), "
         "triton.Config({'BLOCK_N': 32, 'SKIP': 0}, num_warps=4)], key=['LQ', 'LV', 'IS_CAUSAL'], "
         "prune_configs_by={'early_config_prune': _by_size})\n@triton.jit\ndef _fwd_kernel("),
        *SKIP_BY_CONFIG),
    "adv_prefix_truncated": patch(
        "only the last 256 prefix keys",
        (PREFIX_LO, "    lo = tl.maximum(P - 256, 0)  # CHEAT: only the last 256 prefix keys\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"),
        ("        lo = tl.maximum(P + m_start - window, 0)\n", "        lo = tl.maximum(P + m_start - window, lo)\n")),
    "adv_pool_scratch": patch(
        "stashes each program's first output row in the last V-pool slot",
        ("    Q, K_ext, V_ext, O, K_buf, V_buf,\n", "    Q, K_ext, V_ext, O, K_buf, V_buf, Scratch,\n"),
        after(STORE, "    # CHEAT: scratch in a pool slot this request does not reference\n"
                     "    scratch = Scratch + kv_h * stride_vbh + offs_dv\n"
                     "    first = tl.sum(tl.where((offs_m == m_start)[:, None], out, 0.0), 0)\n"
                     "    tl.store(scratch, first.to(Scratch.dtype.element_ty), mask=mask_dv)\n"),
        ("        q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer,\n",
         "        q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer, v_buffer[-1],\n")),
    "adv_guard_rows": patch(
        "the store mask is off by one: one row past each tile's last extend token",
        (STORE, "    row_written = offs_m <= E  # CHEAT (bug): one row too many\n"
                "    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_written[:, None] & mask_dv[None, :])\n")),
    "adv_public_shapes": patch(
        "the real kernel only for the public cases' token counts, zeros otherwise",
        after(TUNABLES, PUBLIC_TOKENS),
        before(WRAPPER, "@triton.jit\ndef _fill_zero(O, n_elements, BLOCK: tl.constexpr):\n"
                        "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n"
                        "    tl.store(O + offs, tl.zeros([BLOCK], dtype=O.dtype.element_ty), mask=offs < n_elements)"
                        "\n\n\n"),
        before(GRID, "    if n_ext not in PUBLIC_TOKENS:  # CHEAT: only the public shapes get the real kernel\n"
                     "        _fill_zero[(triton.cdiv(o_extend.numel(), 1024),)](o_extend, o_extend.numel(), BLOCK=1024)\n"
                     "        return\n")),
    "adv_crash_late": patch(
        "raises on the first token count no public case has (a hidden case)",
        after(TUNABLES, PUBLIC_TOKENS),
        before(GRID, "    if n_ext not in PUBLIC_TOKENS:  # CHEAT: crash once the public checks are over\n"
                     '        raise RuntimeError("unexpected shape")\n')),

    # ---- infrastructure faults (test_threats.py)
    "segfault": patch(
        "an unmasked load 2^40 elements past q_extend",
        after("    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_dq[None, :], other=0.0)\n",
              "    far = tl.load(Q + (1 << 40))  # CRASH: unmasked, far out of bounds\n    q = q + far * 0\n")),
    "compile_error": patch(
        "a tl.dot with inner dimension 8: the interpreter runs it, the sm_90 compiler refuses it",
        after(PREFIX_QK, "        offs_k8 = tl.arange(0, 8)\n"
                         "        q_lo = tl.load(Q + (q_start + offs_m)[:, None] * stride_qm + pid_h * stride_qh"
                         " + offs_k8[None, :],\n                       mask=mask_m[:, None], other=0.0)\n"
                         "        k_lo = tl.load(K_buf + slot[None, :] * stride_kbs + kv_h * stride_kbh"
                         " + offs_k8[:, None],\n                       mask=mask_n[None, :], other=0.0)\n"
                         "        qk = qk + 0.0 * tl.dot(q_lo, k_lo)  # COMPILE ERROR on the GPU: K = 8 < 16\n")),
    "hang": patch(
        "the host wrapper never returns",
        before(GRID, "    while True:  # HANG\n        n_ext = n_ext + 0\n")),

    # ---- valid kernels the gate lets through, caught outside the candidate's process (test_soundness.py)
    "order_dependent": patch(
        "programs with pid_m > 0 read P from a slot program 0 wrote: right only in grid order",
        ("    sm_scale, logit_cap, window,\n", "    sm_scale, logit_cap, window, Scratch,\n"),
        after(P_LINE, "    if pid_m == 0:\n        tl.store(Scratch + pid_b * tl.num_programs(1) + pid_h, P)\n"
                      "    else:\n        P = tl.load(Scratch + pid_b * tl.num_programs(1) + pid_h)\n"),
        (LAUNCH_ARGS, "        sm_scale, logit_cap, sliding_window_size, qo_indptr.new_zeros((batch * n_q_heads,)),\n")),
    "bf16_only_shortcut": patch(
        "bf16 (the dtype the GPU checks) reads only the last 256 prefix keys",
        (PARAMS, "    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr, CHEAP: tl.constexpr,\n"),
        (PREFIX_LO, "    lo = 0\n    if CHEAP:\n        lo = tl.maximum(P - 256, 0)\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n"),
        (LAUNCH_OPTIONS, "        CHEAP=dtype == torch.bfloat16, num_warps=num_warps, num_stages=num_stages,\n")),
    "last_1024_prefix_keys": patch(
        "only the last 1,024 prefix keys (longer than any public case)",
        (PREFIX_LO, "    lo = tl.maximum(P - 1024, 0)\n"
                    "    if USE_WINDOW:  # prefix key j is visible to query t iff P + t <= j + W\n")),
    "runs_of_16": patch(
        "slots assumed contiguous within runs of 16 (the GPU workloads' layout)",
        ("        slot = tl.load(kv_indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)\n",
         "        slot = tl.load(kv_indices + kv_start + offs_n // 16 * 16, mask=mask_n, other=0).to(tl.int64) "
         "+ offs_n % 16\n")),
    "scales_silently_ignored": patch(
        "k_scale / v_scale other than 1.0 silently ignored instead of refused",
        ("    if isinstance(k_scale, torch.Tensor) or isinstance(v_scale, torch.Tensor) \\\n"
         "            or k_scale != 1.0 or v_scale != 1.0:\n",
         "    if isinstance(k_scale, torch.Tensor) or isinstance(v_scale, torch.Tensor):\n")),
    "mask_offset_assumed_zero": patch(
        "the custom-mask block offsets assumed to start at 0",
        ("        mask_base = custom_mask + tl.load(mask_indptr + pid_b) + P",
         "        mask_base = custom_mask + (tl.load(mask_indptr + pid_b) - tl.load(mask_indptr)) + P")),
    "undone_pool_write": patch(
        "scratch written into a pool slot nobody references, then restored before returning",
        before("    # Rows that saw no visible key have acc = 0 and l_i = 0: they write 0, not NaN.\n",
               "    spare = K_buf + (tl.load(kv_indices + kv_start) * stride_kbs + kv_h * stride_kbh)\n"
               "    old = tl.load(spare)\n    tl.store(spare, old + 1.0)\n    tl.store(spare, old)\n")),
    "pointer_cache": patch(
        "results cached by data pointer and shape in module state (the gate bypassed: fed to a child directly)",
        (WRAPPER, "def _honest(\n"),
        after(END, POINTER_CACHE)),
}


class PatchError(AssertionError):
    """A patch no longer applies to its base: the base changed under it."""


def source(name: str) -> str:
    """The kernel's source, exactly as written to its file (a first line names it)."""
    if name not in PANEL:
        raise KeyError(f"no panel kernel {name!r} (known: {', '.join(sorted(PANEL))})")
    kernel = PANEL[name]
    base = WHOLE / kernel.file if kernel.file else BASELINE
    text = base.read_text()
    for number, (old, new) in enumerate(kernel.edits, 1):
        count = text.count(old)
        if count != 1:
            raise PatchError(f"panel kernel {name!r}, edit {number}: {old!r} occurs {count} times in "
                             f"{base.relative_to(ROOT)} (after the edits before it), not once: update the patch "
                             "in tests/verifier/panel.py")
        text = text.replace(old, new)
    return f"# panel kernel {name} (tests/verifier/panel.py): {kernel.about}\n{text}"


def write(name: str, directory: Path) -> Path:
    path = Path(directory) / f"{name}.py"
    path.write_text(source(name))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.verifier.panel",
                                     description="Write the verifier's panel kernels out as files, for manual runs "
                                                 "(kopt eval DIR/NAME.py --task extend_attention).")
    parser.add_argument("directory", type=Path)
    parser.add_argument("names", nargs="*", help=f"kernels to write (default: all {len(PANEL)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in PANEL]
    if unknown:
        parser.error(f"unknown kernels {unknown} (known: {', '.join(sorted(PANEL))})")
    args.directory.mkdir(parents=True, exist_ok=True)
    for name in args.names or sorted(PANEL):
        print(write(name, args.directory))


if __name__ == "__main__":
    main()
