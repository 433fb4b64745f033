"""The typed record: every event round-trips, a format-1 run directory resumes, a newer format is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kopt.harness import events as ev
from kopt.harness import inspect, trajectory
from kopt.harness.cli import main
from kopt.harness.run import Run
from kopt.harness.workspace import Workspace
from tests.harness.helpers import FakeVerifier, ScriptedModel, call

# Written by kopt before the typed record (format 1, no trajectory_format), stopped by a STOP file
# after 5 tool calls: read, edit, evaluate (candidate 1, 1.1), a refused read of ../run.json, notes.
FORMAT1_RUN = Path(__file__).parent / "data" / "format1_run"
SCRIPT = [  # the script that run was following
    [call("read_file", {"path": "kernel.py", "end_line": 3})],
    [call("edit_file", {"path": "kernel.py", "old": "NUM_WARPS = 4\n", "new": "NUM_WARPS = 4  # FAST\n"}),
     call("evaluate", {"note": "first"})],
    [call("read_file", {"path": "../run.json"})],
    [call("notes", {"text": "FAST comment helps"})],
    [call("edit_file", {"path": "kernel.py", "old": "# FAST\n", "new": "# FAST FAST\n"}),
     call("evaluate", {"note": "second"})],
    [call("finish", {"summary": "done"})],
]


@pytest.fixture
def old_run(tmp_path) -> Path:
    return Path(shutil.copytree(FORMAT1_RUN, tmp_path / "old"))


def test_a_format1_log_is_migrated_on_read(old_run):
    found, _ = trajectory.read(old_run / "trajectory.jsonl")
    assert isinstance(found[0], ev.RunStart) and found[0].trajectory_format == "1"
    evaluation = next(e for e in found if isinstance(e, ev.Evaluation))
    assert (evaluation.candidate, evaluation.score, evaluation.kind, evaluation.note) == (1, 1.1, "interpreter", "first")
    view = inspect.load(old_run)
    c = view.counters
    assert (c.tool_calls, c.evaluations, c.forbidden) == (5, 1, 1)
    assert view.best.candidate == 1 and view.kind == "interpreter (CPU)"
    assert inspect.history(view)[0].label == "interpreter (CPU) time ratio"


def test_a_format1_run_resumes_where_it_stopped(old_run):
    fake = FakeVerifier()
    stop = Run(Workspace.open(old_run), ScriptedModel(SCRIPT), fake.evaluate, fake.compile).execute()
    assert stop.reason == "finished" and stop.detail == "done"
    assert [cid for _, cid in fake.calls] == [2]  # candidate 1's verdict is never redone
    found, _ = trajectory.read(old_run / "trajectory.jsonl")
    assert [e.seq for e in found] == list(range(len(found)))
    assert sum(isinstance(e, ev.RunResume) for e in found) == 1
    view = inspect.load(old_run)
    assert (view.counters.tool_calls, view.counters.evaluations) == (8, 2)
    assert view.best.candidate == 2 and view.end == ("finished", "done")
    assert main(["status", str(old_run)]) == 0 and main(["history", str(old_run)]) == 0


def test_a_newer_format_is_refused_with_a_clear_message(old_run, capsys):
    path = old_run / "trajectory.jsonl"
    lines = path.read_text().splitlines()
    start = json.loads(lines[0])
    start["trajectory_format"] = "99"
    path.write_text("\n".join([json.dumps(start)] + lines[1:]) + "\n")
    with pytest.raises(trajectory.UnsupportedTrajectory, match="newer kopt"):
        trajectory.read(path)
    assert main(["status", str(old_run)]) == 2
    assert "trajectory format '99'" in capsys.readouterr().err
    fake = FakeVerifier()
    with pytest.raises(trajectory.UnsupportedTrajectory):
        Run(Workspace.open(old_run), ScriptedModel(SCRIPT), fake.evaluate, fake.compile)
    assert path.read_text().startswith(json.dumps(start))  # nothing was cut


def test_every_event_type_round_trips_and_unknown_types_are_kept(tmp_path):
    found, _ = trajectory.read(FORMAT1_RUN / "trajectory.jsonl")
    seen = {type(e) for e in found}
    assert {ev.RunStart, ev.ModelRequest, ev.ModelResponseEvent, ev.ToolCallEvent, ev.ToolResult, ev.Evaluation,
            ev.Forbidden, ev.RunEnd} <= seen
    for event in found:
        assert ev.parse(ev.dump(event)) == event
    odd = ev.parse(b'{"seq":1,"type":"from_the_future","time":1,"elapsed_s":0,"x":2}')
    assert isinstance(odd, ev.Unknown) and odd.data == {"x": 2}
    with pytest.raises(ValueError):
        ev.parse(b'{"seq":1,"type":"evaluation","time":1,"elapsed_s":0}')  # a known type with fields missing
