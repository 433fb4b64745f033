"""`kopt selftest` and `kopt rescore`, as a user runs them (real subprocesses, the real verifier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.harness.synthetic import RunSpec, make_run

from kopt.verifier.task import load_task

pytestmark = pytest.mark.slow


def kopt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kopt.harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800)


def test_selftest_on_cpu_passes_honest_and_rejects_every_cheat(tmp_path: Path) -> None:
    done = kopt("selftest", "--device", "cpu", cwd=tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("PASS  versions: python") and "triton" in line for line in lines)
    assert any(line.startswith("PASS  baseline evaluation: ok; wall by phase: gate") for line in lines)
    assert any(line.startswith("PASS  honest variant passes") for line in lines)
    from kopt.harness.selftest import CHEATS
    for name, *_ in CHEATS:
        assert any(line.startswith(f"PASS  cheat rejected: {name}:") for line in lines), done.stdout
    assert any("A/A noise band" in line and "interpreter" in line for line in lines)
    assert lines[-1].startswith("TRUSTED")


def test_selftest_patches_each_apply_once_to_the_baseline() -> None:
    from kopt.harness.selftest import CHEATS, HONEST, patch
    source = load_task("rmsnorm").baseline_path.read_text()
    for name, _, old, new, _ in CHEATS:
        assert patch(source, old, new, name) != source
    assert patch(source, *HONEST, "honest") != source
    with pytest.raises(RuntimeError, match="no longer applies"):
        patch(source, "no such text", "x", "stale")


def test_selftest_refuses_an_unknown_device(tmp_path: Path) -> None:
    done = kopt("selftest", "--device", "tpu", cwd=tmp_path)
    assert done.returncode == 2 and "use auto, cpu, sim, cuda or cuda:N" in done.stderr


def test_rescore_from_cpu_to_sim_is_recorded_beside_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", RunSpec(outcomes=[1.1, "correctness", 1.3]))
    baseline = load_task("rmsnorm").baseline_path.read_text()
    for cid in (1, 3):  # real kernels in place of the synthetic sources
        (run / "candidates" / f"{cid:04d}.py").write_text(baseline)
    before = {p.name: p.read_bytes() for p in (run / "candidates").iterdir()}
    log_before = (run / "trajectory.jsonl").read_bytes()
    done = kopt("rescore", str(run), "--device", "sim", "--top", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0003: ok" in done.stdout and "simulated" in done.stdout
    records = [json.loads(line) for line in (run / "rescores.jsonl").read_text().splitlines()]
    assert [(r["candidate"], r["status"], r["kind"], r["device"]) for r in records] == [(3, "ok", "simulated", "sim")]
    assert (run / records[0]["verdict_file"]).is_file()
    # nothing of the run was rewritten
    assert {p.name: p.read_bytes() for p in (run / "candidates").iterdir()} == before
    assert (run / "trajectory.jsonl").read_bytes() == log_before
    history = json.loads(kopt("history", str(run), "--json", cwd=tmp_path).stdout)
    rescored = {c["id"]: c["rescored"] for c in history["candidates"]}
    assert rescored[1] == [] and len(rescored[3]) == 1 and "simulated" in rescored[3][0]
    text = kopt("history", str(run), cwd=tmp_path).stdout
    assert "[rescored:" in text
    assert kopt("report", str(run), "-o", str(tmp_path / "r.html"), cwd=tmp_path).returncode == 0
    report = (tmp_path / "r.html").read_text()
    assert "Rescored on other devices" in report and "simulated" in report
    board = kopt("compare", str(run), "--markdown", cwd=tmp_path)
    assert board.returncode == 0 and "Rescored on other devices" in board.stdout and "| 0003 |" in board.stdout


def test_rescore_refuses_a_bad_run_dir_and_top(tmp_path: Path) -> None:
    done = kopt("rescore", str(tmp_path / "nothing"), "--device", "sim", cwd=tmp_path)
    assert done.returncode == 2 and "kopt: error:" in done.stderr
    run = make_run(tmp_path / "run", RunSpec(outcomes=[1.1]))
    done = kopt("rescore", str(run), "--top", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--top 0" in done.stderr
