"""The run loop in-process: a scripted model, a fake verifier, the real recorder, budgets and resume."""

from __future__ import annotations

import json

import pytest

from kopt.agent.messages import ToolMessage, UserMessage
from kopt.agent.model import ModelError, ModelUnavailable
from kopt.harness import trajectory
from kopt.harness.run import Run
from kopt.harness.workspace import STOP_FILE, Budgets, Workspace
from tests.harness.helpers import FakeVerifier, ScriptedModel, call, make_workspace

EDIT = call("edit_file", {"path": "kernel.py", "old": "NUM_WARPS = 4\n", "new": "NUM_WARPS = 4  # FAST\n"})
SCRIPT = [
    [call("read_file", {"path": "kernel.py"})],
    "Let me think about the kernel first.",  # no tool call: the loop nudges
    [EDIT, call("evaluate", {"note": "first"})],
    [call("read_file", raw='{"path": ')],  # malformed arguments
    [call("notes", {"text": "FAST comment helps"})],
    [call("finish", {"summary": "done"})],
]


class Crash(BaseException):
    """Stands in for kill -9: escapes everything, nothing after it is recorded."""


def new_run(ws: Workspace, model, fake: FakeVerifier, **kwargs) -> Run:
    return Run(ws, model, fake.evaluate, fake.compile, **kwargs)


def events_of(ws: Workspace) -> list[trajectory.Event]:
    return trajectory.read(ws.root / "trajectory.jsonl")[0]


def test_scripted_run_records_everything(tmp_path):
    ws = make_workspace(tmp_path / "run")
    model, fake = ScriptedModel(SCRIPT), FakeVerifier()
    stop = new_run(ws, model, fake).execute()
    assert stop.reason == "finished" and stop.detail == "done"
    events = events_of(ws)
    kinds = [e.type for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert [e.seq for e in events] == list(range(len(events)))
    assert kinds.count("model_request") == kinds.count("model_response") == 6
    assert kinds.count("tool_call") == kinds.count("tool_result") == 6
    assert kinds.count("user_message") == 1 and kinds.count("evaluation") == 1
    results = [e.data for e in events if e.type == "tool_result"]
    assert any("not valid JSON" in r["content"] and r["is_error"] for r in results)
    # every tool result answered the call it belongs to, and the model saw it
    last_context = model.seen[-1]
    tool_msgs = [m for m in last_context if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in tool_msgs] == [e.data["call"]["id"] for e in events if e.type == "tool_call"][:-1]
    assert any(isinstance(m, UserMessage) and "without calling a tool" in m.content for m in last_context)
    state = json.loads((ws.root / "state.json").read_text())
    assert state["counters"]["tool_calls"] == 6 and state["counters"]["evaluations"] == 1
    assert state["counters"]["input_tokens"] == 5 * 100 + 10 and state["best"]["candidate"] == 1
    assert "FAST comment helps" in ws.notes.read_text()


@pytest.mark.parametrize("budgets, detail", [
    (Budgets(max_tool_calls=2), "max_tool_calls"),
    (Budgets(max_evals=1), "max_evals"),
    (Budgets(max_usd=0.015), "max_usd"),
    (Budgets(max_tokens=150), "max_tokens"),
    (Budgets(max_hours=1e-9), "max_hours"),
])
def test_each_budget_ends_the_run_cleanly(tmp_path, budgets, detail):
    ws = make_workspace(tmp_path / "run", budgets=budgets)
    stop = new_run(ws, ScriptedModel(SCRIPT), FakeVerifier()).execute()
    assert stop.reason == "budget" and detail in stop.detail
    end = events_of(ws)[-1]
    assert end.type == "run_end" and end.data["reason"] == "budget"


def test_stop_file_and_signal_flag_interrupt_resumably(tmp_path):
    ws = make_workspace(tmp_path / "run")

    def drop_stop_file(event, run):
        if event.type == "tool_result" and run.counters.tool_calls == 2:
            (ws.root / STOP_FILE).write_text("")

    stop = new_run(ws, ScriptedModel(SCRIPT), FakeVerifier(), on_event=drop_stop_file).execute()
    assert stop.reason == "interrupted" and STOP_FILE in stop.detail
    # resuming consumes the STOP file and finishes the script
    stop = new_run(ws, ScriptedModel(SCRIPT), FakeVerifier()).execute()
    assert stop.reason == "finished" and not (ws.root / STOP_FILE).exists()


def test_resume_rebuilds_exactly_the_context_of_an_uninterrupted_run(tmp_path):
    control_ws = make_workspace(tmp_path / "control")
    control = ScriptedModel(SCRIPT)
    new_run(control_ws, control, FakeVerifier()).execute()

    ws = make_workspace(tmp_path / "run")

    def crash(event, run):
        if event.type == "model_request" and run.counters.model_requests == 4:
            raise Crash()

    with pytest.raises(Crash):
        new_run(ws, ScriptedModel(SCRIPT), FakeVerifier(), on_event=crash).execute()
    assert events_of(ws)[-1].type == "model_request"  # a model call whose answer was never recorded
    resumed = ScriptedModel(SCRIPT)
    stop = new_run(ws, resumed, FakeVerifier()).execute()
    assert stop.reason == "finished"
    # the re-issued call saw exactly the context the uninterrupted run had at that point
    assert resumed.seen == control.seen[3:]
    strip = lambda evs: [(e.type, {k: v for k, v in e.data.items() if k not in ("duration_s", "latency_s")})  # noqa
                         for e in evs if e.type not in ("run_start", "run_resume", "run_end", "model_request")]
    assert strip(events_of(ws)) == strip(events_of(control_ws))
    ends = [e.elapsed_s for e in events_of(ws)]
    assert ends == sorted(ends)  # elapsed time continues across the resume


def test_an_evaluation_cut_off_is_finished_once_and_never_repeated(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()

    def crash_in_evaluate(source, candidate_id):
        raise Crash()

    with pytest.raises(Crash):
        Run(ws, ScriptedModel(SCRIPT), crash_in_evaluate, fake.compile).execute()
    last = events_of(ws)[-1]
    assert last.type == "tool_call" and last.data["call"]["name"] == "evaluate"
    assert (ws.root / "candidates" / "0001.py").exists() and not (ws.root / "candidates" / "0001.json").exists()
    stop = new_run(ws, ScriptedModel(SCRIPT), fake).execute()
    assert stop.reason == "finished"
    assert [cid for _, cid in fake.calls] == [1]  # same candidate id, verified exactly once
    evaluations = [e for e in events_of(ws) if e.type == "evaluation"]
    assert len(evaluations) == 1 and evaluations[0].data["candidate"] == 1


def test_an_edit_applied_before_a_crash_is_not_applied_twice(tmp_path):
    ws = make_workspace(tmp_path / "run")
    double = call("edit_file", {"path": "kernel.py", "old": "BLOCK_N = 256\n", "new": "BLOCK_N = 256\nX = 1\n"})
    script = [[double], [call("finish", {"summary": "ok"})]]

    def crash_after_edit(event, run):
        if event.type == "tool_call":
            run.tools.execute(event_call(event))  # the edit lands on disk...
            raise Crash()  # ...and the process dies before its result is recorded

    def event_call(event):
        from kopt.agent.messages import ToolCall
        return ToolCall.model_validate(event.data["call"])

    with pytest.raises(Crash):
        new_run(ws, ScriptedModel(script), FakeVerifier(), on_event=crash_after_edit).execute()
    stop = new_run(ws, ScriptedModel(script), FakeVerifier()).execute()
    assert stop.reason == "finished"
    assert ws.kernel.read_text().count("X = 1") == 1
    result = [e for e in events_of(ws) if e.type == "tool_result"][0]
    assert "applied before an interruption" in result.data["content"]


def test_resuming_a_finished_run_says_so(tmp_path):
    ws = make_workspace(tmp_path / "run")
    new_run(ws, ScriptedModel(SCRIPT), FakeVerifier()).execute()
    n = len(events_of(ws))
    stop = new_run(ws, ScriptedModel(SCRIPT), FakeVerifier()).execute()
    assert stop.reason == "already_ended" and len(events_of(ws)) == n


class Failing:
    name = "failing"

    def __init__(self, exc):
        self.exc = exc

    def complete(self, messages, tools):
        raise self.exc


def test_model_errors_end_the_run_with_their_reason(tmp_path):
    ws = make_workspace(tmp_path / "a")
    stop = new_run(ws, Failing(ModelError("authentication failed (401)")), FakeVerifier()).execute()
    assert stop.reason == "model_error" and "401" in stop.detail
    ws = make_workspace(tmp_path / "b")
    stop = new_run(ws, Failing(ModelUnavailable("503 for 2 hours")), FakeVerifier()).execute()
    assert stop.reason == "provider_outage"
    stop = new_run(ws, ScriptedModel(SCRIPT), FakeVerifier()).execute()  # resumable once the provider is back
    assert stop.reason == "finished"
