"""Errors judged per part (a head of a request, a row) as well as over the whole output."""

from __future__ import annotations

import torch

from kopt.verifier import check
from kopt.verifier.task import load_task

TOL = {"rel_l2": 1.5e-2, "atol": 6e-2, "rtol": 4e-2}


def attention_like(seed: int = 0) -> tuple[torch.Tensor, dict]:
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(4000, 8, 64, generator=gen, dtype=torch.float64) * 0.01  # long-prefix outputs are small
    inputs = {"qo_indptr": torch.tensor([0, 3995, 4000]), "q_extend": torch.empty(4000, 8, 64)}
    return ref, inputs


def test_a_zeroed_head_of_a_short_request_is_diluted_globally_but_caught_per_part() -> None:
    ref, inputs = attention_like()
    out = ref.clone()
    out[3995:4000, 3] = 0.0  # one head of the short request never written (zeros, small outputs)
    reason, rel, _ = check.compare(out, ref, TOL, "bfloat16")
    assert reason is None and rel < TOL["rel_l2"]  # the global check alone passes it
    groups = load_task("extend_attention").load_reference().error_groups(inputs, "o_extend")
    assert len(groups) == 2 * 8
    failure = check.group_failure(out, ref, TOL, groups)
    assert failure is not None and "request 1, head 3" in failure


def test_honest_bf16_rounding_passes_every_part() -> None:
    ref, inputs = attention_like(1)
    out = ref.to(torch.bfloat16).double()
    groups = load_task("extend_attention").load_reference().error_groups(inputs, "o_extend")
    assert check.compare(out, ref, TOL, "bfloat16")[0] is None
    assert check.group_failure(out, ref, TOL, groups) is None


def test_near_zero_parts_are_measured_against_a_floor_not_their_own_norm() -> None:
    ref = torch.ones((4, 16), dtype=torch.float64)
    ref[1] = 1e-7  # a row of near-zero values: rounding there is no failure
    out = ref.clone()
    out[1] = 0.0
    groups = load_task("rmsnorm").load_reference().error_groups({"x": ref}, "out")
    assert check.group_failure(out, ref, TOL, groups) is None
    out[2] = 0.5  # a whole row half as large: caught, though the whole output's error is diluted
    assert "row 2" in check.group_failure(out, ref, TOL, groups)


def test_a_wrong_result_names_the_limit_that_failed_and_a_tf32_sized_fp32_error_names_the_fix() -> None:
    """An independent panel's fp16 kernel failed with an L2 error under the printed L2 limit: the message
    did not say that the elementwise bound had failed. An fp32 error of TF32's size names input_precision."""
    ref = torch.linspace(-1, 1, 4096, dtype=torch.float64).reshape(64, 64)
    tol = {"rel_l2": 3e-3, "atol": 1e-3, "rtol": 1e-2}
    spike = ref.clone()
    spike[5, 5] += 0.05  # one element far off, the whole output's L2 error still small
    reason, rel, _ = check.compare(spike.half(), ref, tol, "float16")
    assert rel < tol["rel_l2"] and "within the L2 limit, but an element is off by more than atol" in reason
    assert "TF32" not in reason
    f32 = {"rel_l2": 1e-5, "atol": 1e-6, "rtol": 1e-4}
    noisy = ref * (1 + 5e-4 * torch.sin(torch.arange(4096, dtype=torch.float64).reshape(64, 64)))
    reason, rel, _ = check.compare(noisy.float(), ref, f32, "float32")
    assert 1e-4 < rel < 1e-3 and 'input_precision="ieee"' in reason and "within the L2 limit" not in reason
    reason, _, _ = check.compare((ref * 1.5).float(), ref, f32, "float32")  # plainly wrong: no TF32 hint
    assert "TF32" not in reason
