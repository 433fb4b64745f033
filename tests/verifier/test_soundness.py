"""Verifier soundness: cheats the static gate lets through (they are valid kernels) are caught by
checks made outside the candidate's process, and honest kernels the interpreter could not run
before now pass.

Each kernel is an entry of tests/verifier/panel.py: the pinned baseline plus a few exact
replacements, each asserted to apply exactly once, written out at test time (so `kopt eval` and
line numbers work on the files). For every defence there is a cheat it stops and an honest kernel
it must not stop.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.verifier import panel
from tests.verifier.panel_support import SECRET, describe

from kopt.verifier import cpu
from kopt.verifier.evaluate import evaluate, plan_items
from kopt.verifier.session import ChildFailure

# (kernel, the sub-task that carries the defence, the words the reason must contain)
CAUGHT = [
    # (its programs read a slot program 0 wrote: the race check sees it on the first call, before the
    # reversed repeat that caught it first; the repeats stay for order dependence through atomics)
    ("order_dependent", dict(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0),
     ["case C1", "a race between programs", "read 1 element(s) that program"]),
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


def test_a_cache_keyed_on_pointers_fails_the_same_buffer_call(extend_task, sub_task):
    """Defence in depth: even with the gate bypassed, a result cached across calls is caught, because the
    repeat call writes new content into the same buffers and is checked against a fresh reference."""
    source = panel.source("pointer_cache")
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0)
    items = [i for i in plan_items(task, "cpu", SECRET) if i["repeat"]]
    checker = cpu.Correctness(task, source, items, SECRET, cancel=__import__("threading").Event(), raises=False)
    rows = checker.run().rows
    assert rows and all(not r["passed"] for r in rows)
    assert "third call, new content in the same buffers" in rows[0]["reason"]


def test_the_undone_write_faults_without_the_gate_too(extend_task, sub_task):
    task = sub_task(cases=["C8"], dtypes=["float32"], seeds=1, hidden=0)
    items = plan_items(task, "cpu", SECRET)[:1]
    checker = cpu.Correctness(task, panel.source("undone_pool_write"), items, SECRET, __import__("threading").Event(),
                              raises=False)
    with pytest.raises(ChildFailure, match="SIGSEGV"):
        checker.run()


# fp32 dots at the GPU's precision: the interpreter used to multiply in full fp32 whatever the kernel asked
# for, so TF32 (10 mantissa bits; the NVIDIA default when input_precision is not given) passed on CPU
# and failed on the GPU. Judged as a user would, by `kopt eval --json` on a one-case fp32 task; a kernel
# that leaves input_precision at the default gets the same TF32.
PRECISION = [("adv_tf32_for_fp32", "rejected"), ("adv_default_precision_fp32", "rejected"),
             ("honest_tf32x3_for_fp32", "ok")]


@pytest.mark.parametrize("name, status", PRECISION, ids=[p[0] for p in PRECISION])
def test_fp32_dots_are_checked_at_the_precision_the_gpu_runs(name, status, kernel_file, sub_task, tmp_path):
    task = sub_task(cases=["C1"], dtypes=["float32"], seeds=1, hidden=0)
    done = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "eval", str(kernel_file(name)), "--task",
                           str(task.root), "--device", "cpu", "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    verdict = json.loads(done.stdout)
    assert verdict["status"] == status, (verdict["reason"], done.stderr[-2000:])
    if status == "rejected":
        assert "case C1 (float32)" in verdict["reason"] and "wrong result" in verdict["reason"], verdict["reason"]
        assert "TF32" in verdict["reason"], verdict["reason"]  # the reason says what to change


def test_launches_factored_into_helpers_pass(kernel_file, sub_task, tmp_path):
    """The honest side of adv_helper_chain_host_read: the tile choice and the grid in helpers, one calling
    another, branching on the shape ints their callers pass (refused before the gate took a helper's kinds
    from its callers); C1 and C14 take both tile branches."""
    task = sub_task(cases=["C1", "C14"], dtypes=["float32"], seeds=1, hidden=0)
    done = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "eval", str(kernel_file("honest_launch_helpers")),
                           "--task", str(task.root), "--device", "cpu", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    verdict = json.loads(done.stdout)
    assert verdict["status"] == "ok", (verdict["reason"], done.stderr[-2000:])
    assert {c["case"] for c in verdict["cases"]} == {"C1", "C14"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["honest_autotune_two_configs", "honest_libdevice_tanh"])
def test_honest_gpu_constructs_pass(name, kernel_file, extend_task, spread_task):
    verdict = evaluate(kernel_file(name), spread_task, device="cpu", secret=SECRET)
    assert verdict.status == "ok", describe(verdict)
    # a case subset leaves some GPU workloads' specializations unchecked on CPU, and says so
    missed = [u for u in verdict.unverified if not u.startswith(("GPU timing", "GPU correctness"))
              and not (spread_task is not extend_task and u.endswith("never ran in a checked CPU case"))]
    assert not missed, verdict.unverified
    if name == "honest_autotune_two_configs":
        assert {k.num_warps for k in verdict.compile.kernels} == {4, 8}  # both configs compiled for sm_90
