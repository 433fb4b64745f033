"""What the GPU workloads launch, without a GPU: real meta-tensor dry runs and real AOT compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import BASELINE

from kopt.verifier import launches
from kopt.verifier.child import load_module, split_call
from kopt.verifier.launches import DEVICES, Recorder, coverage, occupancy, render, workload_report
from kopt.verifier.task import Task, load_task
from kopt.verifier.verdict import LaunchReport

# grid (B, Hq, cdiv(max_len_extend, BLOCK_M)): BLOCK_M = 128 for D <= 128, 64 for D = 256 (W9)
GRIDS = {"W1": (8, 32, 2), "W2": (1, 32, 1), "W3": (1, 32, 64), "W4": (1, 32, 32), "W5": (32, 32, 16),
         "W6": (32, 32, 1), "W7": (4, 28, 8), "W8": (4, 64, 4), "W9": (2, 16, 32)}


def job(task: Task, kernel: Path, workloads: list[str] | None = None, target: str = "sm_90", **extra) -> dict:
    cfg = task.config
    chosen = [w for w in cfg.workloads if workloads is None or w.id in workloads]
    return dict({"reference": str(task.reference_path), "kernel": str(kernel), "module": "kopt_candidate",
                 "entry_point": cfg.entry_point, "positional_args": cfg.positional_args, "target": target,
                 "workloads": [{"id": w.id, "params": w.params} for w in chosen], "dtype": cfg.gpu.dtypes[0]}, **extra)


def variant(tmp_path: Path, source: Path, **constants: int) -> Path:
    text = source.read_text()
    for name, value in constants.items():
        line = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
        text = text.replace(line, f"{name} = {value}")
    path = tmp_path / f"{source.stem}_{'_'.join(f'{k}{v}' for k, v in constants.items())}.py"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def baseline_report(extend_task: Task) -> dict:
    return workload_report(job(extend_task, BASELINE), load_module)


def test_baseline_workloads_on_sm90(baseline_report: dict) -> None:
    assert baseline_report["errors"] == {}
    rows = {r["workload"]: LaunchReport(**r) for r in baseline_report["launches"]}
    assert sorted(rows) == sorted(GRIDS) and len(baseline_report["launches"]) == 9  # one launch each
    for wid, grid in GRIDS.items():
        r = rows[wid]
        assert tuple(r.grid) == grid and r.programs == grid[0] * grid[1] * grid[2], wid
        assert (r.num_warps, r.num_stages) == (8, 1)
        assert 64 <= r.registers <= 255 and r.spill_bytes == 0, (wid, r.registers, r.spill_bytes)
        assert 0 < r.shared_bytes <= 232448
        assert r.sm_count == 132 and r.device_assumed.startswith("H100")
        assert r.waves == pytest.approx(r.programs / (r.ctas_per_sm * 132))
    assert "BLOCK_M=128" in rows["W2"].specialization and "BLOCK_M=64" in rows["W9"].specialization
    assert rows["W2"].ctas_per_sm == 1  # 8 warps of > 128 registers: one CTA per SM
    text = render(rows.values())
    assert "W2: _fwd_kernel[a] grid 1x32x1 = 32 programs" in text and "0.24 waves on 132 SMs" in text
    assert "assumed device: H100 SXM (132 SMs)" in text
    keys = baseline_report["workload_keys"]
    assert keys["W1"] == keys["W2"] and keys["W1"] != keys["W7"]  # KV_GROUP 4 vs 7


def test_spilling_config_is_reported(extend_task: Task, tmp_path: Path) -> None:
    # 128x128 tiles with 4 warps: more live fp32 accumulators than 255 registers hold on sm_90
    kernel = variant(tmp_path, BASELINE, BLOCK_N=128, NUM_WARPS=4)
    report = workload_report(job(extend_task, kernel, ["W2"]), load_module)
    (row,) = report["launches"]
    assert row["spill_bytes"] > 0 and row["registers"] == 255 and row["num_warps"] == 4
    assert "SPILLS" in render(report["launches"])


def test_occupancy_by_hand() -> None:
    h100 = DEVICES["sm_90"]
    # 187 registers -> 192 per thread, 6144 per warp: 10 warps fit in 64K, one 8-warp CTA
    assert occupancy(h100, 8, 187, 48 * 1024) == (1, "registers")
    # 129 -> 136 per thread, 4352 per warp: 15 warps, three 4-warp CTAs
    assert occupancy(h100, 4, 129, 0) == (3, "registers")
    # 100 KB + 1 KB reserved per CTA out of 228 KB: two
    assert occupancy(h100, 4, 32, 100 * 1024) == (2, "shared memory")
    assert occupancy(h100, 1, 16, 0) == (32, "max CTAs")
    assert occupancy(DEVICES["sm_86"], 8, 32, 0) == (6, "threads")  # 1536 threads per SM
    assert occupancy(h100, 4, 32, 300 * 1024)[0] == 0  # does not fit at all
    # 32 programs, 1 CTA/SM, 132 SMs
    assert 32 / (1 * h100.sm_count) == pytest.approx(0.2424, abs=1e-4)


INTERPRETED = """
import json, sys, torch
from kopt.verifier import interp
from kopt.verifier.child import load_module, split_call
from kopt.verifier.launches import Recorder
interp.install()  # as the verifier's child does: its fixes make older tritons' interpreters run the kernel
from kopt.verifier.task import load_task
task = load_task("extend_attention")
case = next(c for c in task.config.cases if c.id == "C8").params
inputs = task.load_reference().make_inputs(case, torch.float32, 3, "cpu")
module = load_module(sys.argv[1], "kopt_interpreted")
assert type(module._fwd_kernel).__name__ == "InterpretedFunction"
with Recorder() as ran:
    module.extend_attention_fwd(*split_call(inputs, 13)[0], **split_call(inputs, 13)[1])
assert torch.isfinite(inputs["o_extend"]).all()  # it really ran
print(json.dumps({"keys": sorted(ran.keys()), "grids": [launch.grid for launch in ran.launches]}))
"""


def test_interpreter_and_jit_keys_agree(extend_task: Task) -> None:
    # the interpreter is chosen when triton is imported: a process of its own, as in the verifier
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", INTERPRETED, str(BASELINE)], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout
    ran = json.loads(out.splitlines()[-1])

    case = next(c for c in extend_task.config.cases if c.id == "C8").params
    meta = extend_task.load_reference().make_inputs(case, torch.float32, 3, "meta")
    args, kwargs = split_call(meta, extend_task.config.positional_args)
    jitted = load_module(str(BASELINE), "kopt_jitted")
    with Recorder() as dry:  # neither executed nor compiled: just recorded
        jitted.extend_attention_fwd(*args, **kwargs)
    assert ran["keys"] == sorted(dry.keys()) and len(dry.keys()) == 1
    assert ran["grids"] == [list(launch.grid) for launch in dry.launches] == [[3, 2, 1]]
    assert "DOT_PREC='ieee'" in ran["keys"][0]


def test_coverage_lists_uncovered_specializations(baseline_report: dict) -> None:
    keys = baseline_report["workload_keys"]
    checked = set(keys["W1"])  # say the CPU cases only ever ran W1's specialization
    missing = coverage(keys, checked)
    assert missing and all("never ran in a checked CPU case" in m for m in missing)
    assert any(m.startswith("W7: _fwd_kernel[") and "KV_GROUP=7" in m for m in missing)
    assert not any(m.startswith(("W1:", "W2:")) for m in missing)
    assert coverage(keys, {k for ks in keys.values() for k in ks}) == []


def test_rmsnorm_and_errors_per_workload(tmp_path: Path) -> None:
    task = load_task("rmsnorm")
    kernel = task.baseline_path.read_text().replace(
        "    if rows == 0:\n", "    if rows > 1000:\n        raise NotImplementedError('too many rows')\n    if rows == 0:\n")
    path = tmp_path / "kernel.py"
    path.write_text(kernel)
    report = workload_report(job(task, path), load_module)
    assert set(report["errors"]) == {"G1", "G3"} and "too many rows" in report["errors"]["G1"]
    (row,) = report["launches"]
    assert row["workload"] == "G2" and row["grid"] == [64, 1, 1] and row["num_warps"] == 4
    assert "G1: error: NotImplementedError: too many rows" in render(report["launches"], report["errors"])

    amd = workload_report(job(task, task.baseline_path, ["G2"], target="gfx942"), load_module)
    (row,) = amd["launches"]
    assert row["sm_count"] == 304 and row["registers"] and row["ctas_per_sm"] >= 1

    no_meta = tmp_path / "reference.py"
    no_meta.write_text(Path(task.reference_path).read_text().replace(
        '    if device == "meta":', '    if device == "meta":\n        raise ValueError("no meta")\n    if False:'))
    failed = workload_report(dict(job(task, task.baseline_path, ["G2"]), reference=str(no_meta)), load_module)
    assert failed["launches"] == [] and "meta-tensor fast path" in failed["errors"]["G2"]

    fp32 = tmp_path / "reference_fp32.py"  # meta inputs in another dtype would compile other kernels
    fp32.write_text(Path(task.reference_path).read_text().replace('{"dtype": dtype, "device": "meta"}',
                                                                 '{"dtype": torch.float32, "device": "meta"}'))
    failed = workload_report(dict(job(task, task.baseline_path, ["G2"]), reference=str(fp32)), load_module)
    assert failed["launches"] == [] and "another dtype" in failed["errors"]["G2"]


def test_module_size() -> None:
    assert len(Path(launches.__file__).read_text().splitlines()) < 350
