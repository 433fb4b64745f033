"""The threat catalogue (docs/threats.md), one adversarial kernel per row, each rejected for the
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
import threading
import time

import pytest
import torch
from tests.verifier.panel_support import SECRET, describe, kernel_path

from kopt.verifier import cpu
from kopt.verifier.evaluate import evaluate, plan_items
from kopt.verifier.session import ChildFailure


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
    ("adv_class_state.py", 2, "module-code", "class _Cache", "class definitions"),
    ("adv_lru_cache.py", 3, "decorator", "@functools.lru_cache", "only @triton.jit"),
    ("adv_mutable_default.py", 3, "mutable-default", "_kv_copies={}", "default argument"),
    ("adv_side_stream.py", 5, "call", "torch.cuda.Stream()", "torch.cuda.Stream is not on the allowlist"),
    ("adv_threading.py", 6, "import", "import threading", "'threading'"),
    ("adv_patch_do_bench.py", 7, "attribute-assignment", "triton.testing.do_bench =", "monkeypatching"),
    ("adv_patch_event.py", 7, "attribute-assignment", "Event.elapsed_time =", "monkeypatching"),
    ("adv_gc_introspection.py", 8, "import", "import gc", "'gc'"),
    ("adv_inspect_frames.py", 8, "import", "import inspect", "'inspect'"),
    ("adv_inline_asm.py", 14, "triton-api", "inline_asm_elementwise(", "inline_asm_elementwise"),
    ("adv_torch_sdpa.py", 15, "call", "scaled_dot_product_attention(", "scaled_dot_product_attention is not on"),
    ("adv_try_fallback.py", 15, "try", "    try:", "must fail, not fall back"),
    ("adv_host_einsum.py", 15, "call", "torch.einsum(", "torch.einsum is not on the allowlist"),
    ("adv_call_counter_attr.py", 16, "attribute-assignment", "extend_attention_fwd.calls =", "attributes"),
    ("adv_global_counter.py", 16, "global", "global _CALLS", "global statements"),
    ("adv_ctypes.py", 17, "import", "import ctypes", "'ctypes'"),
    ("adv_environ.py", 19, "import", "import os", "'os'"),
    ("adv_dynamic_code.py", 20, "name", "exec(open(", "exec() is not allowed"),
    ("adv_item_sync.py", 23, "host-method", ".max().item()", "reading tensor values or storage on the host"),
    ("adv_cpu_copy.py", 23, "host-method", "kv_indices.cpu()", "reading tensor values or storage on the host"),
    # found by the first panel; each was accepted before the gate became default-deny
    ("adv_gate_escape_tl_core.py", 26, "call", "tl.core.builtins.exec(", "core.builtins.exec is not on the allowlist"),
    ("adv_annotation_state.py", 2, "annotation", "_calls: [] = None,  # CHEAT", "annotations may only name types"),
    ("adv_heuristics_host_compute.py", 15, "call", "lambda args: int(torch.diff", "torch.diff is not on the allowlist"),
    ("adv_tensor_methods_host_attention.py", 15, "host-read", "q0, q1 = int(qo_indptr[b])", "int() of a value that may be a tensor"),
    ("adv_host_mutate_pool.py", 9, "mutation", "k_buffer[-1].zero_()  # CHEAT", ".zero_() only on tensors"),
    ("adv_implicit_host_sync.py", 23, "host-read", "has_prefix = bool(kv_indptr[-1] > 0)", "a value that may be a tensor"),
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
    ("adv_contiguous_kv.py", 11, C1_F32, "correctness", ["case C1", "non-finite"]),
    ("adv_ignore_logit_cap.py", 13, dict(cases=["C7"], seeds=1, hidden=0), "correctness",
     ["case C7", "wrong result"]),
    ("adv_ignore_window.py", 13, dict(cases=["C6"], seeds=1, hidden=0), "correctness", ["case C6", "wrong result"]),
    ("adv_no_max_subtraction.py", 14, dict(cases=["C9"], seeds=1, hidden=0), "correctness",
     ["case C9", "non-finite"]),
    ("adv_fp16_compute.py", 14, C1_F32, "correctness", ["case C1", "wrong result"]),
]

# (kernel, threat row): stores into read-only inputs or next to an output fault in the candidate's process
FAULTS = [("adv_pool_scratch.py", 9), ("adv_guard_rows.py", 22)]


@pytest.mark.parametrize("name, row", FAULTS, ids=[f[0][:-3] for f in FAULTS])
def test_stores_outside_the_outputs_fault(name, row, sub_task):
    verdict = run(name, sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "correctness (float32)", describe(verdict)
    assert "SIGSEGV" in verdict.reason and "while calling case C8 (float32)" in verdict.reason, describe(verdict)


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
    """Threat #25: SystemExit(0) after the launch must not read as a clean success: the gate refuses the raise,
    and a process that exits during a call (the gate escaped) is a rejection naming the call."""
    verdict = run("adv_system_exit.py", sub_task(**C8_F32))
    assert verdict.status == "rejected" and verdict.phase == "gate", describe(verdict)
    assert "[raise]" in verdict.reason, describe(verdict)
    source = kernel_path("adv_system_exit.py").read_text()
    with pytest.raises(ChildFailure, match="exited while calling"):
        cpu.Correctness(sub_task(**C8_F32), source, plan_items(sub_task(**C8_F32), "cpu", SECRET)[:1], SECRET,
                        threading.Event(), raises=False).run()


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
