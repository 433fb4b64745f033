"""Two rmsnorm kernels through `kopt eval --json`, as a user (or an agent) would run them: an honest one of
another structure (two rows per program, a row loop) that must pass, and a dishonest one (the scale taken
from the first block of each row only: right on narrow rows, cheaper and wrong on wide ones) that must be
rejected by correctness. Then a pair for the inputs' sealed, read-only memory: a kernel that uses its input as
scratch and restores it before returning must be rejected (the write faults), and an honest one that uses its
own output as scratch (normalise into it, then apply the weight in a second pass over it) must pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kopt.verifier.task import load_task

REPO = Path(__file__).resolve().parents[2]
BASE = load_task("rmsnorm").baseline_path.read_text()


def two_rows_per_program(source: str) -> str:
    source = source.replace("def _rmsnorm_kernel(X, W, OUT, stride_x, stride_o, n_cols, eps, BLOCK_N: tl.constexpr):\n"
                            "    row = tl.program_id(0)\n",
                            "def _rmsnorm_kernel(X, W, OUT, stride_x, stride_o, n_rows, n_cols, eps, BLOCK_N: tl.constexpr):\n"
                            "    for r in range(2):\n"
                            "        row = tl.program_id(0) * 2 + r\n"
                            "        if row < n_rows:\n")
    head, body = source.split("        if row < n_rows:\n", 1)
    kernel, rest = body.split("\n\n\ndef rmsnorm_fwd", 1)
    kernel = "\n".join("        " + line if line.strip() else line for line in kernel.splitlines())
    source = head + "        if row < n_rows:\n" + kernel + "\n\n\ndef rmsnorm_fwd" + rest
    return source.replace("_rmsnorm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), n_cols,",
                          "_rmsnorm_kernel[((rows + 1) // 2,)](x, weight, out, x.stride(0), out.stride(0), rows, n_cols,")


HONEST = two_rows_per_program(BASE)
FIRST_BLOCK_ONLY = BASE.replace("    for start in range(0, n_cols, BLOCK_N):\n        mask = start + offs < n_cols\n"
                                "        x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
                                "        acc += x * x\n",
                                "    mask0 = offs < n_cols  # CHEAT: the first block stands for the row\n"
                                "    x0 = tl.load(X + row * stride_x + offs, mask=mask0, other=0.0).to(tl.float32)\n"
                                "    acc += x0 * x0 * (n_cols / tl.minimum(n_cols, BLOCK_N))\n", 1)


LOOP1 = ("        x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
         "        acc += x * x\n")
INPUT_AS_SCRATCH = BASE.replace(LOOP1, (
    "        x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
    "        tl.store(X + row * stride_x + start + offs, (x * x).to(X.dtype.element_ty), mask=mask)  # CHEAT\n"
    "        acc += tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
    "        tl.store(X + row * stride_x + start + offs, x.to(X.dtype.element_ty), mask=mask)  # restored\n"), 1)
WRITE = "        tl.store(OUT + row * stride_o + start + offs, (x * rstd * w).to(OUT.dtype.element_ty), mask=mask)\n"
OUTPUT_AS_SCRATCH = BASE.replace(WRITE, (
    "        tl.store(OUT + row * stride_o + start + offs, (x * rstd).to(OUT.dtype.element_ty), mask=mask)\n"
    "    for start in range(0, n_cols, BLOCK_N):  # the weight in a second pass over the output\n"
    "        mask = start + offs < n_cols\n"
    "        y = tl.load(OUT + row * stride_o + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
    "        w = tl.load(W + start + offs, mask=mask, other=0.0).to(tl.float32)\n"
    "        tl.store(OUT + row * stride_o + start + offs, (y * w).to(OUT.dtype.element_ty), mask=mask)\n"), 1)


def kopt_eval(tmp_path: Path, name: str, source: str) -> dict:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    done = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "eval", str(path), "--task", "rmsnorm",
                           "--device", "cpu", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout)


def test_the_patches_apply():
    assert HONEST != BASE and "for r in range(2)" in HONEST and "(rows + 1) // 2" in HONEST
    assert FIRST_BLOCK_ONLY != BASE and "CHEAT" in FIRST_BLOCK_ONLY
    assert INPUT_AS_SCRATCH != BASE and "CHEAT" in INPUT_AS_SCRATCH
    assert OUTPUT_AS_SCRATCH != BASE and "second pass over the output" in OUTPUT_AS_SCRATCH


def test_an_honest_kernel_of_another_structure_passes(tmp_path):
    verdict = kopt_eval(tmp_path, "two_rows", HONEST)
    assert verdict["status"] == "ok", (verdict["reason"], verdict.get("log_excerpt"))


def test_a_scale_from_the_first_block_only_is_rejected(tmp_path):
    verdict = kopt_eval(tmp_path, "first_block", FIRST_BLOCK_ONLY)
    assert verdict["status"] == "rejected" and verdict["phase"].startswith("correctness"), verdict["reason"]


def test_the_input_used_as_scratch_and_restored_is_rejected(tmp_path):
    verdict = kopt_eval(tmp_path, "input_scratch", INPUT_AS_SCRATCH)
    assert verdict["status"] == "rejected" and "SIGSEGV" in verdict["reason"], verdict["reason"]  # the store faults


def test_the_output_used_as_scratch_passes(tmp_path):
    verdict = kopt_eval(tmp_path, "output_scratch", OUTPUT_AS_SCRATCH)
    assert verdict["status"] == "ok", (verdict["reason"], verdict.get("log_excerpt"))
