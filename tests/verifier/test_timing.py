"""The GPU timing protocol's logic, driven by a fake timer (the CUDA calls are the only untested part)."""

from __future__ import annotations

import math

import pytest

from kopt.verifier import timing
from kopt.verifier.timing import BASELINE, CANDIDATE, COPY, Sample


class FakeTimer:
    """Each arm has a true time; a drift term grows with every call; wall = event + gap."""

    def __init__(self, ms: dict[str, float], drift_per_call: float = 0.0, gap_ms: dict[str, float] | None = None,
                 jitter: float = 0.0):
        self.ms, self.drift, self.gap, self.jitter = ms, drift_per_call, gap_ms or {}, jitter
        self.calls: list[tuple[str, int]] = []

    def time_call(self, arm: str, workload: str, index: int) -> Sample:
        n = len(self.calls)
        self.calls.append((arm, index))
        wobble = self.jitter * math.sin(n * 12.9898) if self.jitter else 0.0
        event = self.ms[arm] * (1.0 + self.drift * n) * (1.0 + wobble)
        return Sample(event, event + self.gap.get(arm, 0.01))


def test_rounds_alternate_which_arm_goes_first():
    assert timing.round_orders(4, "A", "B") == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]


def test_iteration_count_comes_from_the_baseline_and_is_clamped():
    assert timing.choose_iterations(1.0) == 50
    assert timing.choose_iterations(0.001) == 100
    assert timing.choose_iterations(500.0) == 5
    assert timing.choose_iterations(float("nan")) == 5


def test_both_arms_get_identical_call_counts_in_interleaved_blocks():
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.5, COPY: 1.0})
    timing.measure_workload(timer, "W1", baseline_estimate_ms=2.0, floor_ms=0.01, rounds=4, aa_rounds=2)
    arms = [arm for arm, _ in timer.calls]
    iters = timing.choose_iterations(2.0)
    blocks = [arms[i] for i in range(0, len(arms), iters)]
    assert all(len(set(arms[i:i + iters])) == 1 for i in range(0, len(arms), iters))
    assert blocks == [BASELINE, CANDIDATE, CANDIDATE, BASELINE, BASELINE, CANDIDATE, CANDIDATE, BASELINE,
                      BASELINE, COPY, COPY, BASELINE]
    assert arms.count(CANDIDATE) == 4 * iters and arms.count(COPY) == 2 * iters
    indices = [index for _, index in timer.calls]
    assert indices == list(range(len(indices)))  # every call gets its own fresh input index


def test_speedup_is_the_median_paired_ratio():
    timer = FakeTimer({BASELINE: 2.0, CANDIDATE: 1.0, COPY: 2.0}, jitter=0.02)
    stats = timing.measure_workload(timer, "W1", 2.0, floor_ms=0.01)
    assert stats.speedup == pytest.approx(2.0, rel=0.03)
    assert stats.baseline_ms == pytest.approx(2.0, rel=0.03)
    assert stats.candidate_ms == pytest.approx(1.0, rel=0.03)
    assert stats.invalid is None and not stats.tie


def test_interleaving_cancels_drift_that_would_fake_a_difference():
    drift = 0.03 / 400  # 3% slower by the end of the run
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 1.0, COPY: 1.0}, drift_per_call=drift)
    stats = timing.measure_workload(timer, "W1", 1.0, floor_ms=0.01, rounds=6, aa_rounds=2)
    naive = FakeTimer({BASELINE: 1.0, CANDIDATE: 1.0}, drift_per_call=drift)
    a = [naive.time_call(BASELINE, "W1", i).event_ms for i in range(150)]
    b = [naive.time_call(CANDIDATE, "W1", i).event_ms for i in range(150)]
    naive_speedup = sorted(a)[75] / sorted(b)[75]
    assert abs(naive_speedup - 1.0) > 0.005  # sequential timing would report a difference
    assert abs(stats.speedup - 1.0) < 0.002  # ABBA medians do not
    assert stats.tie


def test_noise_band_comes_from_the_a_a_rounds():
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 1.0 / 1.03, COPY: 1.0}, jitter=0.04)
    stats = timing.measure_workload(timer, "W1", 1.0, floor_ms=0.01)
    assert stats.noise_band > timing.MIN_NOISE_BAND
    quiet = timing.measure_workload(FakeTimer({BASELINE: 1.0, CANDIDATE: 1.0 / 1.003, COPY: 1.0}), "W1", 1.0, 0.01)
    assert quiet.noise_band == timing.MIN_NOISE_BAND
    assert quiet.tie and any("tie" in f for f in quiet.flags)


def test_side_stream_work_shows_as_wall_time_above_event_time():
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.01, COPY: 1.0}, gap_ms={CANDIDATE: 1.2})
    stats = timing.measure_workload(timer, "W1", 1.0, floor_ms=0.001)
    assert stats.invalid and "host wall time" in stats.invalid


def test_time_below_the_roofline_floor_is_invalid():
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.05, COPY: 1.0})
    stats = timing.measure_workload(timer, "W1", 1.0, floor_ms=0.2)
    assert stats.invalid and "roofline" in stats.invalid
    assert any("audit" in f for f in stats.flags)


def test_a_fast_but_plausible_candidate_is_valid():
    timer = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.4, COPY: 1.0})
    stats = timing.measure_workload(timer, "W1", 1.0, floor_ms=0.3)
    assert stats.invalid is None and stats.speedup == pytest.approx(2.5)
    assert not any("audit" in f for f in stats.flags)


def test_geomean_and_roofline_floor():
    assert timing.geomean([2.0, 0.5]) == pytest.approx(1.0)
    assert timing.geomean([1.0, 4.0, 2.0]) == pytest.approx(2.0)
    assert math.isnan(timing.geomean([]))
    # 3.35 GB at 3350 GB/s is 1 ms; 989 TFLOP at 989 TFLOP/s is 1 s
    assert timing.roofline_floor_ms(3.35e9, 0.0, 3350, 989) == pytest.approx(1.0)
    assert timing.roofline_floor_ms(1.0, 989e12, 3350, 989) == pytest.approx(1000.0)


def test_a_device_time_shaved_by_the_arms_own_process_is_bounded_by_the_host_clock():
    """The arm's process reports its device time; under-reporting by more than 50 us or 10% shows as host
    overhead the baseline does not have. An honest candidate with the baseline's overhead passes."""
    honest = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.8, COPY: 1.0}, gap_ms={BASELINE: 0.1, CANDIDATE: 0.12, COPY: 0.1})
    assert timing.measure_workload(honest, "W1", 1.0, floor_ms=0.001).invalid is None
    # reports 0.5 ms where the call took 0.8: the 0.3 ms it hid lands in the wall-minus-event gap
    lying = FakeTimer({BASELINE: 1.0, CANDIDATE: 0.5, COPY: 1.0}, gap_ms={BASELINE: 0.1, CANDIDATE: 0.4, COPY: 0.1})
    stats = timing.measure_workload(lying, "W1", 1.0, floor_ms=0.001)
    assert stats.invalid and "host wall time exceeds event time" in stats.invalid


def test_interpreter_noise_band_compares_two_warm_calls_not_the_cold_first_one():
    # a process's first call of a specialization carries the interpreter's setup (measured: 71x a warm call
    # on rmsnorm's small cases), so the band must come from two warm calls, else it reads +-7000%
    from kopt.verifier.evaluate import interpreter_timing
    items = [{"key": f"R{i}/float32/0", "case": f"R{i}", "dtype": "float32"} for i in range(4)]
    cold = {i["key"]: 0.71 for i in items}
    candidate = {i["key"]: 0.70 for i in items}
    warm = {items[0]["key"]: (0.0100, 0.0102), items[1]["key"]: (0.0101, 0.0100), items[2]["key"]: (0.0099, 0.0104)}
    t = interpreter_timing(items, candidate, cold, warm)
    assert t.kind == "interpreter" and t.geomean_speedup is None
    assert 0.01 <= t.noise_band <= 0.05, t.noise_band
    assert all(w.tie for w in t.workloads)  # 0.71/0.70: inside the band
    assert interpreter_timing(items, candidate, cold, {}).noise_band is None  # not measured: said so, not 0
