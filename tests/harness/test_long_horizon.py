"""Long runs: bounded context with compaction, the stall policy, failure budgets, outages."""

from __future__ import annotations

import json

import pytest

from kopt.agent.context import tokens
from kopt.agent.messages import AssistantMessage, ModelResponse, ToolCall, Usage, UserMessage
from kopt.agent.model import RetryEvent
from kopt.agent.openai import OpenAIModel
from kopt.agent.retry import RetryPolicy
from kopt.harness import trajectory
from kopt.harness.run import Run
from kopt.harness.workspace import Budgets, StallPolicy
from tests.agent.server import DROP, Reply, ScriptedServer, openai_completion
from tests.harness.helpers import FakeVerifier, make_workspace


class CountingModel:
    """Turn n is turns(n); summary requests (no tools) get a summary. `start` skips answered turns."""

    name = "counting"

    def __init__(self, turns, start: int = 0):
        self.turns, self.n = turns, start
        self.seen: list[list] = []
        self.summaries = 0

    def complete(self, messages, tools):
        if not tools:
            self.summaries += 1
            digest = sum(len(m.content or "") for m in messages)  # deterministic in what it was shown
            return ModelResponse(message=AssistantMessage(content=f"summary of {digest} chars: tried FAST edits"),
                                 model=self.name, usage=Usage(input_tokens=50, output_tokens=10))
        self.seen.append(list(messages))
        calls = self.turns(self.n)
        self.n += 1
        return ModelResponse(message=AssistantMessage(content=f"turn {self.n}", tool_calls=[
            ToolCall(id=f"t{self.n}-{i}", name=name, arguments=json.dumps(args)) for i, (name, args) in enumerate(calls)]),
            model=self.name, usage=Usage(input_tokens=tokens(messages), output_tokens=20))


def reads_and_evals(n: int):
    if n >= 120:
        return [("finish", {"summary": "done"})]
    if n % 10 == 9:
        return [("write_file", {"path": "kernel.py", "content": f"# version {n}\n" + "# FAST\n" * (n // 10)}),
                ("evaluate", {"note": f"version {n} with {n // 10} FAST"})]
    return [("read_file", {"path": "instruction.md"})]


def events(ws):
    return trajectory.read(ws.root / "trajectory.jsonl")[0]


def test_requests_stay_under_the_limit_and_facts_survive_compaction(tmp_path):
    ws = make_workspace(tmp_path / "run")
    model, limit = CountingModel(reads_and_evals), 4000
    stop = Run(ws, model, FakeVerifier().evaluate, FakeVerifier().compile, context_tokens=limit).execute()
    assert stop.reason == "finished"
    assert max(tokens(request) for request in model.seen) <= limit
    compactions = [e for e in events(ws) if e.type == "compaction"]
    assert len(compactions) >= 5 and all(c.data["summary"] for c in compactions)
    assert all(c.data["tokens_after"] < c.data["tokens_before"] for c in compactions)
    last = model.seen[-1]
    status = last[-1].content
    assert status.startswith("[Run status") and "Best: candidate 0012" in status  # the best survives
    assert "version 119 with 11 FAST" in status and "version 19 with 1 FAST" in status  # what was tried survives
    assert any(isinstance(m, UserMessage) and m.content.startswith("[Summary of earlier work") for m in last)
    # memory is bounded: the live window never holds the whole run
    assert len(last) < 40 < sum(1 for e in events(ws) if e.type in ("tool_result", "model_response"))


def test_resume_after_compaction_rebuilds_the_same_context(tmp_path):
    control_ws = make_workspace(tmp_path / "control")
    control = CountingModel(reads_and_evals)
    Run(control_ws, control, FakeVerifier().evaluate, FakeVerifier().compile, context_tokens=4000).execute()

    class Crash(BaseException):
        pass

    ws = make_workspace(tmp_path / "run")

    def crash(event, run):
        if event.type == "model_request" and run.counters.model_requests == 77:
            raise Crash()

    with pytest.raises(Crash):
        Run(ws, CountingModel(reads_and_evals), FakeVerifier().evaluate, FakeVerifier().compile,
            context_tokens=4000, on_event=crash).execute()
    answered = sum(1 for e in events(ws) if e.type == "model_response")
    resumed = CountingModel(reads_and_evals, start=answered)
    Run(ws, resumed, FakeVerifier().evaluate, FakeVerifier().compile, context_tokens=4000).execute()
    without_status = lambda request: request[:-1]  # noqa: E731 (the status block holds the clock)
    assert without_status(resumed.seen[0]) == without_status(control.seen[answered])
    assert [without_status(r) for r in resumed.seen] == [without_status(r) for r in control.seen[answered:]]


def no_progress(n: int):
    return [("write_file", {"path": "kernel.py", "content": f"# attempt {n}\n"}), ("evaluate", {"note": f"try {n}"})]


def test_stall_policy_warns_redesigns_then_stops(tmp_path):
    """On a GPU progress is a new best: passing candidates that are no faster stall the run."""
    ws = make_workspace(tmp_path / "run")
    ws.config = ws.config.model_copy(update={"stall": StallPolicy(warn_after=2, redesign_after=4, max_redesigns=2)})
    model = CountingModel(no_progress)
    stop = Run(ws, model, FakeVerifier(gpu=True).evaluate, FakeVerifier().compile).execute()
    assert stop.reason == "stalled"
    kinds = [e.type for e in events(ws)]
    assert kinds.count("redesign") == 2 and kinds.count("stall_warning") == 3
    assert kinds.count("evaluation") == 1 + 4 + 4 + 4  # first sets the best, then 4 without progress each time
    redesigns = [i for i, k in enumerate(kinds) if k == "redesign"]
    # right after a redesign the model sees only the head and the redesign request
    after = model.seen[[i for i, r in enumerate(model.seen) if any("Redesign 1" in (m.content or "") for m in r)][0]]
    assert len(after) == 4 and "reset to candidate 0001" in after[2].content and "try 4" in after[2].content
    assert redesigns and ws.kernel.read_text().startswith("# attempt")


def test_without_gpu_timing_interpreter_time_steers_nothing(tmp_path):
    """Interpreter ratios are noise: progress is a new passing candidate, a redesign restarts from the latest
    passing one (not the best interpreter score), and best.py is the latest passing one, labelled."""
    def turns(n: int):
        if n == 0:
            return [("write_file", {"path": "kernel.py", "content": "# FAST FAST FAST\n"}), ("evaluate", {})]
        if n < 6:  # passing, no "faster": progress all the same on a CPU machine
            return [("write_file", {"path": "kernel.py", "content": f"# plain {n}\n"}), ("evaluate", {})]
        return [("write_file", {"path": "kernel.py", "content": f"# BROKEN {n}\n"}), ("evaluate", {})]
    ws = make_workspace(tmp_path / "run")
    ws.config = ws.config.model_copy(update={"stall": StallPolicy(warn_after=2, redesign_after=3, max_redesigns=1)})
    stop = Run(ws, CountingModel(turns), FakeVerifier().evaluate, FakeVerifier().compile).execute()
    assert stop.reason == "stalled"
    log = list(events(ws))
    evaluations = [e for e in log if e.type == "evaluation"]
    redesign = next(e for e in log if e.type == "redesign")
    first_warning = next(i for i, e in enumerate(log) if e.type == "stall_warning")
    assert sum(e.type == "evaluation" for e in log[:first_warning]) == 6 + 2  # six passing, then two broken
    assert redesign.best == 6  # the latest passing candidate, not 0001 (the best interpreter ratio)
    assert [e.status for e in evaluations[:6]] == ["ok"] * 6
    best = (ws.root / "best.py").read_text()
    assert best.startswith("# kopt: candidate 0006 (the latest passing candidate); not timed on a GPU")
    assert "# plain 5" in best


def test_finish_names_the_candidate_delivered_as_best_py(tmp_path):
    ws = make_workspace(tmp_path / "run")
    script = [[("write_file", {"path": "kernel.py", "content": "# one\n"}), ("evaluate", {})],
              [("write_file", {"path": "kernel.py", "content": "# two\n"}), ("evaluate", {})],
              [("finish", {"summary": "done", "candidate": 99})],
              [("finish", {"summary": "done", "candidate": 1})]]
    stop = Run(ws, CountingModel(lambda n: script[n]), FakeVerifier().evaluate, FakeVerifier().compile).execute()
    assert stop.reason == "finished"
    results = [e for e in events(ws) if e.type == "tool_result" and e.name == "finish"]
    assert results[0].is_error and "did not pass (or does not exist)" in results[0].content
    assert (ws.root / "best.py").read_text().startswith("# kopt: candidate 0001 (named in finish)")


def test_consecutive_failed_evaluations_budget(tmp_path):
    ws = make_workspace(tmp_path / "run", budgets=Budgets(max_failed_evals_in_row=3))
    broken = lambda n: [("write_file", {"path": "kernel.py", "content": f"# BROKEN {n}\n"}), ("evaluate", {})]  # noqa
    stop = Run(ws, CountingModel(broken), FakeVerifier().evaluate, FakeVerifier().compile).execute()
    assert stop.reason == "budget" and "max_failed_evals_in_row" in stop.detail


class FlakyModel:
    """Reports retries through the hook like a real client, then answers."""

    name = "flaky"

    def __init__(self, failures_per_call: int):
        self.failures, self.hook = failures_per_call, None

    def complete(self, messages, tools):
        for attempt in range(1, self.failures + 1):
            self.hook(RetryEvent(attempt=attempt, error="503 Service Unavailable", status=503, wait_s=0.0))
        call = ToolCall(id="f", name="read_file", arguments='{"path": "kernel.py"}')
        return ModelResponse(message=AssistantMessage(tool_calls=[call]), model=self.name)


def test_consecutive_model_errors_budget(tmp_path):
    ws = make_workspace(tmp_path / "run", budgets=Budgets(max_model_errors_in_row=3))
    model = FlakyModel(failures_per_call=5)
    run = Run(ws, model, FakeVerifier().evaluate, FakeVerifier().compile)
    model.hook = run.model_retry
    stop = run.execute()
    assert stop.reason == "budget" and "max_model_errors_in_row" in stop.detail
    assert [e.type for e in events(ws)].count("model_retry") == 3


def test_a_stop_file_interrupts_an_outage_wait(tmp_path):
    ws = make_workspace(tmp_path / "run")
    model = FlakyModel(failures_per_call=100)
    run = Run(ws, model, FakeVerifier().evaluate, FakeVerifier().compile)

    def hook(event):
        if event.attempt == 3:
            (ws.root / "STOP").write_text("")
        run.model_retry(event)

    model.hook = hook
    stop = run.execute()
    assert stop.reason == "interrupted" and [e.type for e in events(ws)].count("model_retry") == 3


def test_outage_past_its_budget_stops_resumably_then_resumes(tmp_path):
    """Real HTTP: the provider fails until the outage budget is spent; later it is back."""
    ws = make_workspace(tmp_path / "run")
    finish = openai_completion(tool_calls=[("c1", "finish", json.dumps({"summary": "back online"}))])
    healthy = {"on": False}

    def respond(request):
        return Reply(200, finish) if healthy["on"] else (DROP if len(server.requests) % 2 else Reply(503, {"error": {"message": "overloaded"}}))

    with ScriptedServer([respond] * 1000) as server:
        def make_model(run):
            return OpenAIModel("m", base_url=server.base_url, api_key=None, on_retry=run.model_retry,
                               retry=RetryPolicy(base_s=0.01, cap_s=0.02, outage_budget_s=0.3))

        run = Run(ws, None, FakeVerifier().evaluate, FakeVerifier().compile)
        run.model = make_model(run)
        stop = run.execute()
        assert stop.reason == "provider_outage"
        retries = [e for e in events(ws) if e.type == "model_retry"]
        assert len(retries) >= 3 and {e.data["status"] for e in retries} >= {503, None}
        healthy["on"] = True
        run = Run(ws, None, FakeVerifier().evaluate, FakeVerifier().compile)
        run.model = make_model(run)
        stop = run.execute()
        assert stop.reason == "finished" and stop.detail == "back online"
    kinds = [e.type for e in events(ws)]
    assert kinds.count("run_end") == 2 and kinds.count("run_resume") == 1
