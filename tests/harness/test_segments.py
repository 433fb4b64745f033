"""Extending a run (`kopt resume RUN --max-evals N`: a new segment with its budgets), the two-stage
interrupt, and an evaluation's progress as the fold and the trajectory see it (in-process, real recorder)."""

from __future__ import annotations

import signal

from kopt.harness import events as ev
from kopt.harness import inspect, trajectory
from kopt.harness.panel import stopping_text
from kopt.harness.run import Run
from kopt.harness.workspace import Budgets, StallPolicy, Workspace
from kopt.verifier.progress import Progress
from tests.harness.helpers import FakeVerifier, ScriptedModel, call, make_workspace


def edit(n: int):
    return call("edit_file", {"path": "kernel.py", "old": f"# v{n - 1}\n" if n > 1 else "NUM_WARPS = 4\n",
                              "new": f"# v{n}\n" if n > 1 else "NUM_WARPS = 4\n# v1\n"})


# five evaluations (each edit makes a new candidate), then the script's end: finish
SCRIPT = [[call("evaluate", {"note": "baseline"})]] + [[edit(n), call("evaluate", {"note": f"v{n}"})]
                                                       for n in range(1, 5)]


def events_of(ws: Workspace) -> list[ev.Base]:
    return trajectory.read(ws.root / trajectory.TRAJECTORY)[0]


def test_a_budget_stopped_run_is_extended_as_a_new_segment(tmp_path):
    ws = make_workspace(tmp_path / "run", budgets=Budgets(max_evals=2))
    fake = FakeVerifier()
    assert Run(ws, ScriptedModel(SCRIPT), fake.evaluate, fake.compile).execute().reason == "budget"
    run = Run(ws, ScriptedModel(SCRIPT), fake.evaluate, fake.compile)
    assert run.execute().reason == "already_ended"  # without new budgets: says so, records nothing
    run = Run(ws, ScriptedModel(SCRIPT), fake.evaluate, fake.compile)
    assert "--max-evals 2 is already used up" in run.refuse_budgets({"max_evals": 2})
    assert "its --max-evals (2) is already used up" in run.refuse_budgets({"max_hours": 5.0})
    assert run.refuse_budgets({"max_evals": 4}) is None
    stop = run.execute({"max_evals": 4})
    assert stop.reason == "budget" and "4 of 4" in stop.detail
    resumes = [e for e in events_of(ws) if isinstance(e, ev.RunResume)]
    assert resumes[-1].extends == "budget" and resumes[-1].budgets.max_evals == 4
    assert resumes[-1].budgets.max_failed_evals_in_row == 20  # the others carry over
    view = inspect.load(ws.root)
    assert [s.index for s in view.fold.segments] == [1, 2] and view.fold.segments[1].changed == {"max_evals": (2, 4)}
    assert {name: limit for name, limit, _ in view.budgets_left()}["max_evals"] == 4
    assert view.counters.evaluations == 4 and [r.parent for r in inspect.history(view)] == [None, 1, 2, 3]
    told = [e.content for e in events_of(ws) if isinstance(e, ev.UserMessage)]
    assert any("extended this run" in t and "max_evals 2 -> 4" in t for t in told)


def test_a_finished_or_stalled_run_goes_on_when_extended(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()
    short = [[call("evaluate", {"note": "baseline"})], [call("finish", {"summary": "first pass"})]]
    assert Run(ws, ScriptedModel(short), fake.evaluate, fake.compile).execute().reason == "finished"
    longer = short + [[edit(1), call("evaluate", {"note": "after the extension"})]]
    model = ScriptedModel(longer)
    stop = Run(ws, model, fake.evaluate, fake.compile).execute({"max_evals": 2})
    assert stop.reason == "budget" and inspect.load(ws.root).counters.evaluations == 2
    assert any("extended this run, which had ended (finished)" in getattr(m, "content", "") for m in model.seen[-1])

    stalled = make_workspace(tmp_path / "stalled")
    stalled = Workspace(stalled.root, stalled.config.model_copy(update={
        "stall": StallPolicy(warn_after=1, redesign_after=1, max_redesigns=0)}))
    same = [[call("evaluate", {"note": "baseline"})]] * 3  # the second is a cached repeat: no improvement
    assert Run(stalled, ScriptedModel(same), fake.evaluate, fake.compile).execute().reason == "stalled"
    again = Run(stalled, ScriptedModel(same), fake.evaluate, fake.compile)
    stop = again.execute({"max_tool_calls": 3})  # the stall count starts afresh: it runs until the new budget
    assert stop.reason == "budget" and again.fold.segments[-1].extends == "stalled"


def test_second_interrupt_mid_evaluation_drops_it_and_the_resume_redoes_it(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()
    seen = {}

    def interrupted_twice(source, cid):
        verdict = fake.evaluate(source, cid)
        if cid == 2:  # the operator presses Ctrl-C twice while candidate 0002 is being verified
            run.interrupts.handle(signal.SIGINT, None)
            seen["first"] = stopping_text(run)
            run.interrupts.handle(signal.SIGINT, None)
            seen["second"] = stopping_text(run)
        return verdict

    run = Run(ws, ScriptedModel(SCRIPT), interrupted_twice, fake.compile)
    stop = run.execute()
    assert stop.reason == "interrupted" and "twice" in stop.detail
    assert seen["first"] == "stopping after this evaluation; Ctrl-C again to stop now: resumable"
    assert "stopping now" in seen["second"]
    found = events_of(ws)
    assert [e.candidate for e in found if isinstance(e, ev.Evaluation)] == [1]  # 0002 never recorded as a result
    assert isinstance(found[-2], ev.ToolCallEvent) and found[-2].call.name == "evaluate"
    assert not (ws.root / "candidates" / "0002.json").exists()
    stop = Run(ws, ScriptedModel(SCRIPT), fake.evaluate, fake.compile).execute()
    assert stop.reason == "finished"
    rows = inspect.history(inspect.load(ws.root))
    assert [(r.id, r.parent, r.status) for r in rows][:2] == [(1, None, "ok"), (2, 1, "ok")]
    assert [c[1] for c in fake.calls].count(2) == 2  # verified again on resume


def test_one_interrupt_stops_after_the_step_and_two_abandon_a_model_call(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()

    class Impatient(ScriptedModel):
        def complete(self, messages, tools):
            if len(self.seen) == 1:  # the second model call: Ctrl-C twice while waiting for the provider
                for _ in range(2):
                    run.interrupts.handle(signal.SIGINT, None)
            return super().complete(messages, tools)

    run = Run(ws, Impatient(SCRIPT), fake.evaluate, fake.compile)
    stop = run.execute()
    assert stop.reason == "interrupted" and "twice" in stop.detail
    kinds = [e.type for e in events_of(ws)]
    assert kinds[-2:] == ["model_request", "run_end"]  # its answer never came: re-issued on resume
    stop = Run(ws, ScriptedModel(SCRIPT), fake.evaluate, fake.compile).execute()
    assert stop.reason == "finished" and inspect.load(ws.root).counters.evaluations == 5

    once = make_workspace(tmp_path / "once")

    def press_once(source, cid):
        run.interrupts.handle(signal.SIGINT, None)
        return fake.evaluate(source, cid)

    run = Run(once, ScriptedModel(SCRIPT), press_once, fake.compile)
    stop = run.execute()
    assert stop.reason == "interrupted" and stop.detail == "SIGINT received"
    assert [e.candidate for e in events_of(once) if isinstance(e, ev.Evaluation)] == [1]  # it finished that one


def test_progress_is_recorded_throttled_and_shown_while_the_evaluation_runs(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()
    during = []

    def evaluate(source, cid):
        run.evaluation_progress(cid, Progress("gate"))
        for done in range(51):  # 50 case runs judged in a burst: recorded at the phase start and the end
            run.evaluation_progress(cid, Progress("checking", done, 50, "compile and correctness"))
        w = run.fold.evaluating
        during.append((w.candidate, w.phase, w.done, w.total))
        return fake.evaluate(source, cid)

    run = Run(ws, ScriptedModel(SCRIPT[:1]), evaluate, fake.compile)
    run.execute()
    progress = [e for e in events_of(ws) if isinstance(e, ev.EvaluationProgress)]
    assert [(p.phase, p.done) for p in progress] == [("gate", 0), ("checking", 0), ("checking", 50)]
    assert during == [(1, "checking", 50, 50)] and run.fold.evaluating is None
    assert all(not isinstance(e, ev.EvaluationProgress) for e in inspect.load(ws.root).recent)


def test_a_format_2_resume_event_still_reads(tmp_path):
    old = {"seq": 3, "type": "run_resume", "time": 1.0, "elapsed_s": 2.0, "tool_calls": 1, "evaluations": 0,
           "pending": [], "removed_stop_file": False, "driver": None}
    event = ev.EVENT.validate_python(old)
    assert isinstance(event, ev.RunResume) and event.budgets is None and event.extends is None
