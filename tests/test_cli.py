"""`kopt eval` as a user runs it: a real subprocess, exit codes, JSON verdicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kopt.verifier.verdict import INTERPRETER_LABEL, Verdict
from tests.conftest import BASELINE, REPO


def kopt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kopt.harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def baseline_verdict() -> tuple[int, Verdict]:
    proc = kopt("eval", str(BASELINE), "--json")
    return proc.returncode, Verdict.model_validate_json(proc.stdout)


def test_baseline_passes_every_case_in_fp32_fp16_and_bf16(baseline_verdict, extend_task):
    code, verdict = baseline_verdict
    assert code == 0 and verdict.status == "ok", verdict.reason
    sampled = [c for c in verdict.cases if c.case.endswith(" (sampled programs)")]
    public = {(c.case, c.dtype) for c in verdict.cases
              if not c.hidden and not c.case.startswith("raises:") and c not in sampled}
    assert public == {(f"C{i}", d) for i in range(1, 23) for d in ("float16", "float32", "bfloat16")} | {
        ("C23", "bfloat16")}  # (40 KV heads: bf16 only)
    assert {c.case for c in verdict.cases if c.case.startswith("raises:")} == {
        "raises:k_scale", "raises:v_scale", "raises:skip_prefix_custom_mask", "raises:sinks", "raises:return_lse"}
    cfg = extend_task.config
    hidden = [c for c in verdict.cases if c.hidden and c not in sampled]
    assert {c.case for c in hidden} == {f"hidden-{i + 1}" for i in range(cfg.cpu.hidden_cases)}
    # the long extend in bf16 only, the sixth (every option over a long prefix) in one drawn dtype
    assert len(hidden) == (cfg.cpu.hidden_cases - 2) * len(cfg.cpu.dtypes) + 2
    # every GPU workload's exact shapes and the hidden probes, on a sample of their programs, in the timed dtype
    assert {(c.case, c.dtype, c.hidden) for c in sampled} == \
        {(f"{w.id} (sampled programs)", cfg.gpu.dtypes[0], False) for w in cfg.workloads} | \
        {(f"probe-{i + 1} (sampled programs)", cfg.gpu.dtypes[0], True) for i in range(cfg.cpu.hidden_probes)}
    runs = sum(len(c.params.get("dtypes") or cfg.cpu.dtypes) for c in cfg.cases) * cfg.cpu.seeds
    assert len(verdict.cases) == runs + len(hidden) + len(cfg.raises) + len(sampled)
    assert all(c.passed for c in verdict.cases)
    assert max(c.rel_l2 for c in verdict.cases if c.dtype == "float32" and c.rel_l2 is not None) < 1e-5


def test_baseline_verdict_reports_the_workloads_launches_and_only_gpu_timing_unverified(baseline_verdict):
    _, verdict = baseline_verdict
    assert [u for u in verdict.unverified if not u.startswith(("GPU timing", "GPU correctness"))] == []
    assert any(u.startswith("GPU timing") for u in verdict.unverified)
    assert any(u.startswith("GPU correctness: checked under the Triton interpreter") for u in verdict.unverified)
    launches = {row.workload: row for row in verdict.compile.launches}
    assert set(launches) == {f"W{i}" for i in range(1, 10)}
    w2 = launches["W2"]
    assert w2.grid == [1, 32, 1] and w2.programs == 32 and w2.sm_count == 132
    assert w2.ctas_per_sm >= 1 and 0 < w2.waves < 1 and w2.registers and w2.spill_bytes == 0


def test_cpu_timing_is_labelled_interpreter_never_gpu(baseline_verdict):
    _, verdict = baseline_verdict
    assert verdict.device == "cpu"
    assert verdict.timing.label == INTERPRETER_LABEL and verdict.timing.geomean_speedup is None
    assert all(w.label == INTERPRETER_LABEL for w in verdict.timing.workloads)
    assert verdict.timing.interpreter_ratio > 0


def test_baseline_compiles_for_sm90_with_resources(baseline_verdict):
    _, verdict = baseline_verdict
    report = verdict.compile
    assert report.ok and report.target == "sm_90" and report.shared_limit_bytes == 232448
    assert report.kernels and all(0 < k.registers <= 255 for k in report.kernels)
    assert all(0 < k.shared_bytes <= report.shared_limit_bytes for k in report.kernels)
    assert {k.num_warps for k in report.kernels} == {8}


def test_human_output_names_the_label(tmp_path):
    bad = tmp_path / "k.py"
    bad.write_text("import os\n")
    proc = kopt("eval", str(bad))
    assert proc.returncode == 1
    assert "REJECTED" in proc.stdout and "line 1: [import]" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["eval", "/no/such/kernel.py"], "not found"),
    (["eval", str(BASELINE), "--task", "nope"], "unknown task"),
    (["eval", str(BASELINE), "--target", "sm_42"], "unknown target"),
])
def test_bad_usage_exits_2_with_a_fix(args, message):
    proc = kopt(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cuda_requested_without_a_gpu_is_a_usage_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = kopt("eval", str(BASELINE), "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr


def test_shared_memory_over_the_target_limit_is_rejected(tmp_path, sub_task):
    source = BASELINE.read_text()
    for old, new in (("BLOCK_M_LARGE_D = 64", "BLOCK_M_LARGE_D = 128"), ("BLOCK_N_LARGE_D = 32", "BLOCK_N_LARGE_D = 128"),
                     ("NUM_STAGES_LARGE_D = 1", "NUM_STAGES_LARGE_D = 3")):
        assert old in source
        source = source.replace(old, new)
    big = tmp_path / "big.py"
    big.write_text(source)
    # the compile phase compiles the task's GPU workloads whatever its CPU cases: one case is enough
    task = sub_task(cases=["C14"], dtypes=["float32"], seeds=1, hidden=0)
    proc = kopt("eval", str(big), "--target", "sm_89", "--task", str(task.root), "--json")
    verdict = Verdict.model_validate_json(proc.stdout)
    assert proc.returncode == 1 and verdict.status == "rejected" and verdict.phase == "compile"
    assert "shared memory" in verdict.reason and "101376" in verdict.reason
