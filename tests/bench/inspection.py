"""Benchmark: `kopt status`, `history`, `report`, `compare` and `export --atif` on a large synthetic run.

    python tests/bench/inspection.py [--candidates 500] [--dir DIR]

Builds a run of about 10,500 events and 500 candidates (tests/harness/synthetic.py), then
times each command twice: in-process (what the command itself costs) and as a user runs it,
a fresh `python -m kopt.harness.cli` process (interpreter start and imports included).
Targets: status and history under 1 s, report under 10 s. Exits 1 if one is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named inspect.py: run as a script, its folder comes first on sys.path and would
# shadow the standard library's `inspect` for everything imported after this point.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))  # the repository root: tests.harness.synthetic

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

TARGETS_S = {"status": 1.0, "history": 1.0, "report": 10.0}


def timed(fn) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where to build the run (default: a temporary folder)")
    args = parser.parse_args()

    from kopt.harness.cli import main as kopt
    from kopt.harness.inspect import load
    from tests.harness.synthetic import big_run

    base = Path(args.dir or tempfile.mkdtemp(prefix="kopt-bench-inspect-"))
    root = base / "run"
    start = time.perf_counter()
    big_run(root, candidates=args.candidates)
    view = load(root)
    size_mb = (root / "trajectory.jsonl").stat().st_size / 1e6
    print(f"run: {view.last.seq + 1:,} events ({size_mb:.1f} MB), {len(view.evaluations)} candidates, "
          f"built in {time.perf_counter() - start:.2f} s at {root}")

    commands = {"status": ["status", str(root)], "history": ["history", str(root)],
                "history --json": ["history", str(root), "--json"], "report": ["report", str(root)],
                "compare": ["compare", str(root), str(root)],
                "export --atif": ["export", str(root), "--atif", "-o", str(base / "atif.json")]}
    missed = []
    print(f"{'command':<16}{'in-process s':>14}{'fresh process s':>17}{'target s':>10}")
    for name, argv in commands.items():
        inside = timed(lambda: kopt(argv))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kopt.harness.cli", *argv], capture_output=True, text=True)
        outside = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}: {proc.stderr[-500:]}")
            missed.append(name)
        target = TARGETS_S.get(name)
        verdict = "" if target is None else "  ok" if outside < target else "  MISSED"
        if target is not None and outside >= target:
            missed.append(name)
        print(f"{name:<16}{inside:>14.3f}{outside:>17.3f}{'' if target is None else f'{target:>10.1f}'}{verdict}")
    report_kb = (root / "report.html").stat().st_size / 1024
    print(f"report.html: {report_kb:,.0f} KiB; ATIF: {(base / 'atif.json').stat().st_size / 1e6:.1f} MB")
    if missed:
        print("missed targets: " + ", ".join(missed))
    if args.dir is None:
        shutil.rmtree(base)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
