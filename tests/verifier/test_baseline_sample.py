"""The pinned baseline's own error on a hidden case (bf16's comparative rule) from a sample of its programs.

Under the interpreter the baseline runs every hidden bf16 case only to measure its error; on the longest
hidden case that was 15 s of a 90 s evaluation. A sample of its programs gives an estimate of that error;
the candidate still runs every program, and the rule's ulp is taken at the whole output's magnitude.
"""

from __future__ import annotations

import threading

import pytest

from kopt.verifier import cpu
from kopt.verifier.task import Task

CASE = {"heads": [2, 1], "head_dim": 64, "requests": [[300, 200], [50, 129], [0, 65], [700, 3]]}


def item(hidden: bool, seed: int) -> dict:
    return {"key": f"x/bfloat16/{seed}", "case": "x", "params": CASE, "dtype": "bfloat16", "seed": seed,
            "hidden": hidden, "repeat": False, "public_index": 0}


@pytest.mark.parametrize("seed", [3, 8])
def test_a_sample_of_the_baseline_estimates_its_error_on_a_hidden_case(extend_task: Task, seed: int,
                                                                         monkeypatch) -> None:
    monkeypatch.setattr(cpu, "BASELINE_SAMPLE", (3, 4096))  # of this case's 14 storing programs
    sampled = cpu.baseline_run(extend_task, [], [item(True, seed)], threading.Event())
    full = cpu.baseline_run(extend_task, [], [item(False, seed)], threading.Event())
    key = item(True, seed)["key"]
    assert sampled.sampled == {key} and not full.sampled
    (rel_s, worst_s, scale_s), (rel, worst, scale) = sampled.errors[key], full.errors[key]
    assert (rel_s, worst_s) != (rel, worst)  # a part of the rows, not all of them
    assert 0.5 * rel < rel_s < 2.0 * rel and 0 < worst_s <= worst and 0 < scale_s <= scale


def row(rel: float, worst: float) -> dict:
    return {"passed": True, "reason": None, "rel_l2": rel, "max_abs": worst}


def test_the_comparative_rule_takes_its_ulp_at_the_whole_outputs_magnitude(extend_task: Task) -> None:
    """A sample of small rows (scale 0.5: an ulp of 2^-8) must not make the rule stricter than the whole
    output's (scale 3: 2^-6); a candidate twice the baseline's error plus more than that ulp still fails."""
    base = cpu.Baseline(errors={"x/bfloat16/0": (2e-3, 2e-3, 0.5)}, sampled={"x/bfloat16/0"})
    items = [item(True, 0)]
    honest = [row(2.5e-3, 9e-3)]  # over 2 x 2e-3 + 2^-8 = 7.9e-3 (the sample's ulp), under 2 x 2e-3 + 2^-6
    cpu.comparative(honest, items, base, extend_task, {"x/bfloat16/0": 3.0})
    assert honest[0]["passed"], honest[0]["reason"]
    small = [row(2.5e-3, 9e-3)]
    cpu.comparative(small, items, base, extend_task)  # without the whole output's magnitude: the sample's ulp
    assert not small[0]["passed"] and "less accurate than the baseline" in small[0]["reason"]
    worse = [row(2.5e-3, 2 * 2e-3 + 2.0 ** -6 + 1e-3)]
    cpu.comparative(worse, items, base, extend_task, {"x/bfloat16/0": 3.0})
    assert not worse[0]["passed"] and "less accurate than the baseline" in worse[0]["reason"]
