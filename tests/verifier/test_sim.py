"""The GPU path end to end on the simulated device (`--device sim`): CPU tensors, the interpreter,
the timing coordinator with one process per arm, the host clock in place of CUDA events.

What must hold: the baseline against itself is a tie, a deliberately slowed copy loses, and a
kernel that behaves differently only under timing (here: once it has seen the same output
buffer more than three times, which correctness never does) is caught by the timed-output check.
Everything is labelled `simulated` and nothing is a GPU speedup.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kopt.verifier import evaluate as ev
from kopt.verifier.task import Task, load_task

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rms_sim(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """rmsnorm with a lighter correctness plan (one dtype, one seed, one hidden case): timing is the subject."""
    root = tmp_path_factory.mktemp("task") / "rmsnorm"
    shutil.copytree(ROOT / "kernels" / "rmsnorm", root)
    toml = (root / "task.toml").read_text()
    toml = re.sub(r"\[gpu\]\ndtypes = \[[^\]]*\]\nseeds = \d+\nhidden_cases = \d+",
                  '[gpu]\ndtypes = ["bfloat16"]\nseeds = 1\nhidden_cases = 1', toml)
    assert '[gpu]\ndtypes = ["bfloat16"]' in toml
    (root / "task.toml").write_text(toml)
    return load_task(str(root))


def baseline(task: Task) -> str:
    return task.baseline_path.read_text()


def test_baseline_against_itself_is_a_simulated_tie(rms_sim: Task) -> None:
    verdict = ev.evaluate(baseline(rms_sim), rms_sim, device="sim", secret=11)
    assert verdict.status == "ok", verdict.reason
    t = verdict.timing
    assert t.kind == "simulated" and t.label.startswith("simulated")
    assert t.geomean_speedup is None and t.simulated_ratio is not None  # never a GPU speedup
    assert [w.workload for w in t.workloads] == [w.id for w in rms_sim.config.sim_workloads]
    for w in t.workloads:
        assert w.tie, (w.speedup, w.noise_band)
        assert w.label == t.label and w.floor_ms is not None and 0 < w.sol_fraction < 1
    assert any("simulated device" in u for u in verdict.unverified)
    assert verdict.versions["device_kind"] == "simulated"
    # the workloads are checked for correctness too, as on a GPU
    assert {c.case for c in verdict.cases} >= {"S1", "S2"}


SLOWED = '''
def rmsnorm_fwd(x, weight, out, eps=1e-6) -> None:
    """The baseline's launch four times over (the same result, four times the work)."""
    rows, n_cols = x.shape
    if weight.shape != (n_cols,) or tuple(out.shape) != (rows, n_cols):
        raise ValueError("weight must be [n] and out [rows, n] for x [rows, n]")
    if x.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError("the last axis must be contiguous")
    if rows == 0:
        return
    for _ in range(4):
        _rmsnorm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), n_cols, eps, BLOCK_N=BLOCK_N,
                                 num_warps=NUM_WARPS)
'''


def with_wrapper(task: Task, wrapper: str) -> str:
    source = baseline(task)
    return source[:source.index("def rmsnorm_fwd")] + wrapper.lstrip()


def test_a_slowed_copy_loses(rms_sim: Task) -> None:
    verdict = ev.evaluate(with_wrapper(rms_sim, SLOWED), rms_sim, device="sim", secret=12)
    assert verdict.status == "ok", verdict.reason
    assert verdict.timing.simulated_ratio < 0.8
    assert all(w.speedup < 0.8 for w in verdict.timing.workloads)


# Keeps state across calls (refused by the gate: the gate is bypassed here to test the next line of
# defence). Correctness never calls one output buffer more than three times; timing does.
TIMING_ONLY = '''
_seen = {}


def rmsnorm_fwd(x, weight, out, eps=1e-6) -> None:
    rows, n_cols = x.shape
    if rows == 0:
        return
    key = out.data_ptr()
    _seen[key] = _seen.get(key, 0) + 1
    wrong = _seen[key] > 3
    _rmsnorm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), n_cols, 1e3 if wrong else eps,
                             BLOCK_N=BLOCK_N, num_warps=NUM_WARPS)
'''


def test_a_kernel_that_differs_only_under_timing_is_caught(rms_sim: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    source = with_wrapper(rms_sim, TIMING_ONLY)
    assert ev.gate(source, rms_sim), "the gate must refuse module state; it is bypassed below on purpose"
    monkeypatch.setattr(ev, "gate", lambda source, task: [])
    verdict = ev.evaluate(source, rms_sim, device="sim", secret=13)
    assert verdict.status == "rejected" and verdict.phase == "timing", (verdict.status, verdict.reason)
    assert "under timing conditions" in verdict.reason
    assert all(c.passed for c in verdict.cases)  # correctness alone did not see it


def test_a_task_without_sim_workloads_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "rmsnorm"
    shutil.copytree(ROOT / "kernels" / "rmsnorm", root)
    toml = (root / "task.toml").read_text()
    (root / "task.toml").write_text(toml[:toml.index("[[sim_workloads]]")])
    task = load_task(str(root))
    verdict = ev.evaluate(baseline(task), task, device="sim")
    assert verdict.status == "error" and "[[sim_workloads]]" in verdict.reason


def test_unknown_devices_are_refused_with_the_choices() -> None:
    from kopt.verifier.devices import check_name
    for bad in ("gpu", "cuda:", "cuda:x", "sim:1", "tpu"):
        with pytest.raises(ValueError, match="use auto, cpu, sim, cuda or cuda:N"):
            check_name(bad)
    assert check_name("cuda:3") == "cuda:3"
