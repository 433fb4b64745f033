"""The GPU timing protocol as pure logic, so it is tested on CPU with a fake timer.

coordinator.py supplies the real timer (one process per arm; CUDA events or the host clock); this module
decides the order of calls, the iteration count, the statistics and the integrity flags.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Protocol

BASELINE, CANDIDATE, COPY = "baseline", "candidate", "baseline-copy"
AUDIT_SPEEDUP = 3.0  # above this a result is flagged for a human to look at
ROOFLINE_MARGIN = 0.9  # a time below 0.9 x the roofline floor is physically impossible
MIN_NOISE_BAND = 0.005
GAP_SLACK_MS, GAP_SLACK_FRACTION = 0.05, 0.10


@dataclass(frozen=True)
class Sample:
    event_ms: float  # CUDA events around the entry point
    wall_ms: float  # host clock around call + synchronize


class Timer(Protocol):
    def time_call(self, arm: str, workload: str, index: int) -> Sample:
        """Run `arm` once on fresh inputs (index picks them); L2 flushed before; timed."""


@dataclass
class WorkloadStats:
    workload: str
    baseline_ms: float
    candidate_ms: float
    speedup: float
    noise_band: float
    ratios: list[float]
    flags: list[str] = field(default_factory=list)
    invalid: str | None = None
    floor_ms: float = 0.0

    @property
    def sol_fraction(self) -> float | None:
        """Speed-of-light fraction: the roofline floor over the candidate's time (1.0 is the roofline)."""
        return self.floor_ms / self.candidate_ms if self.floor_ms > 0 and self.candidate_ms > 0 else None

    @property
    def tie(self) -> bool:
        return abs(self.speedup - 1.0) <= self.noise_band


def round_orders(rounds: int, first: str, second: str) -> list[tuple[str, str]]:
    """A B, B A, A B, ...: alternating which arm goes first cancels linear drift."""
    return [(first, second) if r % 2 == 0 else (second, first) for r in range(rounds)]


def choose_iterations(baseline_ms: float, target_ms: float = 50.0, lo: int = 5, hi: int = 100) -> int:
    """Calls per arm per round, fixed from the baseline's estimate and used for both arms."""
    if not baseline_ms > 0 or math.isinf(baseline_ms):
        return lo
    return max(lo, min(hi, int(target_ms / baseline_ms)))


def paired_rounds(timer: Timer, workload: str, a: str, b: str, rounds: int, iters: int,
                  counter: list[int]) -> tuple[list[float], dict[str, list[Sample]]]:
    """Median per arm per round; ratio a/b per round (above 1: b is faster)."""
    samples: dict[str, list[Sample]] = {a: [], b: []}
    ratios = []
    for order in round_orders(rounds, a, b):
        medians = {}
        for arm in order:
            got = []
            for _ in range(iters):
                got.append(timer.time_call(arm, workload, counter[0]))
                counter[0] += 1
            samples[arm] += got
            medians[arm] = statistics.median(s.event_ms for s in got)
        ratios.append(medians[a] / medians[b] if medians[b] > 0 else math.inf)
    return ratios, samples


def measure_workload(timer: Timer, workload: str, baseline_estimate_ms: float, floor_ms: float,
                     rounds: int = 6, aa_rounds: int = 4, target_ms: float = 50.0, min_iters: int = 5,
                     max_iters: int = 100, band_factor: float = 1.0) -> WorkloadStats:
    """The interleaved protocol for one workload; `band_factor` widens the A/A band where noise is
    heavier-tailed than a GPU's (the simulated device's interpreter)."""
    iters = choose_iterations(baseline_estimate_ms, target_ms, min_iters, max_iters)
    counter = [0]
    ratios, samples = paired_rounds(timer, workload, BASELINE, CANDIDATE, rounds, iters, counter)
    aa, _ = paired_rounds(timer, workload, BASELINE, COPY, aa_rounds, iters, counter)
    base_ms = statistics.median(s.event_ms for s in samples[BASELINE])
    cand_ms = statistics.median(s.event_ms for s in samples[CANDIDATE])
    speedup = statistics.median(ratios)
    band = max(MIN_NOISE_BAND, band_factor * max(abs(r - 1.0) for r in aa))
    stats = WorkloadStats(workload, base_ms, cand_ms, speedup, band, ratios, floor_ms=floor_ms)
    stats.invalid = integrity(samples[BASELINE], samples[CANDIDATE], floor_ms)
    if speedup > AUDIT_SPEEDUP:
        stats.flags.append(f"speedup above {AUDIT_SPEEDUP:g}x: audit before trusting it")
    if stats.tie:
        stats.flags.append(f"within the A/A noise band (+-{band:.1%}): a tie")
    return stats


def integrity(baseline: list[Sample], candidate: list[Sample], floor_ms: float) -> str | None:
    """Why the candidate's times cannot be trusted, or None."""
    cand_event = statistics.median(s.event_ms for s in candidate)
    cand_gap = statistics.median(s.wall_ms - s.event_ms for s in candidate)
    base_gap = statistics.median(s.wall_ms - s.event_ms for s in baseline)
    # The device time comes from the arm's own process; the trusted host clock around each request
    # bounds what it can hide: the candidate's host overhead may exceed the baseline's by at most
    # 50 us or 10% of its device time (a report shaved by more, or work moved outside the window, fails).
    if cand_gap > base_gap + max(GAP_SLACK_MS, GAP_SLACK_FRACTION * cand_event):
        return (f"host wall time exceeds event time by {cand_gap:.3f} ms (baseline: {base_gap:.3f} ms): work "
                "outside the timed stream or deferred past the call")
    if cand_event < ROOFLINE_MARGIN * floor_ms:
        return (f"{cand_event:.4f} ms is below the roofline floor of {floor_ms:.4f} ms for this workload: "
                "physically impossible, so the work was not done")
    return None


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def roofline_floor_ms(bytes_moved: float, flops: float, bandwidth_gbs: float, peak_tflops: float) -> float:
    return max(bytes_moved / (bandwidth_gbs * 1e9), flops / (peak_tflops * 1e12)) * 1e3
