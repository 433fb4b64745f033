"""The built-in policy: deterministic, resumable, prunes by the compile report, never keeps a failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from kopt.agent.builtin import edits_between
from kopt.harness import trajectory
from kopt.harness.models import builtin_for
from kopt.harness.run import Run
from kopt.harness.workspace import Budgets
from kopt.verifier.task import load_task
from kopt.verifier.verdict import CompileReport, KernelResources
from tests.harness.helpers import make_workspace, verdict

CONFIG = re.compile(r"^(BLOCK_N|NUM_WARPS) = (\d+)", re.MULTILINE)


class ConfigVerifier:
    """Scores rmsnorm configurations by a known landscape: best at BLOCK_N=1024, NUM_WARPS=2."""

    def __init__(self, reject=(), spill=()):
        self.reject, self.spill = reject, spill
        self.evaluated: list[dict] = []

    def values(self, source):
        return {k: int(v) for k, v in CONFIG.findall(source)}

    def evaluate(self, source, candidate_id):
        v = self.values(source)
        self.evaluated.append(v)
        if (v["BLOCK_N"], v["NUM_WARPS"]) in self.reject:
            return verdict(False, reason="correctness: wrong result")
        score = 2.0 - abs(v["BLOCK_N"] - 1024) / 2048 - abs(v["NUM_WARPS"] - 2) / 8
        return verdict(True, score)

    def compile(self, source):
        v = self.values(source)
        spill = 4096 if (v["BLOCK_N"], v["NUM_WARPS"]) in self.spill else 0
        return CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True, kernels=[
            KernelResources(name="_rmsnorm_kernel", num_warps=v["NUM_WARPS"], num_stages=1, shared_bytes=0,
                            registers=64, spill_bytes=spill, compile_s=0.1)])


def calls_of(ws):
    events = trajectory.read(ws.root / "trajectory.jsonl")[0]
    return [(e.data["call"]["name"], e.data["call"]["arguments"]) for e in events
            if e.type == "tool_call" and not e.data.get("retry")]


def run_builtin(tmp_path, name="run", fake=None, **kwargs):
    task = load_task("rmsnorm")
    ws = make_workspace(tmp_path / name, budgets=kwargs.pop("budgets", Budgets()))
    fake = fake or ConfigVerifier()
    stop = Run(ws, builtin_for(task, "cpu"), fake.evaluate, fake.compile, **kwargs).execute()
    return ws, fake, stop


def test_coordinate_descent_finds_the_best_configuration(tmp_path):
    ws, fake, stop = run_builtin(tmp_path)
    assert stop.reason == "finished" and "BLOCK_N=1024,NUM_WARPS=2" in stop.detail
    assert CONFIG.findall(ws.kernel.read_text()) == [("BLOCK_N", "1024"), ("NUM_WARPS", "2")]
    assert fake.evaluated[0] == {"BLOCK_N": 256, "NUM_WARPS": 4}  # the starting point first
    assert len(fake.evaluated) == len({tuple(v.items()) for v in fake.evaluated})  # nothing evaluated twice
    notes = ws.notes.read_text()
    assert "Triton-interpreter time ratios" in notes and notes.count("builtin tried ") == len(fake.evaluated)


def test_same_scores_same_tool_calls(tmp_path):
    a, _, _ = run_builtin(tmp_path, "a")
    b, _, _ = run_builtin(tmp_path, "b")
    assert calls_of(a) == calls_of(b) and len(calls_of(a)) > 20


def test_a_resumed_run_makes_the_same_calls(tmp_path):
    control, _, _ = run_builtin(tmp_path, "control")

    class Crash(BaseException):
        pass

    def crash(event, run):
        if event.type == "model_request" and run.counters.model_requests == 13:
            raise Crash()

    with pytest.raises(Crash):
        run_builtin(tmp_path, "run", on_event=crash)
    task = load_task("rmsnorm")
    from kopt.harness.workspace import Workspace
    ws = Workspace.open(tmp_path / "run")
    fake = ConfigVerifier()
    assert Run(ws, builtin_for(task, "cpu"), fake.evaluate, fake.compile).execute().reason == "finished"
    assert calls_of(ws) == calls_of(control)


def test_ids_stay_unique_and_it_finishes_under_heavy_compaction(tmp_path):
    ws, _, stop = run_builtin(tmp_path, context_tokens=2500)
    assert stop.reason == "finished" and "BLOCK_N=1024,NUM_WARPS=2" in stop.detail
    events = trajectory.read(ws.root / "trajectory.jsonl")[0]
    ids = [c["id"] for e in events if e.type == "model_response" for c in e.data["response"]["message"]["tool_calls"]]
    assert len(ids) == len(set(ids))
    assert sum(e.type == "compaction" for e in events) >= 3


def test_failures_are_never_kept_and_spilling_changes_are_pruned(tmp_path):
    fake = ConfigVerifier(reject={(512, 4), (1024, 2)}, spill={(256, 8)})
    ws, fake, stop = run_builtin(tmp_path, fake=fake)
    assert stop.reason == "finished"
    assert {"BLOCK_N": 256, "NUM_WARPS": 8} not in fake.evaluated  # pruned before evaluation
    assert "BLOCK_N=256,NUM_WARPS=8 => pruned: spills 4096 B" in ws.notes.read_text()
    # best.py: the incumbent the builtin names in finish, labelled (interpreter ratios are not GPU speed)
    header, body = (ws.root / "best.py").read_text().split("\n", 1)
    named = int(re.search(r"candidate (\d{4}) \(named in finish\); not timed on a GPU", header).group(1))
    record = json.loads((ws.root / "candidates" / f"{named:04d}.json").read_text())
    assert record["verdict"]["status"] == "ok"
    assert body == (ws.root / "candidates" / f"{named:04d}.py").read_text()
    assert f"{named:04d}" in stop.detail


def test_edits_between_gives_one_unique_exact_replacement():
    old = "a = 1\nb = 2\nx = 0\nb = 2\nc = 3\n"
    new = "a = 1\nb = 2\nx = 5\nb = 2\nc = 4\n"
    (before, after), = edits_between(old, new)
    assert old.count(before) == 1 and old.replace(before, after) == new
    assert edits_between(old, old) == []


def test_extend_attention_rewrites_apply_through_edit_file(tmp_path):
    task = load_task("extend_attention")
    source = task.baseline_path.read_text()
    for name, rewrite in task.load_rewrites():
        target = rewrite(source)
        assert target is not None and target != source and rewrite(target) is None, name
        (before, after), = edits_between(source, target)
        assert source.count(before) == 1 and source.replace(before, after) == target


@pytest.mark.slow
@pytest.mark.parametrize("rewrite", ["exp2_folded_scale", "pipeline_prefix"])
def test_each_extend_attention_rewrite_passes_the_verifier(rewrite, spread_task):
    from kopt.verifier.evaluate import evaluate
    source = dict(spread_task.load_rewrites())[rewrite](spread_task.baseline_path.read_text())
    result = evaluate(source, spread_task, device="cpu", secret=11)
    assert result.status == "ok", result.reason


@pytest.mark.slow
def test_real_run_on_cpu_improves_the_rmsnorm_configuration(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "run", "--task", "rmsnorm", "--model", "builtin",
                           "--max-evals", "4", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert state["best"]["label"] == "interpreter (CPU) time ratio"
    # no GPU timed anything: best.py is a passing candidate the run delivers, labelled as such
    header, body = (run_dir / "best.py").read_text().split("\n", 1)
    named = int(re.search(r"^# kopt: candidate (\d{4}) .*not timed on a GPU: use `kopt rescore", header).group(1))
    record = json.loads((run_dir / "candidates" / f"{named:04d}.json").read_text())
    assert record["verdict"]["status"] == "ok"
    assert body == (run_dir / "candidates" / f"{named:04d}.py").read_text()
    assert state["counters"]["evaluations"] == 4


def test_extend_attention_search_reaches_the_rewrites_and_survives_a_redesign(tmp_path):
    task = load_task("extend_attention")
    ws = make_workspace(tmp_path / "run", task_name="extend_attention")
    sources: list[str] = []

    def flat(source, candidate_id):  # nothing ever beats the incumbent: every change is tried
        sources.append(source)
        return verdict(True, 1.0, gpu=True)  # GPU-timed: no new best is no progress, so the run stalls

    def clean(source):
        return CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True)

    stop = Run(ws, builtin_for(task, "cpu"), flat, clean, summarize=False).execute()
    events = trajectory.read(ws.root / "trajectory.jsonl")[0]
    assert stop.reason in ("finished", "stalled")
    assert any(e.type == "redesign" for e in events)  # the stall policy reset its context; NOTES.md carried on
    baseline = task.baseline_path.read_text()
    for name, rewrite in task.load_rewrites():
        assert rewrite(baseline) in sources, f"{name} was never evaluated"
    assert len(sources) == len(set(sources))
