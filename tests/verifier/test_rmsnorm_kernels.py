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


# Two programs per row, each summing the squares of every other block, merged through a per-row sum:
# the last of the two (an atomic counter says which) writes the row. The merge is the difference.
SPLIT = '''
@triton.jit
def _rmsnorm_kernel(X, W, OUT, SUMS, COUNT, stride_x, stride_o, n_cols, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    half = tl.program_id(1)
    offs = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for b in range(half, tl.cdiv(n_cols, BLOCK_N), 2):
        mask = b * BLOCK_N + offs < n_cols
        x = tl.load(X + row * stride_x + b * BLOCK_N + offs, mask=mask, other=0.0).to(tl.float32)
        acc += x * x
MERGE
    if tl.atomic_add(COUNT + row, 1) == 1:  # the second of the two to finish writes the row
        rstd = 1.0 / tl.sqrt(TOTAL / n_cols + eps)
        for start in range(0, n_cols, BLOCK_N):
            mask = start + offs < n_cols
            x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + start + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(OUT + row * stride_o + start + offs, (x * rstd * w).to(OUT.dtype.element_ty), mask=mask)


WRAPPER
'''
HEAD = BASE.split("@triton.jit", 1)[0].replace("import triton\n", "import torch\nimport triton\n", 1)
# the baseline's wrapper (its argument checks), launching two programs per row with the merge's scratch
SPLIT = SPLIT.replace("WRAPPER\n", "def rmsnorm_fwd" + BASE.split("def rmsnorm_fwd", 1)[1].replace(
    "    _rmsnorm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), n_cols,",
    "    sums = torch.zeros((rows,), dtype=torch.float32, device=x.device)\n"
    "    count = torch.zeros((rows,), dtype=torch.int32, device=x.device)\n"
    "    _rmsnorm_kernel[(rows, 2)](x, weight, out, sums, count, x.stride(0), out.stride(0), n_cols,"))
assert "_rmsnorm_kernel[(rows, 2)]" in SPLIT
# the cheat: a plain read-add-write of the row's sum. The interpreter runs the two programs one after the
# other, in any order the verifier picks, and the sum comes out right every time; a GPU runs them at once,
# both read 0, and one half of the row is lost.
RACY_MERGE = HEAD + SPLIT.replace("MERGE", "    tl.store(SUMS + row, tl.load(SUMS + row) + tl.sum(acc, 0))  # CHEAT: not atomic") \
    .replace("TOTAL", "tl.load(SUMS + row)")
ATOMIC_MERGE = HEAD + SPLIT.replace("MERGE", "    tl.atomic_add(SUMS + row, tl.sum(acc, 0))") \
    .replace("TOTAL", "tl.atomic_add(SUMS + row, 0.0)")


def test_a_non_atomic_merge_between_programs_is_rejected_as_a_race(tmp_path):
    verdict = kopt_eval(tmp_path, "racy_merge", RACY_MERGE)
    assert verdict["status"] == "rejected" and verdict["phase"].startswith("correctness"), verdict["reason"]
    assert "a race between programs" in verdict["reason"] and "wrote in the same launch" in verdict["reason"], verdict["reason"]


def test_the_same_merge_with_atomics_passes(tmp_path):
    verdict = kopt_eval(tmp_path, "atomic_merge", ATOMIC_MERGE)
    assert verdict["status"] == "ok", (verdict["reason"], verdict.get("log_excerpt"))
