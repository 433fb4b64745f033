"""The threat catalogue (docs/threats.md; the row numbers below are its rows), one adversarial
kernel per row, each rejected for the right reason by the real evaluate(): gate rejections name
the rule and the line; runtime rejections name the defence that fired (NaN poison, read-only
inputs, guard pages, hidden cases, fail-closed child handling, timeouts, signals, the AOT
compiler). The kernels are tests/verifier/panel.py's, written out by the `kernel_file` fixture.

Runtime rejections are shown on copies of the real task restricted to the cases that carry
the defence (see panel_support.py: rejection is monotone in the case set), which keeps each
evaluation to a few seconds.
"""

from __future__ import annotations

import math
import re
import threading
import time

import pytest
import torch
from tests.verifier import panel
from tests.verifier.panel_support import SECRET, describe

from kopt.verifier import cpu
from kopt.verifier.evaluate import evaluate, plan_items
from kopt.verifier.session import ChildFailure


def line_of(name: str, marker: str) -> int:
    """The 1-based line of the kernel's file that holds `marker` (exactly one must)."""
    lines = [n for n, text in enumerate(panel.source(name).splitlines(), 1) if marker in text]
    assert len(lines) == 1, f"{name}: marker {marker!r} is on lines {lines}"
    return lines[0]


@pytest.fixture
def run(kernel_file):
    """run(name, task): the real evaluate() of a panel kernel, on CPU."""
    return lambda name, task: evaluate(kernel_file(name), task, device="cpu", secret=SECRET)


# ---------------------------------------------------------------- static gate (instant)
# (kernel, threat row, rule, marker on the offending line, a detail the reason must name)
GATE = [
    ("adv_module_cache", 2, "module-state", "_RESULTS = {}", "module-level values must be constants"),
    ("adv_class_state", 2, "module-code", "class _Cache", "class definitions"),
    ("adv_lru_cache", 3, "decorator", "@functools.lru_cache", "only @triton.jit"),
    ("adv_mutable_default", 3, "mutable-default", "_kv_copies={}", "default argument"),
    ("adv_side_stream", 5, "call", "torch.cuda.Stream()", "torch.cuda.Stream is not on the allowlist"),
    ("adv_threading", 6, "import", "import threading", "'threading'"),
    ("adv_patch_do_bench", 7, "attribute-assignment", "triton.testing.do_bench =", "monkeypatching"),
    ("adv_patch_event", 7, "attribute-assignment", "Event.elapsed_time =", "monkeypatching"),
    ("adv_gc_introspection", 8, "import", "import gc", "'gc'"),
    ("adv_inspect_frames", 8, "import", "import inspect", "'inspect'"),
    ("adv_inline_asm", 14, "triton-api", "inline_asm_elementwise(", "inline_asm_elementwise"),
    ("adv_torch_sdpa", 15, "call", "scaled_dot_product_attention(", "scaled_dot_product_attention is not on"),
    ("adv_try_fallback", 15, "try", "    try:", "must fail, not fall back"),
    ("adv_host_einsum", 15, "call", "torch.einsum(", "torch.einsum is not on the allowlist"),
    ("adv_call_counter_attr", 16, "attribute-assignment", "extend_attention_fwd.calls =", "attributes"),
    ("adv_global_counter", 16, "global", "global _CALLS", "global statements"),
    ("adv_ctypes", 17, "import", "import ctypes", "'ctypes'"),
    ("adv_environ", 19, "import", "import os", "'os'"),
    ("adv_dynamic_code", 20, "name", "exec(open(", "exec() is not allowed"),
    ("adv_item_sync", 23, "host-method", ".max().item()", "reading tensor values or storage on the host"),
    ("adv_cpu_copy", 23, "host-method", "kv_indices.cpu()", "reading tensor values or storage on the host"),
    # found by the first panel; each was accepted before the gate became default-deny
    ("adv_gate_escape_tl_core", 26, "call", "tl.core.builtins.exec(", "core.builtins.exec is not on the allowlist"),
    ("adv_annotation_state", 2, "annotation", "_calls: [] = None,  # CHEAT", "annotations may only name types"),
    ("adv_heuristics_host_compute", 15, "call", "lambda args: int(torch.diff", "torch.diff is not on the allowlist"),
    ("adv_tensor_methods_host_attention", 15, "host-read", "q0, q1 = int(qo_indptr[b])", "int() of a value that may be a tensor"),
    ("adv_host_mutate_pool", 9, "mutation", "k_buffer[-1].zero_()  # CHEAT", ".zero_() only on tensors"),
    ("adv_implicit_host_sync", 23, "host-read", "has_prefix = bool(kv_indptr[-1] > 0)", "a value that may be a tensor"),
    # the helpers' kinds come from their callers: a tensor passed down two helpers is still a tensor
    ("adv_helper_chain_host_read", 23, "host-read", "if value > 0:  # CHEAT", "a value that may be a tensor"),
]


@pytest.mark.parametrize("name, row, rule, marker, detail", GATE, ids=[g[0] for g in GATE])
def test_gate_rejects(name, row, rule, marker, detail, extend_task, run):
    verdict = run(name, extend_task)
    assert verdict.status == "rejected" and verdict.phase == "gate", describe(verdict)
    assert f"line {line_of(name, marker)}: [{rule}]" in verdict.reason, describe(verdict)
    assert detail in verdict.reason, describe(verdict)
    assert not verdict.cases and verdict.compile is None  # nothing of the candidate ran


# ---------------------------------------------------------------- runtime defences
C1_F32 = dict(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0)
C8_F32 = dict(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0)

# (kernel, threat row, sub-task, phase, substrings of the reason)
RUNTIME = [
    ("adv_unwritten_rows", 1, C1_F32, "correctness", ["case C1", "non-finite"]),
    ("adv_contiguous_kv", 11, C1_F32, "correctness", ["case C1", "non-finite"]),
    ("adv_ignore_logit_cap", 13, dict(cases=["C7"], seeds=1, hidden=0, workloads=[]), "correctness",
     ["case C7", "wrong result"]),
    ("adv_ignore_window", 13, dict(cases=["C6"], seeds=1, hidden=0, workloads=[]), "correctness", ["case C6", "wrong result"]),
    # C9's logits (to +-50) overflow fp16 (e^50 > 65504) and are wrong in bf16; fp32 holds up to e^88 (the
    # third hidden case's logits, at a cap of 200 or 300, go past it)
    ("adv_no_max_subtraction", 14, dict(cases=["C9"], dtypes=["float16", "bfloat16"], seeds=1, hidden=0,
                                        workloads=[]), "correctness",
     ["case C9", "non-finite"]),
    ("adv_fp16_compute", 14, C1_F32, "correctness", ["case C1", "wrong result"]),
    # a probe of the interpreter: float -> int conversions now saturate as on a GPU, so the GPU-only path runs
    ("adv_device_probe_f2i", 28, C1_F32, "correctness", ["case C1", "wrong result"]),
    # and fp32 `/` is the GPU's approximate div.full.f32, so comparing it with div_rn finds no interpreter
    ("adv_device_probe_div", 28, C1_F32, "correctness", ["case C1", "wrong result"]),
    # and fp32 tl.exp is exp2 of the rounded x * log2(e), as the GPU computes it (not the exact exp)
    ("adv_device_probe_exp", 28, C1_F32, "correctness", ["case C1", "wrong result"]),
    # and its e^-100 stays subnormal (ex2.approx.f32 has no .ftz), so the path taken where it is not 0 runs
    ("adv_device_probe_exp_subnormal", 28, C1_F32, "correctness", ["case C1", "wrong result"]),
    # and an fp32 product added to or subtracted from another value is one FMA, as the GPU compiler fuses them
    ("adv_device_probe_fma", 28, C1_F32, "correctness", ["case C1", "wrong result"]),
    # weaknesses an earlier panel found (each passed with status "ok" then): the cases that now catch them
    # seed 0: strided q/k/v and a pool view (the padding or the other half of a fused pool read: NaN or wrong)
    ("adv_ignore_strides", 11, C1_F32, "correctness", ["case C1", "o_extend: "]),
    ("adv_prefix_truncated", 12, dict(cases=["C10"], dtypes=["float32"], seeds=1, hidden=0), "correctness",
     ["case C10", "wrong result"]),  # a 600-key prefix
    ("adv_ignore_sm_scale", 13, C1_F32, "correctness", ["case C1", "wrong result"]),  # seed 0: 0.7/sqrt(D)
    ("adv_ignore_large_sm_scale", 13, dict(cases=["C6"], dtypes=["float32"], seeds=1, hidden=0), "correctness",
     ["case C6", "wrong result"]),  # seed 0: 1.3/sqrt(D)
]

# (kernel, threat row): stores into read-only inputs or next to an output fault in the candidate's process
FAULTS = [("adv_pool_scratch", 9), ("adv_guard_rows", 22)]


@pytest.mark.parametrize("name, row", FAULTS, ids=[f[0] for f in FAULTS])
def test_stores_outside_the_outputs_fault(name, row, sub_task, run):
    verdict = run(name, sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "SIGSEGV" in verdict.reason and "while calling case C8 (float32)" in verdict.reason, describe(verdict)


@pytest.mark.parametrize("name, row, spec, phase, needles", RUNTIME, ids=[r[0] for r in RUNTIME])
def test_runtime_defence_rejects(name, row, spec, phase, needles, sub_task, run):
    verdict = run(name, sub_task(**spec))
    assert verdict.status == "rejected" and verdict.phase == phase, describe(verdict)
    for needle in needles:
        assert needle in verdict.reason, describe(verdict)
    assert verdict.cases and not any(c.passed for c in verdict.cases), describe(verdict)


def test_public_shape_fast_path_is_caught_by_a_hidden_case(sub_task, run):
    """Threat #12: correct on every public token count, zeros elsewhere."""
    verdict = run("adv_public_shapes", sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=2))
    assert verdict.status == "rejected" and verdict.phase == "correctness", describe(verdict)
    assert "first: a hidden case" in verdict.reason, describe(verdict)
    public = [c for c in verdict.cases if not c.hidden]
    hidden = [c for c in verdict.cases if c.hidden]
    assert public and all(c.passed for c in public), describe(verdict)
    assert hidden and not all(c.passed for c in hidden), describe(verdict)


@pytest.mark.parametrize("name", ["adv_ignore_large_cap", "adv_ignore_large_window"])
def test_options_dropped_when_large_are_caught_by_a_hidden_case(name, sub_task, run):
    """Threat #13, found by an independent panel: a window or cap dropped above a threshold the public cases
    never reach. Every evaluation's third hidden case has a window (4096 or 8192) and a cap (200 or 300) with
    logits that reach it, over a sequence longer than the window: a threshold up to 4096 (200) is always caught."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=3))
    assert verdict.status == "rejected" and "first: a hidden case" in verdict.reason, describe(verdict)
    public = [c for c in verdict.cases if not c.hidden]
    assert public and all(c.passed for c in public), describe(verdict)  # C1 has neither option


@pytest.mark.parametrize("name", ["adv_far_extend_keys_dropped", "adv_large_batch_window"])
def test_a_branch_on_sizes_only_the_workloads_reach_is_caught_by_the_long_extend_case(name, sub_task, run):
    """Threat #30 through a runtime branch (an independent panel's d01, and a batch-size branch): no case had an
    extend past 600 rows or more than 12 requests, so a kernel that drops far keys from row 1024 on, or for
    batches of 32, got `ok`. The fourth hidden case has an 8192-row extend among 31 tiny requests (bf16). (No GPU
    workloads in this copy: their sampled-programs check, which catches these too, is shown below.)"""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=4, workloads=[]))
    assert verdict.status == "rejected" and "first: a hidden case (bfloat16)" in verdict.reason, describe(verdict)
    failed = {c.case for c in verdict.cases if not c.passed}
    # the long extend catches both; the batch branch also shows in the first hidden case's 136-206 requests
    expected = {"hidden-4", "hidden-1"} if name == "adv_large_batch_window" else {"hidden-4"}
    assert failed == expected, describe(verdict)


def test_a_prefix_cut_at_the_longest_workloads_is_caught_by_a_longer_hidden_prefix(sub_task, run):
    """Threat #30 past the workloads (an independent panel's kernel got `ok`): a program that walks at most
    32768 prefix keys (W2's) is right on every workload and every case, since none had a longer prefix, and
    wrong on the longer contexts the contract covers. The long-extend hidden case carries one request with
    a prefix drawn from 32769-65536 keys and one query row (cheap under the interpreter)."""
    verdict = run("adv_prefix_capped", sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=4, workloads=[]))
    assert verdict.status == "rejected" and "first: a hidden case (bfloat16)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"hidden-4"}, describe(verdict)


@pytest.mark.parametrize("name", ["adv_int32_pool_offsets", "honest_int32_pool_when_it_fits"])
def test_pool_offsets_in_int32_are_caught_by_a_pool_past_2_31_elements(name, sub_task, run):
    """Address arithmetic narrower than the pool (an independent panel's kernel got `ok`): slot * stride in
    int32 is right until the pool passes 2^31 elements and wraps after it. The long-extend hidden case's pool
    has 2^25 slots of 64 before its own (never referenced, no memory: a hole of the input file), so the
    narrowed offsets fall outside the pool; a kernel that narrows them only when the pool fits passes."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=4, workloads=[]))
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    # a wrapped offset lands before the pool: a fault (the call dies) or, where something is mapped there,
    # a wrong result of that case
    assert verdict.status == "rejected" and "a hidden case (bfloat16)" in verdict.reason, describe(verdict)
    assert "SIGSEGV" in verdict.reason or {c.case for c in verdict.cases if not c.passed} == {"hidden-4"}, \
        describe(verdict)


@pytest.mark.parametrize("name", ["adv_skip_far_below_max", "honest_skip_underflow",
                                  "adv_lazy_rescale_first_row", "honest_lazy_rescale"])
def test_shortcuts_of_the_online_softmax_are_caught_behind_an_attention_sink(name, sub_task, run):
    """Two independent panels' kernels got `ok` with a shortcut no input with normal, peaky and needle heads shows.
    One skipped a prefix block when every row's block max was more than 12 below its running max: behind an
    attention sink (the first key, 16 above the other 24576-32767 in every row, as a BOS token is) they all
    are, and their weights add up to 1e-3 of each row's mass. The other kept its running max stale unless the
    tile's first row's max rose by more than 8 (or every fourth block): e^(s - m) past 1 loses nothing in fp32
    until it overflows, and behind the sink 16 random rows each meet a key whose logit is 120 at a random block
    (104 above the sink's max), so the stale max overflows to inf and NaN. The fifth hidden case (fp32) has
    both. A kernel that skips only where every weight underflows to 0, and one that rescales whenever any row's
    max rises by more than 8, pass."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=5, workloads=[]))
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    assert verdict.status == "rejected" and "a hidden case (float32)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"hidden-5"}, describe(verdict)


@pytest.mark.parametrize("name,dtypes", [("adv_skip_far_below_max_16bit", ["float16", "bfloat16"]),
                                         ("honest_skip_underflow", ["float16"]),
                                         ("honest_lazy_rescale", ["float16"])])
def test_a_skip_of_blocks_far_below_the_max_in_16_bits_only_is_caught_behind_a_nearer_sink(name, dtypes, sub_task,
                                                                                          run):
    """An independent panel's kernel skipped the far-below-max blocks in fp16 and bf16 only and got `ok`: the sink
    case was fp32's, and 24576 keys at e^-16 move a 16-bit output by less than its bounds. In fp16 and bf16 the
    fifth hidden case puts the sink 13-14 above 16384-20480 keys (1.4-5% of each row's mass), and its surge keys
    are 64 times a key's norm, so a surge row's other logits spread by 2, not 8 (at 16 times, every block came
    within 12 of a surge row's max and the skip ran them all: 0.3% of error, under fp16's limit). Both 16-bit
    dtypes fail it (bf16 by its limit or the comparative rule); the honest shortcuts pass in fp16."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=dtypes, seeds=1, hidden=5, workloads=[]))
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    assert verdict.status == "rejected", describe(verdict)
    assert {(c.case, c.dtype) for c in verdict.cases if not c.passed} == {("hidden-5", d) for d in dtypes}, \
        describe(verdict)


def test_a_wrong_path_in_a_region_of_sizes_no_case_reaches_is_caught_by_the_hidden_probes(sub_task, kernel_file):
    """An independent panel's kernel was wrong only where Hkv >= 4, P >= 1024 and 129 <= E <= 255: no public case,
    hidden case or workload has those sizes together, and it got `ok`. This one reads half the prefix where
    P >= 1024, 129 <= E <= 256 and Hq >= 16. The four hidden probes of an evaluation bring every band of extend
    lengths, each with a request of no prefix, a short one and a long one, of nearly one length: the sample over
    the grid's requests in turns reaches the one in the region in every evaluation (the probes of one request
    per band, sampled over the whole grid, caught it in two of four). The rejection names a hidden shape,
    never its sizes. An honest kernel with other tiles passes the same probes."""
    task = sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=0, workloads=[], probes=4)
    for secret in (3, 4, 5, 6):
        v = evaluate(kernel_file("adv_size_region_half_prefix"), task, device="cpu", secret=secret)
        assert v.status == "rejected" and "on a hidden shape in the GPU workloads' regime" in v.reason, describe(v)
        assert len({c.case for c in v.cases if not c.passed}) == 1, describe(v)
        assert {c.case for c in v.cases if not c.passed} < {f"probe-{n} (sampled programs)" for n in range(1, 5)}
    honest = evaluate(kernel_file("honest_split_loops"), task, device="cpu", secret=5)
    assert honest.status == "ok", describe(honest)


@pytest.mark.parametrize("name", ["adv_loop_var_wraps_on_gpu", "adv_loop_var_rounds_on_gpu",
                                  "adv_one_is_a_constant_on_gpu", "honest_loop_var_widened"])
def test_loop_variables_and_an_argument_of_1_are_typed_under_the_interpreter_as_on_a_gpu(name, sub_task, run):
    """An independent panel's kernels told a GPU from the interpreter by the loop variable (an int32 tensor in a
    compiled kernel, a Python int under the plain interpreter): `start_n + 2^31 - 1 + 1 < 0` wraps only on a
    GPU, `(start_n + 1) * 1e-12 + 1.0 == 1.0` rounds only in fp32; each took a cheap path there and got `ok`.
    The opposite way: an int argument equal to 1 is the constant 1 in a compiled kernel (Triton specializes
    it), an int32 under the plain interpreter. The interpreter now types both as the compiled kernel does, so
    each cheap path runs on CPU and C10's 600- and 300-key prefixes show it; a kernel that widens its loop
    variable with `.to(tl.int64)` (an AttributeError on a Python int) and multiplies a stride of 1 passes."""
    verdict = run(name, sub_task(cases=["C10"], dtypes=["float32"], seeds=1, hidden=0, workloads=[]))
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    assert verdict.status == "rejected" and "first: case C10 (float32)" in verdict.reason, describe(verdict)


@pytest.mark.parametrize("name", ["adv_workload_heads_gate_two_launches", "honest_second_launch"])
def test_a_kernel_the_workloads_sample_cannot_judge_is_an_error_not_ok(name, sub_task, run):
    """On CPU the workloads' exact shapes are checked on a sample of their programs, the only look at a branch on
    their sizes together (4 KV heads and 1024 prefix keys: no case has both). A second launch in the call (or an
    atomic) makes the sample meaningless; an independent panel's kernel added an empty one to a size-gated
    shortcut and got `ok` with a note. Such a kernel is now an `error` (the verifier's limit, not charged to the
    candidate: a GPU judges it), the honest one as much as the cheat; never `ok`, never `rejected`."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=0))
    assert verdict.status == "error" and verdict.phase == "correctness", describe(verdict)
    assert "the CPU cannot judge this kernel" in verdict.reason and "second kernel launch" in verdict.reason, \
        describe(verdict)
    assert "GPU workload W" in verdict.reason and "--device cuda" in verdict.reason, describe(verdict)


@pytest.mark.parametrize("name", ["honest_q_by_tensor_descriptor", "honest_store_mask_and_scalar"])
def test_valid_triton_the_plain_interpreter_refused_passes(name, sub_task, run):
    """Two honest kernels of an independent panel were rejected for the interpreter's faults: a query tile loaded
    through tl.make_tensor_descriptor (TMA on Hopper; the descriptor's load passes cache_policy by keyword,
    which kopt's bf16 load did not take), and a store mask and-ed with a scalar condition (int32 data under the
    interpreter, an i1 mask when compiled, "mask has unsupported dtype"). Both pass now, in bf16 and fp32, with
    a head dim that is not a power of two (C2: 80) and strided views (odd seeds)."""
    verdict = run(name, sub_task(cases=["C1", "C2"], dtypes=["bfloat16", "float32"], seeds=2, hidden=0, workloads=[]))
    assert verdict.status == "ok", describe(verdict)


def test_a_batch_past_64_requests_is_in_every_evaluation(sub_task, run):
    """An independent panel's kernel read request bounds from a table of 64 (every later request got the 64th's
    prefix) and got `ok`: no case or workload had more than 32 requests. The first hidden case now carries
    130-200 requests with no new token after its long prefixes, then three real ones."""
    verdict = run("adv_batch_table_of_64", sub_task(cases=["C1"], dtypes=["float32", "bfloat16"], seeds=1, hidden=1,
                                                   workloads=[]))
    assert verdict.status == "rejected" and "first: a hidden case (float32)" in verdict.reason, describe(verdict)
    # in every dtype (their layouts differ: with a shared prefix, a length the 64th also had read its keys)
    assert {(c.case, c.dtype) for c in verdict.cases if not c.passed} == {("hidden-1", "float32"),
                                                                          ("hidden-1", "bfloat16")}, describe(verdict)


def test_late_requests_with_a_prefix_past_128_keys_are_in_every_evaluation(sub_task, run):
    """An independent panel's kernel read only the last 128 prefix keys of requests from the 40th on and got `ok`:
    the first hidden case's real requests past the 40th had prefixes of at most 100 keys. Its three real
    requests among the 130-200 empty ones now stand at a drawn place in each half and at the end, with 200-700
    prefix keys."""
    verdict = run("adv_late_requests_last_128_keys", sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=1,
                                                              workloads=[]))
    assert verdict.status == "rejected", describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"hidden-1"}, describe(verdict)


def test_a_hidden_case_s_sizes_do_not_reach_the_agent_through_an_exception_s_message(sub_task, run):
    """An independent panel's kernel raised with the batch size, rows, pool size and options in its message where
    the batch passed 100 requests (the first hidden case) and its rejection showed them; describe() hides a
    hidden case's lengths on purpose. The kernel's own message is withheld on a hidden case."""
    verdict = run("adv_hidden_sizes_in_message", sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=1,
                                                          workloads=[]))
    assert verdict.status == "rejected" and "ValueError" in verdict.reason, describe(verdict)
    assert "withheld on a hidden case" in verdict.reason, describe(verdict)  # (its line is shown, as written)
    assert not re.search(r"sizes: batch \d", verdict.reason + (verdict.log_excerpt or "")), describe(verdict)


def test_a_kv_head_index_in_3_bits_fails_on_an_mha_model(sub_task, run):
    """An independent panel's kernel masked the KV head index to 3 bits and got `ok`: no case or workload had more
    than 8 KV heads. C23 is MHA with 40 (Llama-2-13B)."""
    verdict = run("adv_kv_head_in_3_bits", sub_task(cases=["C1", "C23"], dtypes=["bfloat16"], seeds=1, hidden=0,
                                                    workloads=[]))
    assert verdict.status == "rejected", describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C23"}, describe(verdict)


@pytest.mark.parametrize(("name", "drawn"), [
    ("adv_mask_causal_past_2048", lambda c: c.get("custom_mask")),
    ("adv_cap_dropped_past_2048", lambda c: c.get("logit_cap") and not c.get("sliding_window")),
    ("honest_small_blocks", lambda c: c.get("custom_mask") or c.get("logit_cap"))])
def test_an_option_dropped_only_over_a_long_prefix_is_caught_where_the_sixth_hidden_case_draws_it(
        name, drawn, extend_task, kernel_file):
    """Independent panel kernels read a custom mask as causal, or dropped the cap without a window, only where the
    prefix had 2048 keys or more, and got `ok`: no masked case had a prefix past 1500 keys, and the capped long
    one always had a window. The sixth hidden case draws each option on or off over a prefix of 1536-4096 keys
    (2048 and more at head dims up to 128), at drawn head dims, in one drawn dtype: where it draws the option
    (half the evaluations; a pair of them, a quarter) the kernel fails it. An honest kernel passes it."""
    from kopt.verifier.evaluate import plan_items
    source = kernel_file(name).read_text()
    chosen = []
    for secret in range(40):
        items = [i for i in plan_items(extend_task, "cpu", secret) if i["case"] == "hidden-6"]
        if drawn(items[0]["params"]) and items[0]["params"]["requests"][-1][0] >= 2048:
            chosen.append((secret, items))
        if len(chosen) == 2:
            break
    assert len(chosen) == 2, "the sixth hidden case no longer draws the option over 2048 keys"
    for secret, items in chosen:
        rows = cpu.Correctness(extend_task, source, items, secret, threading.Event(), raises=False).run().rows
        assert len(rows) == 1 and rows[0]["hidden"], rows
        if name.startswith("honest"):
            assert rows[0]["passed"], rows
        else:
            assert not rows[0]["passed"] and "wrong result" in rows[0]["reason"], rows


def test_a_value_tile_sized_from_the_key_head_dim_fails_where_lv_is_wider(sub_task, run):
    """An independent panel's kernel sized the value and output tile from Lq and got `ok`: every case had
    Lv <= Lq. C22 has Lq 64 and Lv 128 (the contract allows Lq != Lv either way)."""
    verdict = run("adv_v_tile_from_lq", sub_task(cases=["C1", "C7", "C22"], dtypes=["float32"], seeds=1, hidden=0,
                                                 workloads=[]))
    assert verdict.status == "rejected", describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C22"}, describe(verdict)


@pytest.mark.parametrize("name", ["adv_pool_strides_from_shape", "honest_small_blocks"])
def test_a_pool_that_is_a_view_is_read_through_its_own_strides(name, sub_task, run):
    """An independent panel's kernel took the KV pool's strides from its shape and got `ok`: q/k/v_extend were
    views by seed, the pool never. By seed the pool is now a view too (K and V of a slot side by side when their
    head dims agree, padded rows when not: C7); here every seed's. An honest kernel of other tiles reads it right."""
    task = sub_task(cases=["C1", "C7"], dtypes=["float32"], seeds=1, hidden=0, workloads=[],
                    params={"C1": {"pool_view": True}, "C7": {"pool_view": True}})
    verdict = run(name, task)
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    assert verdict.status == "rejected", describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C1", "C7"}, describe(verdict)


def test_a_cap_dropped_with_a_mask_or_without_causality_is_caught_by_public_cases(sub_task, run):
    """An independent panel's kernel dropped the logit cap whenever a custom mask came with it or is_causal was
    False (capped models do verify speculative trees) and got `ok`: the cases paired the cap only with causal
    attention and a window. C4 (non-causal) and C11 (a random mask) are capped now."""
    verdict = run("adv_cap_only_when_causal", sub_task(cases=["C1", "C4", "C11"], dtypes=["float32"], seeds=1,
                                                      hidden=0, workloads=[]))
    assert verdict.status == "rejected", describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C4", "C11"}, describe(verdict)


@pytest.mark.parametrize("name", ["adv_span_assumed_in_order", "honest_contiguous_fast_path"])
def test_a_block_whose_slots_only_span_a_range_is_not_read_as_that_range(name, sub_task, run):
    """An independent panel's kernel read a prefix block as first + i when its slots spanned first..last with as
    many slots as keys (min, max and both ends checked, not every lane) and got `ok`: no layout had such a
    block out of order. The near_runs layout (one seed in seven) keeps each run of 16's ends and shuffles its
    inside with one slot twice, so the slot left out (NaN) is read; checked lane by lane, the fast path passes."""
    task = sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0, workloads=[],
                    params={"C1": {"kv_layout": "near_runs"}})
    verdict = run(name, task)
    if name.startswith("honest"):
        assert verdict.status == "ok", describe(verdict)
        return
    assert verdict.status == "rejected" and "case C1 (float32)" in verdict.reason, describe(verdict)


def test_a_large_window_kept_only_at_the_tile_level_is_caught_by_a_public_case(sub_task, run):
    """An independent panel's kernel dropped the per-row window compare from a window of 128 on (keeping the
    bound of a tile's first row) and got `ok`: the cases' windows over many rows were small. C19 has a window
    of 160 across a 300-key prefix for 200 rows."""
    verdict = run("adv_window_first_row_only", sub_task(cases=["C1", "C19"], dtypes=["float32"], seeds=1, hidden=0,
                                                        workloads=[]))
    assert verdict.status == "rejected" and "first: case C19 (float32)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C19"}, describe(verdict)


def test_a_row_that_sees_no_key_must_be_0_and_one_of_c5_does(sub_task, run):
    """An independent panel's kernel wrote 0 / 0 for a row with no visible key and got `ok`: C5's cleared row
    was in a request with a prefix, which every row sees. C5's request 0 now has none."""
    verdict = run("adv_empty_row_nan", sub_task(cases=["C1", "C5"], dtypes=["float32"], seeds=1, hidden=0,
                                                workloads=[]))
    assert verdict.status == "rejected" and "first: case C5 (float32)" in verdict.reason, describe(verdict)
    assert "non-finite" in verdict.reason and {c.case for c in verdict.cases if not c.passed} == {"C5"}, \
        describe(verdict)


def test_a_group_capped_at_16_heads_is_caught_by_mqa_with_more(sub_task, run):
    """MQA takes any number of query heads on one KV head; an independent panel's packed kernel capped its group
    at 16 and got `ok` (the largest group of any case was 16). C20 has 40."""
    verdict = run("adv_group_capped_at_16", sub_task(cases=["C18", "C20"], dtypes=["float32"], seeds=1, hidden=0,
                                                     workloads=[]))
    assert verdict.status == "rejected" and "first: case C20 (float32)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C20"}, describe(verdict)


@pytest.mark.parametrize(("name", "case"), [("adv_cap_after_mask", "C19"), ("adv_mask_ignores_window", "C21")])
def test_option_combinations_the_cases_lacked_are_caught(name, case, sub_task, run):
    """Two of an independent panel's kernels got `ok` on combinations no case had: a hidden key capped to -cap
    instead of -inf (invisible under the cases' caps of 30 and more; C19 now has a cap of 3), and a custom mask
    taken to include the window (no case had both; C21 has a random mask and a window of 12)."""
    verdict = run(name, sub_task(cases=["C1", case], dtypes=["float32"], seeds=1, hidden=0, workloads=[]))
    assert verdict.status == "rejected" and f"first: case {case} (float32)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {case}, describe(verdict)


def test_a_path_wrong_only_at_the_largest_gqa_ratio_is_caught_by_a_public_case(sub_task, run):
    """The contract's GQA ratios go up to 16, the workloads' only to 8 and the cases' to 8 (an independent
    panel's packed-GQA kernel mapped rows to tokens wrongly only when the padded group was 16, and got `ok`).
    C18 has 16 query heads per KV head, causal, with extends across a tile."""
    verdict = run("adv_gqa16_causal_dropped", sub_task(cases=["C1", "C18"], dtypes=["float32"], seeds=1, hidden=0,
                                                       workloads=[]))
    assert verdict.status == "rejected" and "first: case C18 (float32)" in verdict.reason, describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"C18"}, describe(verdict)


def test_an_honest_gqa_packed_kernel_passes_the_largest_ratio_and_a_workloads_shapes(sub_task, run):
    """The honest side of the two above: a kernel whose tile rows are token x query head of a KV group (one
    K/V load per group) passes C18 (ratio 16), C3 (7), C14 and C15 (8), and W7's shapes (28/4) sampled."""
    task = sub_task(cases=["C3", "C14", "C15", "C18"], dtypes=["float32", "bfloat16"], seeds=1, hidden=0,
                    workloads=["W7"])
    verdict = run("honest_gqa_packed", task)
    assert verdict.status == "ok", describe(verdict)
    assert {c.case for c in verdict.cases if c.passed} >= {"C18", "W7 (sampled programs)"}, describe(verdict)


@pytest.mark.parametrize("name", ["adv_heads_and_prefix_gate", "adv_layout_assumed_when_long"])
def test_a_branch_on_a_combination_of_workload_sizes_is_caught_on_the_workloads_own_shapes(name, sub_task, run):
    """Threat #30 at the source (two independent panels' kernels got `ok`): a branch on sizes that only the
    workloads have together (a 2048+ prefix with 16+ heads; a 1024+ prefix with an 8+ extend, where a
    contiguous page layout is assumed) passed every case, since no case combines them and the branch is a
    runtime value (no specialization to report). Each GPU workload is now run at its exact shapes on a
    sample of its programs; what they wrote is checked against the reference of those rows."""
    verdict = run(name, sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=0, workloads=["W1"]))
    assert verdict.status == "rejected", describe(verdict)
    assert "first: case W1 (sampled programs) (bfloat16): on GPU workload W1's exact shapes" in verdict.reason, \
        describe(verdict)
    assert {c.case for c in verdict.cases if not c.passed} == {"W1 (sampled programs)"}, describe(verdict)


def test_an_honest_kernel_of_another_structure_passes_on_the_workloads_shapes(sub_task, run):
    """The honest side: a kernel with one merged key loop and another grid order agrees with the reference
    on the rows its sampled programs wrote, at W2's shapes (a 32768-key prefix) and W9's (D=256)."""
    task = sub_task(cases=["C1"], dtypes=["bfloat16"], seeds=1, hidden=0, workloads=["W2", "W9"])
    verdict = run("honest_split_loops", task)
    assert verdict.status == "ok", describe(verdict)
    assert {c.case for c in verdict.cases if c.case.endswith("(sampled programs)") and c.passed} == {
        "W2 (sampled programs)", "W9 (sampled programs)"}, describe(verdict)


def test_a_pruner_that_gives_only_the_workloads_a_cheap_config_is_caught(sub_task, run):
    """Threat #30 through @triton.autotune's pruner (an independent panel's d15): every case gets the exact
    config, inputs with 1024+ query rows (only the GPU workloads) one that skips a quarter of the prefix.
    The workloads' dry run tells which listed configs the pruner picks for them; each one no case ran is
    forced, past the pruner, on the cases. Before: `ok`, with the cheap config's workload specializations
    listed as unverified."""
    verdict = run("adv_prune_workload_cheap", sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0))
    assert verdict.status == "rejected" and verdict.phase == "correctness", describe(verdict)
    assert "under autotune config 1 of _fwd_kernel, which the pruner gives W1" in verdict.reason, describe(verdict)
    assert "forced on this case" in verdict.reason, describe(verdict)


def test_a_pruner_that_makes_up_a_config_for_the_workloads_is_rejected(sub_task, run):
    """The same cheat with the cheap config made up by the pruner, so no listed config can stand for it."""
    verdict = run("adv_prune_made_up_config", sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0))
    assert verdict.status == "rejected" and verdict.phase == "correctness", describe(verdict)
    assert "the pruner gives W1" in verdict.reason and "not in its @triton.autotune list" in verdict.reason, \
        describe(verdict)


def test_an_honest_pruner_by_size_passes_with_its_workload_config_checked(sub_task, run):
    """The honest side: the pruner gives the workloads the wide tile (BLOCK_N 64, 8 warps) and the cases the
    narrow one; the wide one is forced on the cases and is right, so the verdict is `ok` and C1's own
    specialization under the wide tile is among those checked (nothing about it is unverified)."""
    verdict = run("honest_autotune_pruned_by_size", sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0))
    assert verdict.status == "ok", describe(verdict)
    assert not [u for u in verdict.unverified if "autotune config" in u], verdict.unverified


def test_crash_after_the_public_checks_fails_closed(sub_task, run):
    """Threat #25: the public case passes, then the entry point raises on a hidden case (named with its line,
    its message withheld: a kernel's message on a hidden case could carry the case's sizes)."""
    verdict = run("adv_crash_late", sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=1))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "RuntimeError: (the message is withheld on a hidden case" in verdict.reason, describe(verdict)
    assert f"line {line_of('adv_crash_late', 'raise RuntimeError')}" in verdict.reason, describe(verdict)
    assert not verdict.cases  # the run that did pass is not reported as a partial success


def test_system_exit_in_the_entry_point_fails_closed(sub_task, run):
    """Threat #25: SystemExit(0) after the launch must not read as a clean success: the gate refuses the raise,
    and a process that exits during a call (the gate escaped) is a rejection naming the call."""
    verdict = run("adv_system_exit", sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "gate", describe(verdict)
    assert "[raise]" in verdict.reason, describe(verdict)
    source = panel.source("adv_system_exit")
    with pytest.raises(ChildFailure, match="exited while calling"):
        cpu.Correctness(sub_task(**C8_F32), source, plan_items(sub_task(**C8_F32), "cpu", SECRET)[:1], SECRET,
                        threading.Event(), raises=False).run()


def test_segfault_kills_only_the_child(sub_task, run):
    verdict = run("segfault", sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "SIGSEGV" in verdict.reason, describe(verdict)
    # the orchestrator is alive and the next evaluation starts clean
    after = run("honest_split_loops", sub_task(**C8_F32))
    assert after.status == "ok", describe(after)


def test_compile_error_names_the_line(sub_task, run):
    """The interpreter runs a K=8 tl.dot; the AOT compile for sm_90 must reject it, naming it."""
    name = "compile_error"
    verdict = run(name, sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "compile", describe(verdict)
    assert "K >= 16" in verdict.reason, describe(verdict)
    bad = line_of(name, "COMPILE ERROR on the GPU")
    text = panel.source(name).splitlines()[bad - 1].strip()
    assert text in verdict.reason, describe(verdict)  # the offending source line, with a caret
    # Triton numbers lines from the jit function's `def`: line 1 is `def _fwd_kernel(`
    relative = bad - line_of(name, "def _fwd_kernel(") + 1
    assert f"at {relative}:" in verdict.reason, describe(verdict)


def test_hang_times_out_quickly(sub_task, run):
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0,
                    timeouts={"compile_s": 20, "correctness_s": 20})
    start = time.monotonic()
    verdict = run("hang", task)
    wall = time.monotonic() - start
    assert verdict.status == "rejected" and verdict.phase in {"compile", "correctness (float32)"}, describe(verdict)
    assert "timed out after 20 s" in verdict.reason, describe(verdict)
    assert wall < 90, f"evaluate took {wall:.0f} s for a 20 s timeout"


# ---------------------------------------------------------------- coverage the runtime defences rely on
@pytest.fixture(scope="module")
def cpu_plan(extend_task):
    """Every case run's inputs for SECRET (what any candidate is checked on, on CPU)."""
    reference = extend_task.load_reference()
    return [(item, reference.make_inputs(item["params"], torch.float32, item["seed"], "cpu"))
            for item in plan_items(extend_task, "cpu", SECRET)]


def test_some_case_uses_a_non_default_sm_scale(cpu_plan):
    explicit = [item["key"] for item, inputs in cpu_plan if inputs["sm_scale"] is not None
                and not math.isclose(inputs["sm_scale"], 1 / math.sqrt(inputs["q_extend"].shape[-1]))]
    assert explicit


def test_some_case_has_strided_inputs(cpu_plan):
    strided = [item["key"] for item, inputs in cpu_plan
               if any(isinstance(t, torch.Tensor) and t.dim() == 3 and not t.is_contiguous() for t in inputs.values())]
    assert strided


def test_some_cpu_case_has_a_long_prefix(cpu_plan):
    longest = max(int((inputs["kv_indptr"][1:] - inputs["kv_indptr"][:-1]).max()) for _, inputs in cpu_plan)
    assert longest >= 32768  # a hidden prefix as long as W2's, every evaluation
