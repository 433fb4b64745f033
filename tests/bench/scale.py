"""Benchmark: evaluations per hour for 1 and 2 agents with each executor (local, ray), on the CPU path.

    python tests/bench/scale.py [--task rmsnorm] [--max-evals 6] [--device cpu] [--executors local,ray]

Each configuration is a real `kopt run --model builtin` in a fresh run directory; the figure is the
run's evaluations (cached repeats not counted) over its recorded run time. On CPU an evaluation is the
Triton interpreter over every case in child processes, so a 2-core machine is bound by its cores: read
the figures as each executor's overhead and what parallel agents gain there, not GPU throughput.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kopt.harness import inspect


def one(task: str, agents: int, executor: str, max_evals: int, device: str, root: Path) -> tuple[int, float, float]:
    run_dir = root / f"{executor}-{agents}"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "run", "--task", task, "--model", "builtin",
                           "--device", device, "--agents", str(agents), "--executor", executor,
                           "--max-evals", str(max_evals), "--run-dir", str(run_dir)], capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{executor} x{agents} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    view = inspect.load(run_dir)
    return view.fold.counters.evaluations, view.elapsed_s, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rmsnorm")
    parser.add_argument("--max-evals", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--executors", default="local,ray")
    args = parser.parse_args()
    print(f"{'executor':8} {'agents':>6} {'evals':>5} {'run s':>7} {'wall s':>7} {'evals/hour':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for executor in args.executors.split(","):
            for agents in (1, 2):
                n, run_s, wall = one(args.task, agents, executor, args.max_evals, args.device, Path(tmp))
                print(f"{executor:8} {agents:6d} {n:5d} {run_s:7.1f} {wall:7.1f} {3600 * n / run_s:10.0f}", flush=True)


if __name__ == "__main__":
    main()
