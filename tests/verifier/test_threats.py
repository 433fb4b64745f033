"""The threat catalogue (VERIFIER.md), one adversarial kernel per row, each rejected for the
right reason by the real evaluate(): gate rejections name the rule and the line; runtime
rejections name the defence that fired (NaN poison, input hashes, guard rows, hidden cases,
fail-closed child handling, timeouts, signals, the AOT compiler).

Runtime rejections are shown on copies of the real task restricted to the cases that carry
the defence (see panel_support.py: rejection is monotone in the case set), which keeps each
evaluation to a few seconds.

The last section holds the weaknesses this panel found (VERIFIER WEAKNESS in the kernel's
docstring): tests that state what the verifier should do and report xfail while the weakness
reproduces; once the verifier is fixed they simply pass.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from tests.verifier.panel_support import SECRET, describe, kernel_path

from kopt.verifier.evaluate import evaluate, plan_items
from kopt.verifier.gate import check_source


def line_of(name: str, marker: str) -> int:
    """The 1-based line of the kernel file that holds `marker` (exactly one must)."""
    lines = [n for n, text in enumerate(kernel_path(name).read_text().splitlines(), 1) if marker in text]
    assert len(lines) == 1, f"{name}: marker {marker!r} is on lines {lines}"
    return lines[0]


def run(name: str, task):
    return evaluate(kernel_path(name), task, device="cpu", secret=SECRET)


# ---------------------------------------------------------------- static gate (instant)
# (kernel, threat row, rule, marker on the offending line, a detail the reason must name)
GATE = [
    ("adv_module_cache.py", 2, "module-state", "_RESULTS = {}", "module-level values must be constants"),
    ("adv_class_state.py", 2, "class", "class _Cache", "class definitions are not allowed"),
    ("adv_lru_cache.py", 3, "banned-attribute", "@functools.lru_cache", ".lru_cache"),
    ("adv_mutable_default.py", 3, "mutable-default", "_kv_copies={}", "default argument"),
    ("adv_side_stream.py", 5, "banned-attribute", "torch.cuda.Stream()", ".Stream"),
    ("adv_threading.py", 6, "import", "import threading", "'threading'"),
    ("adv_patch_do_bench.py", 7, "attribute-assignment", "triton.testing.do_bench =", "monkeypatching"),
    ("adv_patch_event.py", 7, "attribute-assignment", "Event.elapsed_time =", "monkeypatching"),
    ("adv_gc_introspection.py", 8, "import", "import gc", "'gc'"),
    ("adv_inspect_frames.py", 8, "import", "import inspect", "'inspect'"),
    ("adv_inline_asm.py", 14, "inline-asm", "inline_asm_elementwise(", "inline_asm_elementwise"),
    ("adv_torch_sdpa.py", 15, "banned-attribute", "scaled_dot_product_attention(", ".scaled_dot_product_attention"),
    ("adv_try_fallback.py", 15, "try", "    try:", "must fail, not fall back"),
    ("adv_host_einsum.py", 15, "banned-attribute", "torch.einsum(", ".einsum"),
    ("adv_call_counter_attr.py", 16, "attribute-assignment", "extend_attention_fwd.calls =", "attributes"),
    ("adv_global_counter.py", 16, "global", "global _CALLS", "global statements"),
    ("adv_ctypes.py", 17, "import", "import ctypes", "'ctypes'"),
    ("adv_environ.py", 19, "import", "import os", "'os'"),
    ("adv_dynamic_code.py", 20, "builtin", "exec(open(", "exec is not allowed"),
    ("adv_item_sync.py", 23, "banned-attribute", ".max().item()", "host synchronisation"),
    ("adv_cpu_copy.py", 23, "banned-attribute", "kv_indices.cpu()", "host synchronisation"),
]


@pytest.mark.parametrize("name, row, rule, marker, detail", GATE, ids=[g[0][:-3] for g in GATE])
def test_gate_rejects(name, row, rule, marker, detail, extend_task):
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
    ("adv_unwritten_rows.py", 1, C1_F32, "correctness", ["case C1", "non-finite"]),
    ("adv_host_mutate_pool.py", 9, C8_F32, "correctness", ["input k_buffer was modified"]),
    ("adv_pool_scratch.py", 9, C8_F32, "correctness", ["input v_buffer was modified"]),
    ("adv_contiguous_kv.py", 11, C1_F32, "correctness", ["case C1", "non-finite"]),
    ("adv_ignore_logit_cap.py", 13, dict(cases=["C7"], seeds=1, hidden=0), "correctness",
     ["case C7", "wrong result"]),
    ("adv_ignore_window.py", 13, dict(cases=["C6"], seeds=1, hidden=0), "correctness", ["case C6", "wrong result"]),
    ("adv_no_max_subtraction.py", 14, dict(cases=["C9"], seeds=1, hidden=0), "correctness",
     ["case C9", "non-finite"]),
    ("adv_fp16_compute.py", 14, C1_F32, "correctness", ["case C1", "wrong result"]),
    ("adv_guard_rows.py", 22, C8_F32, "correctness", ["wrote outside o_extend (guard rows changed)"]),
]


@pytest.mark.parametrize("name, row, spec, phase, needles", RUNTIME, ids=[r[0][:-3] for r in RUNTIME])
def test_runtime_defence_rejects(name, row, spec, phase, needles, sub_task):
    verdict = run(name, sub_task(**spec))
    assert verdict.status == "rejected" and verdict.phase == phase, describe(verdict)
    for needle in needles:
        assert needle in verdict.reason, describe(verdict)
    assert verdict.cases and not any(c.passed for c in verdict.cases), describe(verdict)


def test_public_shape_fast_path_is_caught_by_a_hidden_case(sub_task):
    """Threat #12: correct on every public token count, zeros elsewhere."""
    verdict = run("adv_public_shapes.py", sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=2))
    assert verdict.status == "rejected" and verdict.phase == "correctness", describe(verdict)
    assert "first: a hidden case" in verdict.reason, describe(verdict)
    public = [c for c in verdict.cases if not c.hidden]
    hidden = [c for c in verdict.cases if c.hidden]
    assert public and all(c.passed for c in public), describe(verdict)
    assert hidden and not all(c.passed for c in hidden), describe(verdict)


def test_crash_after_the_public_checks_fails_closed(sub_task):
    """Threat #25: the public case passes, then the entry point raises on a hidden case."""
    verdict = run("adv_crash_late.py", sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=1))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "RuntimeError: unexpected shape" in verdict.reason, describe(verdict)
    assert f"line {line_of('adv_crash_late.py', 'raise RuntimeError')}" in verdict.reason, describe(verdict)
    assert not verdict.cases  # the run that did pass is not reported as a partial success


def test_system_exit_in_the_entry_point_fails_closed(sub_task):
    """Threat #25: SystemExit(0) after the launch must not read as a clean success."""
    verdict = run("adv_system_exit.py", sub_task(**C8_F32))
    # compile and correctness both call the entry point; whichever reports first names it
    assert verdict.status == "rejected" and verdict.phase in {"compile", "correctness (float32)"}, describe(verdict)
    assert "SystemExit: 0" in verdict.reason, describe(verdict)


def test_segfault_kills_only_the_child(sub_task):
    verdict = run("segfault.py", sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "SIGSEGV" in verdict.reason, describe(verdict)
    # the orchestrator is alive and the next evaluation starts clean
    after = run("honest_split_loops.py", sub_task(**C8_F32))
    assert after.status == "ok", describe(after)


def test_compile_error_names_the_line(sub_task):
    """The interpreter runs a K=8 tl.dot; the AOT compile for sm_90 must reject it, naming it."""
    name = "compile_error.py"
    verdict = run(name, sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "compile", describe(verdict)
    assert "K >= 16" in verdict.reason, describe(verdict)
    bad = line_of(name, "COMPILE ERROR on the GPU")
    text = kernel_path(name).read_text().splitlines()[bad - 1].strip()
    assert text in verdict.reason, describe(verdict)  # the offending source line, with a caret
    # Triton numbers lines from the jit function's `def`: line 1 is `def _fwd_kernel(`
    relative = bad - line_of(name, "def _fwd_kernel(") + 1
    assert f"at {relative}:" in verdict.reason, describe(verdict)


def test_hang_times_out_quickly(sub_task):
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0,
                    timeouts={"compile_s": 20, "correctness_s": 20})
    start = time.monotonic()
    verdict = run("hang.py", task)
    wall = time.monotonic() - start
    assert verdict.status == "rejected" and verdict.phase in {"compile", "correctness (float32)"}, describe(verdict)
    assert "timed out after 20 s" in verdict.reason, describe(verdict)
    assert wall < 90, f"evaluate took {wall:.0f} s for a 20 s timeout"


# ---------------------------------------------------------------- weaknesses found (xfail)
# Each test asserts what the verifier should do. In exactly the known-bad state (the weakness
# reproduced) it reports xfail with the explanation; any other outcome is a plain failure, and
# once the verifier is fixed the test simply passes.
def known_weakness(reproduced: bool, why: str) -> None:
    if reproduced:
        pytest.xfail(f"VERIFIER WEAKNESS: {why}")


ESCAPES = [
    "tl.core.builtins.exec('import os')",
    "tl.core.builtins.getattr(tl, 'core')",
    "tl.core.inspect.sys.modules",
    "tl.core.knobs.os.environ",
    "tl.extra.pkgutil.importlib.import_module('os')",
    "tl.math.core.builtins.open('/etc/hostname')",
]
ESCAPE_WHY = ("gate.py accepts every attribute chain rooted at triton.language, and triton.language.core "
              "re-exports builtins, inspect (-> sys, os), knobs (-> os, subprocess): a complete gate escape")


@pytest.mark.parametrize("expr", ESCAPES)
def test_gate_rejects_modules_reached_through_triton_language(expr):
    violations = check_source(f"import triton.language as tl\n\n\ndef f(x):\n    return {expr}\n")
    known_weakness(not violations, ESCAPE_WHY)
    assert violations


def test_gate_rejects_importing_builtins_from_triton_language():
    violations = check_source("from triton.language.core import builtins\n\n\ndef f(x):\n"
                              "    return builtins.eval('1')\n")
    known_weakness(not violations, "`from triton.language.core import builtins` passes the import allowlist")
    assert violations


@pytest.mark.slow
def test_gate_escape_kernel_is_rejected(full_verdict):
    """A kernel that computes nothing: it runs code through tl.core.builtins.exec that walks the
    child's stack to the trusted reference module and copies the exact answer."""
    verdict = full_verdict("adv_gate_escape_tl_core.py")
    known_weakness(verdict.status == "ok", "adv_gate_escape_tl_core.py passes the full task: " + ESCAPE_WHY)
    assert verdict.status == "rejected" and verdict.phase == "gate", describe(verdict)


WEAK_GATE = [
    ("adv_annotation_state.py", "annotations are evaluated once; typing.get_type_hints returns the same mutable "
     "object on every call: a call counter or cache across calls (#2/#3/#16)"),
    ("adv_heuristics_host_compute.py", "@triton.heuristics lambdas are checked as jit code (the host allowlists "
     "are skipped) but run on the host: torch compute and a host sync (#15/#23)"),
    ("adv_tensor_methods_host_attention.py", "torch.Tensor.<method>(t, ...) escapes the host allowlists (owner "
     "'torch.Tensor' matches neither the torch nor the tensor-method branch): the whole attention in torch on the "
     "host, plus a do-nothing Triton launch (#15/#23)"),
]


@pytest.mark.parametrize("name, why", WEAK_GATE, ids=[w[0][:-3] for w in WEAK_GATE])
def test_gate_weakness(name, why, sub_task):
    verdict = run(name, sub_task(**C8_F32))
    known_weakness(verdict.status == "ok", f"{name} passes: {why}")
    assert verdict.status == "rejected" and verdict.phase == "gate", describe(verdict)


def test_implicit_host_sync_is_trapped_at_run_time(sub_task):
    """bool(t) / int(t) / `if t:` cannot be told from honest int() calls by the AST: the child traps the
    value read itself (aten._local_scalar_dense) while the entry point's own code runs."""
    verdict = run("adv_implicit_host_sync.py", sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase.startswith("correctness"), describe(verdict)
    assert "HostSyncError" in verdict.reason and "line 214" in verdict.reason


@pytest.fixture(scope="module")
def cpu_plan(extend_task):
    """Every case run's inputs for SECRET (what any candidate is checked on, on CPU)."""
    reference = extend_task.load_reference()
    return [(item, reference.make_inputs(item["params"], torch.float32, item["seed"], "cpu"))
            for item in plan_items(extend_task, "cpu", SECRET)]


def test_some_case_uses_a_non_default_sm_scale(cpu_plan):
    explicit = [item["key"] for item, inputs in cpu_plan if inputs["sm_scale"] is not None
                and not math.isclose(inputs["sm_scale"], 1 / math.sqrt(inputs["q_extend"].shape[-1]))]
    known_weakness(not explicit, "(#13) make_inputs passes sm_scale=None or the default 1/sqrt(Lq) only, so "
                   "kernels/adv_ignore_sm_scale.py (ignores sm_scale) passes with status 'ok'")
    assert explicit


def test_some_case_has_strided_inputs(cpu_plan):
    strided = [item["key"] for item, inputs in cpu_plan
               if any(isinstance(t, torch.Tensor) and t.dim() == 3 and not t.is_contiguous() for t in inputs.values())]
    known_weakness(not strided, "(#11) every input tensor is contiguous, so kernels/adv_ignore_strides.py "
                   "(computes strides as if contiguous) passes with status 'ok'")
    assert strided


def test_some_cpu_case_has_a_long_prefix(cpu_plan):
    longest = max(int((inputs["kv_indptr"][1:] - inputs["kv_indptr"][:-1]).max()) for _, inputs in cpu_plan)
    known_weakness(longest < 600, f"(#10/#12, CPU coverage) the longest prefix of any CPU case is {longest}, so "
                   "kernels/adv_prefix_truncated.py (only the last 256 prefix keys) passes on CPU with status 'ok'")
    assert longest >= 600
