"""A regular wheel (`pip install .`, not `-e`) ships the tasks: what a Ray worker or any non-checkout install
has. The wheel is built from this checkout, unpacked outside it, and `kopt eval KERNEL --task rmsnorm` runs
from there (the checkout is not on the path: the verifier's children import the unpacked kopt too)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_regular_wheel_ships_the_tasks_and_evaluates_from_them(tmp_path):
    had_build = (REPO / "build").exists()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    if not had_build:  # (setuptools leaves its build/ in the checkout)
        shutil.rmtree(REPO / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("kopt-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for task in ("rmsnorm", "extend_attention"):
        for part in ("task.toml", "reference.py", "baseline.py", "instruction.md"):
            assert f"kopt/kernels/{task}/{part}" in names, (task, part)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import kopt.verifier.task as t; print(t.load_task('rmsnorm').root)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    baseline = site / "kopt" / "kernels" / "rmsnorm" / "baseline.py"  # the wheel's own copy
    done = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "eval", str(baseline), "--task", "rmsnorm",
                           "--device", "cpu", "--json"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=600)
    verdict = json.loads(done.stdout)
    assert verdict["status"] == "ok", (verdict.get("reason"), done.stderr[-2000:])
