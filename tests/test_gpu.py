"""`pytest -m gpu`: the selftest's checks as tests, on a machine with a CUDA GPU (skipped elsewhere)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU here: run `pytest -m gpu` on a GPU machine")]


def test_selftest_on_the_gpu_is_trusted() -> None:
    from kopt.harness.selftest import conclusion, run
    checks = run("cuda")
    failed = [c.line() for c in checks if not c.ok and not c.warn]
    assert not failed, "\n".join(failed)
    assert conclusion(checks)[0]


def test_extend_attention_baseline_on_the_gpu_ties_with_itself() -> None:
    from kopt.verifier.evaluate import evaluate
    from kopt.verifier.task import load_task
    task = load_task("extend_attention")
    verdict = evaluate(task.baseline_path.read_text(), task, device="cuda")
    assert verdict.status == "ok", verdict.reason
    assert verdict.timing.kind == "gpu" and all(w.tie for w in verdict.timing.workloads)
    assert all(w.floor_ms and 0 < w.sol_fraction <= 1 for w in verdict.timing.workloads)
