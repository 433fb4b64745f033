"""The verifier proves its own power (docs/threats.md rows 10 and 24): the mutation panel and the
honest kernels.

Each cheap wrong kernel (the mut_* entries of tests/verifier/panel.py) is evaluated by the real
evaluate() on the real task (every public case, both CPU dtypes, both seeds, the hidden cases)
and must be rejected. The stronger property: it must fail *every* case run in which its mutation
changes the math, and - so that the panel also catches a trigger-happy verifier - pass every case
run in which the mutation is a no-op (e.g. no_causal on the non-causal case C4, the GQA head map on MHA or
MQA cases). Whether a mutation changes the math is decided here from the case's own inputs
(lengths, heads, masks, window), with the contract's visibility rule restated independently.

Honest kernels of another structure and another tiling must pass with status "ok" (the tiling one
under `pytest -m long`; the baseline passes in tests/test_cli.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from tests.verifier.panel_support import SAMPLED, SECRET, cached_verdicts, describe

from kopt.verifier.evaluate import plan_items
from kopt.verifier.task import Task
from kopt.verifier.verdict import Verdict

pytestmark = pytest.mark.slow  # each full evaluation takes ~20-40 s under the interpreter


# ---- what each case run looks like (from the trusted input generator)
@dataclass
class Request:
    p: int
    e: int
    vis: torch.Tensor  # [E, P+E] bool: which keys each extend query sees
    vis_non_causal: torch.Tensor  # the same with is_causal=False


@dataclass
class Facts:
    hq: int
    hkv: int
    lq: int
    lv: int
    requests: list[Request]
    dtype: str = "float32"
    sink: bool = False  # every row's first key stands far above the rest (reference's `sink_logit`)


def visibility(p: int, e: int, causal: bool, window: int, mask: torch.Tensor | None) -> torch.Tensor:
    """The contract's visibility rule (docs/extend_attention.md), restated here, not imported."""
    t = torch.arange(e)[:, None]
    j = torch.arange(p + e)[None, :]
    ext = j >= p
    vis = torch.ones(e, p + e, dtype=torch.bool)
    if mask is not None:
        vis = torch.where(ext, mask.view(e, p + e).bool(), vis)
    elif causal:
        vis = vis & (~ext | (j - p <= t))
    if window > 0:  # prefix: P+t <= j+W; extend key u = j-P: t <= u+W, i.e. the same rule
        vis = vis & (p + t <= j + window)
    return vis


def case_facts(reference, item: dict) -> Facts:
    inputs = reference.make_inputs(item["params"], torch.float32, item["seed"], "cpu")
    qo, kv = inputs["qo_indptr"].tolist(), inputs["kv_indptr"].tolist()
    mask, mask_ptr = inputs["custom_mask"], inputs["mask_indptr"]
    causal, window = inputs["is_causal"], inputs["sliding_window_size"]
    requests = []
    for b in range(len(qo) - 1):
        p, e = kv[b + 1] - kv[b], qo[b + 1] - qo[b]
        block = None
        if mask is not None:
            start = int(mask_ptr[b])
            block = mask[start:start + e * (p + e)]
        requests.append(Request(p, e, visibility(p, e, causal, window, block),
                                visibility(p, e, False, window, block)))
    _, hq, lq = inputs["q_extend"].shape
    return Facts(hq, inputs["k_extend"].shape[1], lq, inputs["v_extend"].shape[2], requests, item["dtype"],
                 bool(item["params"].get("sink_logit")))


# ---- when does each mutation change the output?
def sees_any_key(f: Facts) -> bool:
    return any(r.vis.any() for r in f.requests)


def sees_two_keys(f: Facts) -> bool:  # softmax weights matter only with >= 2 visible keys
    return any((r.vis.sum(1) >= 2).any() for r in f.requests)


def sees_prefix(f: Facts) -> bool:
    return any(r.vis[:, :r.p].any() for r in f.requests)


def sees_prefix_tail(f: Facts) -> bool | None:  # mut_skip_prefix_tail drops the last ceil(P/10) keys
    dropped = [(r.vis[:, r.p - (r.p + 9) // 10:r.p].sum(1), r.vis.sum(1)) for r in f.requests]
    if not any(bool(d.any()) for d, _ in dropped):
        return False
    if f.dtype == "float32":  # fp32's tolerance sees any change
        return True
    # in fp16/bf16 one dropped key of a dozen can sit under the tolerance (a needle or peaky head puts its
    # weight on another key): two or more, and a sixteenth of some row's keys, decide; fewer decide nothing
    return True if any(bool(((d >= 2) & (d * 16 >= n.clamp_min(1))).any()) for d, n in dropped) else None


def causality_matters(f: Facts) -> bool | None:
    changed = [r for r in f.requests if (r.vis != r.vis_non_causal).any()]
    if f.dtype == "float32":  # fp32's tolerance sees any change
        return bool(changed)
    if not changed:
        return False
    # in fp16/bf16 dropping causality must expose a non-negligible share of some row's keys: one future
    # key beside 33,000 prefix keys (the hidden long prefix) moves the output below their resolution. A
    # smaller share decides nothing either way (None): beside a window of 1024 keys, 16 future keys with
    # logits shifted toward the cap moved fp16's output by 1.6x its limit
    share = any(((r.vis_non_causal & ~r.vis).sum(1) * 64 >= r.vis.sum(1).clamp_min(1)).any() for r in changed)
    return True if share else None


def gqa_map_matters(f: Facts) -> bool:  # h % Hkv == h // G for every h iff Hkv == 1 or G == 1
    return f.hkv > 1 and f.hq // f.hkv > 1 and sees_any_key(f)


def sees_second_prefix_tile(f: Facts) -> bool | None:
    # mut_drop_block drops prefix positions [BLOCK_N, 2*BLOCK_N): its tiles are the baseline's,
    # BLOCK_N = 64, or 32 when a padded head dim exceeds 128.
    block_n = 32 if max(_pow2(f.lq), _pow2(f.lv)) > 128 else 64
    dropped = [(r.vis[:, block_n:min(2 * block_n, r.p)].sum(1), r.vis.sum(1)) for r in f.requests]
    if f.sink and any(bool(d.any()) for d, _ in dropped):  # behind the sink each dropped key weighs e^-16: 64 of
        return None  # them move the output by about fp32's limit, proving nothing either way
    if f.dtype == "float32":  # fp32's tolerance sees any change
        return any(bool(d.any()) for d, _ in dropped)
    if not any(bool(d.any()) for d, _ in dropped):
        return False
    # in fp16/bf16 the dropped keys must be a sizable share of some row's keys: 64 of the hidden long
    # prefix's 8192 move the output by about fp16's limit and under bf16's; such a row proves nothing
    # either way (None: neither must fail nor must pass)
    return True if any(bool((d * 32 >= n.clamp_min(1)).any()) for d, n in dropped) else None


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


MUTANTS: dict[str, Callable[[Facts], bool | None]] = {
    "mut_zeros": sees_any_key,
    "mut_mean_v": sees_two_keys,
    "mut_skip_prefix": sees_prefix,
    "mut_skip_prefix_tail": sees_prefix_tail,
    "mut_no_causal": causality_matters,
    "mut_scale_105": sees_two_keys,
    "mut_gqa_map": gqa_map_matters,
    "mut_drop_block": sees_second_prefix_tile,
}


@pytest.fixture(scope="module")
def planned(extend_task: Task) -> list[tuple[dict, Facts]]:
    """Every case run evaluate() makes for SECRET, in order, with what its inputs look like."""
    reference = extend_task.load_reference()
    return [(item, case_facts(reference, item)) for item in plan_items(extend_task, "cpu", SECRET)]


# a wrong output of any size (zeros, uniform weights) under `pytest -m long`: the default suite keeps the
# small and the structural errors (a 5% scale, a skipped tile, tail, mask, head map)
LARGE_ERRORS = {"mut_zeros", "mut_mean_v"}


@pytest.fixture(scope="module")
def cases_verdict(sub_task, kernel_file) -> Callable[[str], Verdict]:
    """evaluate() on the real task's every case run and must-raise check, without its GPU workloads: a
    mutant is judged on the case runs whose facts this module restates (the workloads' sampled-programs
    rows are judged in test_threats.py and by the honest kernels below), at a quarter of the time."""
    return cached_verdicts(sub_task(raises=True, workloads=[]), kernel_file)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in LARGE_ERRORS else n
                                  for n in sorted(MUTANTS)])
def test_mutant_fails_exactly_the_cases_it_changes(name, cases_verdict, planned):
    verdict = cases_verdict(name)
    assert verdict.status == "rejected" and verdict.phase == "correctness", describe(verdict)
    raises = [c for c in verdict.cases if c.case.startswith("raises:")]
    assert raises and all(c.passed for c in raises), describe(verdict)  # the mutants keep the refusals
    rows = [c for c in verdict.cases if not c.case.startswith("raises:")]
    assert [(c.case, c.dtype, c.hidden) for c in rows] == \
        [(i["case"], i["dtype"], i["hidden"]) for i, _ in planned], "verdict rows are not the planned case runs"
    changes = MUTANTS[name]
    verdicts = [changes(facts) for _, facts in planned]  # True: changes the math; False: a no-op; None: too
    # small a change for the dtype's tolerance to decide
    must_fail = [(item["key"], row) for (item, _), row, v in zip(planned, rows, verdicts) if v is True]
    no_op = [(item["key"], row) for (item, _), row, v in zip(planned, rows, verdicts) if v is False]
    assert must_fail, f"{name}: no case run exercises this mutation at all"
    missed = [key for key, row in must_fail if row.passed]
    assert not missed, f"{name} passed case runs its mutation changes: {missed}"
    spurious = [(key, row.reason) for key, row in no_op if not row.passed]
    assert not spurious, f"{name} failed case runs its mutation does not change: {spurious}"


# (the baseline passes the same full task through `kopt eval` in tests/test_cli.py)
HONEST = ["honest_split_loops", pytest.param("honest_small_blocks", marks=pytest.mark.long)]


@pytest.mark.parametrize("name", HONEST)
def test_honest_kernel_passes(name, extend_task, full_verdict, planned):
    verdict = full_verdict(name)
    assert verdict.status == "ok", describe(verdict)
    rows = [c for c in verdict.cases if not c.case.startswith("raises:") and not c.case.endswith(SAMPLED)]
    assert len(rows) == len(planned) and all(c.passed for c in verdict.cases), describe(verdict)
    sampled = [c for c in verdict.cases if c.case.endswith(SAMPLED)]
    assert len(sampled) == len(extend_task.config.workloads) + extend_task.config.cpu.hidden_probes
    assert len(verdict.cases) - len(rows) - len(sampled) == len(extend_task.config.raises)
    assert any(c.hidden for c in verdict.cases)
    assert verdict.compile is not None and verdict.compile.ok and verdict.compile.kernels
    assert verdict.timing is not None and verdict.timing.label == "interpreter (CPU)"
