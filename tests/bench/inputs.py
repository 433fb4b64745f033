"""Input generation for the GPU workloads W1-W9 on one CPU core (issue goal: under 20 s in all).

    python tests/bench/inputs.py [--task extend_attention] [--dtype bfloat16]

Prints, per workload, the wall and CPU time of one make_inputs call (variant 0, then a variant
in the same shapes, as the timing coordinator draws three per workload) and the total. CPU time
is the process's own, so it holds on a loaded machine where wall time does not.
"""

from __future__ import annotations

import argparse
import time

import torch

from kopt.verifier.task import load_task

GOAL_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="extend_attention")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = load_task(args.task)
    reference = task.load_reference()
    dtype = getattr(torch, args.dtype)
    total_wall = total_cpu = 0.0
    print(f"{'workload':10} {'set 0 wall s':>12} {'set 0 cpu s':>12} {'set 1 cpu s':>12}  tensors")
    for w in task.config.workloads:
        wall, cpu = time.perf_counter(), time.process_time()
        first = reference.make_inputs(w.params, dtype, 1234, "cpu")
        mid_wall, mid_cpu = time.perf_counter(), time.process_time()
        reference.make_inputs(w.params, dtype, 1234, "cpu", variant=1)
        end_cpu = time.process_time()
        size = sum(t.numel() * t.element_size() for t in first.values() if isinstance(t, torch.Tensor))
        print(f"{w.id:10} {mid_wall - wall:12.2f} {mid_cpu - cpu:12.2f} {end_cpu - mid_cpu:12.2f}  "
              f"{size / 2**20:.0f} MiB")
        total_wall += mid_wall - wall
        total_cpu += mid_cpu - cpu
        del first
    print(f"W1-W9, one input set, one core: {total_cpu:.1f} s CPU ({total_wall:.1f} s wall on this machine now); "
          f"goal under {GOAL_S:.0f} s -> {'OK' if total_cpu < GOAL_S else 'OVER'}")


if __name__ == "__main__":
    main()
