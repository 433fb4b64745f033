"""`kopt status`, `history` and `compare` on synthetic run directories whose every number is known."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from kopt.harness import inspect
from kopt.harness.cli import main
from kopt.harness.trajectory import TRAJECTORY, Writer
from kopt.verifier.verdict import INTERPRETER_LABEL
from tests.harness.synthetic import RunSpec, make_run


@pytest.fixture
def run(tmp_path) -> Path:
    # evaluations: 1.0, a correctness failure, 1.5, 2.0, 1.9; 3 tool calls each (10 s apiece), 2 forbidden first
    return make_run(tmp_path / "r", RunSpec(outcomes=[1.0, "correctness", 1.5, 2.0, 1.9], forbidden=2, redesigns=1))


def test_status_counts_best_and_budgets_from_the_files(run):
    view = inspect.load(run)
    c = view.counters
    assert (c.tool_calls, c.evaluations, c.failed_evaluations, c.forbidden) == (17, 5, 1, 2)
    assert (c.input_tokens, c.output_tokens, round(c.cost_usd, 4)) == (1700, 340, 0.17)
    best = view.best
    # best 2.0 is the 4th evaluation: after 2 forbidden + 4 x 3 calls; 10 s per call
    assert (best.candidate, best.score, best.index, best.tool_calls, best.elapsed_s) == (4, 2.0, 4, 14, 140.0)
    assert view.elapsed_s == 170.0 and view.redesigns == 1
    assert view.state() == ("ended", "budget: budget detail")
    left = {name: (limit, used) for name, limit, used in view.budgets_left()}
    assert left == {"max_tool_calls": (100_000, 17), "max_evals": (1000, 5), "max_failed_evals_in_row": (20, 0)}
    assert view.label == f"{INTERPRETER_LABEL} time ratio" and view.kind == INTERPRETER_LABEL


def test_a_run_without_run_end_is_running_then_stopped(tmp_path):
    view = inspect.load(make_run(tmp_path / "r", RunSpec(outcomes=[1.0], end=None)))
    assert view.state(now=view.last.time + 5)[0] == "running"
    state, why = view.state(now=view.last.time + inspect.QUIET_S + 1)
    assert state == "stopped" and "kopt resume" in why
    # a provider outage announces its wait: quiet for that long is still running
    Writer(view.root / TRAJECTORY, next_seq=view.last.seq + 1, fsync=False).append(
        "model_retry", index=3, attempt=4, error="503", status=503, wait_s=3600.0)
    view = inspect.load(view.root)
    assert view.state(now=view.last.time + 3000)[0] == "running"


def test_a_torn_last_line_is_skipped_and_never_repaired(run):
    path = run / TRAJECTORY
    with open(path, "ab") as f:
        f.write(b'{"seq":999,"type":"evaluation","time":1.0,"elap')
    size = path.stat().st_size
    view = inspect.load(run)
    assert view.counters.evaluations == 5 and view.last.type == "run_end"
    assert path.stat().st_size == size  # the writer's file is never touched by a reader


def test_reading_while_a_run_writes_sees_only_complete_events(tmp_path):
    root = make_run(tmp_path / "r", RunSpec(outcomes=[1.0], end=None))
    start = inspect.load(root).last.seq
    writer = Writer(root / TRAJECTORY, next_seq=start + 1, fsync=False)
    done = threading.Event()

    def write() -> None:
        for i in range(3000):
            writer.append("tool_call", index=100 + i, call={"id": f"w{i}", "name": "notes", "arguments": "{}" * 50},
                          pre_sha=None)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    while not done.is_set():
        view = inspect.load(root)
        seen.append(view.last.seq)
        assert view.counters.tool_calls == 3 + (view.last.seq - start)  # no event lost or half-read
    thread.join()
    writer.close()
    assert seen == sorted(seen) and inspect.load(root).counters.tool_calls == 3003


def test_history_rows(run):
    (run / "candidates" / "0006.py").write_text("# snapshotted, then the run was killed\n")
    rows = inspect.history(inspect.load(run))
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.parent for r in rows] == [None, 1, 2, 3, 4, None]
    assert [r.status for r in rows] == ["ok", "rejected", "ok", "ok", "ok", "interrupted"]
    assert [r.score for r in rows] == [1.0, None, 1.5, 2.0, 1.9, None]
    assert [r.new_best for r in rows] == [True, False, True, True, False, False]
    assert [r.best for r in rows] == [False, False, False, True, False, False]
    assert [r.tool_index for r in rows[:5]] == [5, 8, 11, 14, 17] and rows[5].tool_index is None
    assert [r.elapsed_s for r in rows[:2]] == [50.0, 80.0] and rows[5].elapsed_s is None
    assert rows[1].phase == "correctness" and rows[1].reason == "correctness: case 2 failed"
    assert rows[3].workloads == pytest.approx({"W1": 2.0 / 1.1, "W2": 2.0, "W3": 2.2})
    # kernels (36 regs, 8 B spill, 1024 B) and (40 regs, 4 B spill, 512 B): max, total, max
    assert (rows[3].max_registers, rows[3].total_spill_bytes, rows[3].max_shared_bytes) == (40, 12, 1024)
    assert rows[3].label == f"{INTERPRETER_LABEL} time ratio" and rows[3].note == "try 4"


def test_a_candidate_without_verdict_in_a_live_run_is_being_evaluated(tmp_path):
    root = make_run(tmp_path / "r", RunSpec(outcomes=[1.0], end=None))
    (root / "candidates" / "0002.py").write_text("# snapshotted, verifier running\n")
    assert [r.status for r in inspect.history(inspect.load(root))] == ["ok", "evaluating"]


def test_history_cli_text_and_json(run, capsys):
    assert main(["history", str(run)]) == 0
    out = capsys.readouterr().out
    assert "NOT a GPU speedup" in out and "0004 BEST" in out and "0003 *" in out
    assert "correctness: case 2 failed" in out
    assert main(["history", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["score_label"] == f"{INTERPRETER_LABEL} time ratio"
    assert [c["id"] for c in data["candidates"] if c["best"]] == [4]


def test_history_of_a_gpu_run_says_geomean(tmp_path, capsys):
    root = make_run(tmp_path / "g", RunSpec(outcomes=[1.2, 1.4], gpu=True))
    assert main(["history", str(root)]) == 0
    out = capsys.readouterr().out
    assert "GPU geomean speedup" in out and "NOT a GPU" not in out


def test_status_cli(run, capsys):
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    for text in ("ended", "budget detail", "candidate 0004: 2.0000", "tool call 14", "budget max_evals",
                 "995 left", "forbidden attempts", "run ended: budget"):
        assert text in out, text


def test_status_watch_refreshes_until_ctrl_c(tmp_path):
    """In a terminal, as a person runs it: the view redraws (the clock ticks), follows the log (an evaluation
    starts and shows its progress), and Ctrl-C ends it. Every wait is on what the screen shows."""
    from kopt.harness import events as ev
    from kopt.agent.messages import ToolCall
    from tests.harness.terminal import Screen
    live = make_run(tmp_path / "live", RunSpec(outcomes=[1.0, "correctness", 1.5, 2.0, 1.9], end=None))
    screen = Screen([sys.executable, "-m", "kopt.harness.cli", "status", str(live), "--watch"])
    screen.wait_for(r"candidate 0004")
    seconds = {int(screen.wait_for(r"elapsed\s*\S\s*(?:\d+ min )?(\d+) s").group(1))}
    while len(seconds) < 2:  # the clock moves between reads of the log
        seconds.add(int(screen.wait_for(r"elapsed\s*\S\s*(?:\d+ min )?(\d+) s", timeout_s=120).group(1)))
    last = inspect.load(live).last
    w = Writer(live / TRAJECTORY, next_seq=last.seq + 1, elapsed_offset_s=last.elapsed_s, fsync=False)
    w.append(ev.ToolCallEvent(index=18, call=ToolCall(id="c-next", name="evaluate", arguments="{}")))
    w.append(ev.EvaluationProgress(candidate=6, phase="checking", done=7, total=21, message="compile and correctness"))
    w.close()
    screen.wait_for(r"candidate 0006: compile and correctness, \d+ s", timeout_s=120)
    screen.wait_for(r"7 of 21 case runs", timeout_s=120)
    screen.interrupt()
    assert screen.finish(timeout_s=120) == 0


def test_missing_or_broken_run_dir_is_a_usage_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "not a kopt run directory" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{torn")
    assert main(["history", str(tmp_path)]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--reach", "1.5"]) == 2


# ---- compare: 3 runs each of two models, numbers computed by hand

A_RUNS = [RunSpec(outcomes=[1.0, "correctness", 1.5, 2.0], forbidden=0, redesigns=1, end="budget"),
          RunSpec(outcomes=[0.5, 0.8, 0.79], forbidden=2, end="finished"),
          RunSpec(outcomes=[1.2, "compile", "compile", 1.1, 1.3], forbidden=1, end=None)]
B_RUNS = [RunSpec(outcomes=[3.0, 1.0], model="anthropic:beta", calls_per_eval=2, tokens=(1000, 100), cost_usd=0.1),
          RunSpec(outcomes=["gate", "gate"], model="anthropic:beta", calls_per_eval=2, tokens=(1000, 100),
                  cost_usd=0.1, end="stalled"),
          RunSpec(outcomes=[2.0, 4.0, 3.7], model="anthropic:beta", calls_per_eval=2, tokens=(1000, 100),
                  cost_usd=0.1)]


@pytest.fixture
def compared(tmp_path) -> list[Path]:
    return [make_run(tmp_path / f"{m}{i}", spec) for m, runs in (("a", A_RUNS), ("b", B_RUNS))
            for i, spec in enumerate(runs)]


def test_compare_medians_and_spreads_match_a_hand_computation(compared, capsys):
    assert main(["compare", *map(str, compared), "--json"]) == 0
    groups = {g["model"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    a, b = groups["openai:alpha"], groups["anthropic:beta"]
    assert (a["task"], a["kind"], len(a["runs"])) == ("rmsnorm", INTERPRETER_LABEL, 3)

    def stat(group, name):
        s = group["stats"][name]
        return s["median"], s["min"], s["max"], s["values"]

    # A: bests 2.0, 0.8 (never beat the baseline), 1.3; 90% targets 1.8, 0.72, 1.17
    # -> first reached at evaluations 4, 2, 1, i.e. tool calls 12, 6, 3 (3 per evaluation, + forbidden ones)
    assert stat(a, "best_score") == (1.3, 0.8, 2.0, [2.0, 0.8, 1.3])
    assert stat(a, "evals_to_reach") == (2, 1, 4, [4, 2, 1])
    assert stat(a, "tool_calls_to_reach") == (8, 4, 12, [12, 8, 4])  # + 0, 2, 1 forbidden calls first
    # tokens: (4*3 + 0), (3*3 + 2), (5*3 + 1) responses x 120 tokens
    assert stat(a, "tokens") == (1440, 1320, 1920, [1440, 1320, 1920])
    assert stat(a, "cost_usd")[3] == pytest.approx([0.12, 0.11, 0.16]) and stat(a, "cost_usd")[0] == pytest.approx(0.12)
    assert stat(a, "forbidden") == (1, 0, 2, [0, 2, 1])
    assert stat(a, "redesigns") == (0, 0, 1, [1, 0, 0])
    assert a["failed_by_phase"]["correctness"] == {"median": 0, "min": 0, "max": 1, "values": [1, 0, 0]}
    assert a["failed_by_phase"]["compile"] == {"median": 0, "min": 0, "max": 2, "values": [0, 0, 2]}
    assert a["ends"] == {"budget": 1, "finished": 1, "running": 1}  # no run_end, last event just now
    # B: bests 3.0, none (nothing passed), 4.0: medians over the runs that have one
    assert stat(b, "best_score") == (3.5, 3.0, 4.0, [3.0, None, 4.0])
    assert stat(b, "evals_to_reach") == (1.5, 1, 2, [1, None, 2])  # 3.0 >= 2.7 at 1; 4.0 >= 3.6 at 2
    assert stat(b, "tool_calls_to_reach") == (3, 2, 4, [2, None, 4])
    assert stat(b, "tokens") == (4400, 4400, 6600, [4400, 4400, 6600])
    assert b["failed_by_phase"]["gate"]["values"] == [0, 2, 0]
    assert b["ends"] == {"budget": 2, "stalled": 1}

    assert main(["compare", *map(str, compared)]) == 0
    text = capsys.readouterr().out
    assert "openai:alpha on rmsnorm (interpreter (CPU)): 3 runs" in text
    assert "1.3000" in text and "0.8000 - 2.0000" in text and "2.0000, 0.8000, 1.3000" in text
    assert "budget x1, finished x1, running x1" in text


def test_compare_never_pools_gpu_speedups_with_interpreter_ratios(tmp_path):
    views = [inspect.load(make_run(tmp_path / "c", RunSpec(outcomes=[1.5]))),
             inspect.load(make_run(tmp_path / "g", RunSpec(outcomes=[1.2], gpu=True)))]
    groups = inspect.compare(views)
    assert [(g.kind, len(g.runs)) for g in groups] == [("GPU", 1), (INTERPRETER_LABEL, 1)]


def test_compare_reach_fraction_is_a_parameter(compared):
    m = inspect.metrics(inspect.load(compared[0]), reach=1.0)  # 1.0: the evaluation that found the best
    assert (m.evals_to_reach, m.tool_calls_to_reach) == (4, 12)
    m = inspect.metrics(inspect.load(compared[0]), reach=0.5)
    assert (m.evals_to_reach, m.tool_calls_to_reach) == (1, 3)


def test_run_dirs_from_another_machine_read_from_their_own_files(run):
    config = json.loads((run / "run.json").read_text())
    assert not Path(config["task"]).exists()
    assert inspect.load(run).task == "rmsnorm"
    assert os.path.isdir(run / "candidates")
