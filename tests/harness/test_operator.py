"""The operator's experience, end to end in a pseudo-terminal: `kopt run` on the rmsnorm task (one dtype,
so each evaluation takes seconds) with a replayed model, its live panel moving during an evaluation,
Ctrl-C twice, `kopt resume`, an extension with a larger --max-evals, and the lineage after a revert.

Every wait is on what the screen or the run directory shows, never on a sleep.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from kopt.agent.messages import AssistantMessage, ModelResponse, ToolCall, Usage
from kopt.harness import events as ev
from kopt.harness import inspect, trajectory
from kopt.verifier.task import load_task
from tests.harness.terminal import Screen

pytest.importorskip("pexpect")
KOPT = [sys.executable, "-m", "kopt.harness.cli"]


def small_rmsnorm(root: Path) -> Path:
    """The rmsnorm task with its CPU checks cut to fp32, one seed, no hidden case: the same code paths, fast."""
    task = root / "rmsnorm"
    shutil.copytree(load_task("rmsnorm").root, task)
    toml = task / "task.toml"
    text = toml.read_text()
    cut = text.replace('[cpu]\ndtypes = ["float32", "float16", "bfloat16"]\nseeds = 2\nhidden_cases = 1',
                       '[cpu]\ndtypes = ["float32"]\nseeds = 1\nhidden_cases = 0')
    assert cut != text
    toml.write_text(cut)
    return task


def replay_script(path: Path) -> Path:
    """The model's side: evaluate the baseline, widen the blocks, then go back to 0001 and try fewer warps."""
    def turn(i: int, *calls: tuple[str, dict]) -> ev.ModelResponseEvent:
        message = AssistantMessage(content=f"step {i}", tool_calls=[
            ToolCall(id=f"t{i}-{j}", name=name, arguments=json.dumps(args)) for j, (name, args) in enumerate(calls)])
        return ev.ModelResponseEvent(index=i, response=ModelResponse(message=message, model="scripted",
                                                                     usage=Usage(input_tokens=100, output_tokens=10)))
    turns = [turn(0, ("evaluate", {"note": "baseline"})),
             turn(1, ("edit_file", {"path": "kernel.py", "old": "BLOCK_N = 256\n", "new": "BLOCK_N = 512\n"}),
                  ("evaluate", {"note": "wider blocks"})),
             turn(2, ("revert", {"candidate": 1}),
                  ("edit_file", {"path": "kernel.py", "old": "NUM_WARPS = 4\n", "new": "NUM_WARPS = 2\n"}),
                  ("evaluate", {"note": "fewer warps, from the baseline"}))]
    path.write_bytes(b"".join(ev.dump(t) + b"\n" for t in turns))
    return path


def events_of(run_dir: Path) -> list[ev.Base]:
    return list(trajectory.iter_events(run_dir / trajectory.TRAJECTORY))


@pytest.mark.timeout(1800)
def test_live_panel_two_stage_ctrl_c_resume_extension_and_lineage(tmp_path):
    task, script, run_dir = small_rmsnorm(tmp_path), replay_script(tmp_path / "script.jsonl"), tmp_path / "run"
    screen = Screen(KOPT + ["run", "--task", str(task), "--model", f"replay:{script}", "--device", "cpu",
                            "--max-evals", "2", "--run-dir", str(run_dir)])
    # the panel moves during an evaluation: its clock ticks and its case runs are counted
    ticks = {screen.wait_for(r"candidate 0001: [^,\n]+, (\d+) s").group(1)}
    while len(ticks) < 2:
        ticks.add(screen.wait_for(r"candidate 0001: [^,\n]+, (\d+) s").group(1))
    screen.wait_for(r"\d+ of 3 case runs")
    screen.wait_for(r"evaluations\s*\S\s*1 \(0 failed\) of 2")  # its result, then the next evaluation starts
    screen.wait_for(r"candidate 0002: ")
    screen.interrupt()
    screen.wait_for(r"stopping after this evaluation; Ctrl-C again to stop now: resumable")
    screen.interrupt()
    screen.wait_for(r"stopping now")
    assert screen.finish() == 3  # interrupted: resumable
    assert "resume with     kopt resume" in screen.text
    found = events_of(run_dir)
    assert found[-1].type == "run_end" and found[-1].reason == "interrupted" and "twice" in found[-1].detail
    assert [e.candidate for e in found if isinstance(e, ev.Evaluation)] == [1]  # 0002 was cut, never recorded
    assert any(isinstance(e, ev.EvaluationProgress) and e.candidate == 2 for e in found)
    assert (run_dir / "candidates" / "0002.py").exists() and not (run_dir / "candidates" / "0002.json").exists()

    # resumed: the same view, continued; the cut evaluation is redone, then the budget ends the run
    screen = Screen(KOPT + ["resume", str(run_dir)])
    screen.wait_for(r"tool calls\s*\S\s*3\b")
    screen.wait_for(r"candidate 0002: [^,\n]+, \d+ s")
    assert screen.finish() == 0
    assert "ended: budget (max_evals reached (2 of 2))" in screen.text

    # a larger --max-evals extends it: a new segment with its budget; the model reverts to 0001 and edits
    screen = Screen(KOPT + ["resume", str(run_dir), "--max-evals", "3"])
    screen.wait_for(r"segment\s*\S\s*3 of the run; extends the run \(budget\): max_evals 2 -> 3")
    assert screen.finish() == 0
    assert "ended: budget (max_evals reached (3 of 3))" in screen.text
    resumes = [e for e in events_of(run_dir) if isinstance(e, ev.RunResume)]
    assert [(r.extends, r.budgets.max_evals if r.budgets else None) for r in resumes] == [(None, None), ("budget", 3)]

    rows = {r.id: r for r in inspect.history(inspect.load(run_dir))}
    assert {i: r.parent for i, r in rows.items()} == {1: None, 2: 1, 3: 1}  # 0003 came from 0001, not 0002
    assert all(r.status == "ok" for r in rows.values())
    verdict = json.loads((run_dir / "candidates" / "0003.json").read_text())["verdict"]
    kernels = verdict["compile"]["kernels"]  # compile rows say which variant and case they belong to
    assert kernels and all(k["specialization"] == "_rmsnorm_kernel[BLOCK_N=256]" and k["case"] for k in kernels)
    assert verdict["wall_s"]["total"] <= sum(v for k, v in verdict["wall_s"].items() if k != "total")
