"""Benchmark: wall time of a full evaluation of the baseline (CPU path, or the GPU path on sim or a GPU), by phase.

    python tests/bench/verifier.py [--task extend_attention] [--target sm_90] [--repeat 1] [--device cpu|sim|cuda]

Phases run in parallel child processes (compile, one correctness child per dtype, the
baseline's interpreter timing), so their times add up to more than the total.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from kopt.verifier.evaluate import evaluate
from kopt.verifier.task import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="extend_attention")
    parser.add_argument("--target", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default), sim, cuda or cuda:N: the GPU path's split "
                        "(compile, correctness per dtype, baseline, timing) on sim or a GPU")
    args = parser.parse_args()
    task = load_task(args.task)
    for run in range(args.repeat):
        start = time.monotonic()
        verdict = evaluate(Path(task.baseline_path), task, device=args.device, target=args.target)
        total = time.monotonic() - start
        print(f"run {run + 1}: status={verdict.status} cores={os.cpu_count()} total wall {total:.1f} s")
        for phase, seconds in verdict.wall_s.items():
            print(f"  {phase:<24} {seconds:6.1f} s")
        runs = len(verdict.cases)
        print(f"  case runs checked: {runs}, kernels compiled for {verdict.target}: "
              f"{len(verdict.compile.kernels) if verdict.compile else 0}")
        if verdict.reason:
            print(f"  reason: {verdict.reason}")


if __name__ == "__main__":
    main()
