"""Several agents in one run (`kopt run --agents N`): a shared archive with safe ids, one evaluation per
source, per-agent events, lineage and stall counts, run-wide budgets, one agent's crash not stopping the
others, and resume restoring every agent where it was. Scripted models and the fake verifier: the
parallelism is the harness's (threads, the store's lock), not the verifier's."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from kopt.harness import events as ev
from kopt.harness import inspect, trajectory
from kopt.harness.candidates import read as read_candidate
from kopt.harness.run import Run
from kopt.harness.workspace import Budgets, StallPolicy, Workspace
from tests.harness.helpers import FakeVerifier, ScriptedModel, call, make_workspace


def workspace(tmp_path, agents: int = 2, budgets: Budgets = Budgets()) -> Workspace:
    ws = make_workspace(tmp_path / "run", budgets=budgets)
    config = ws.config.model_copy(update={"agents": agents, "stall": StallPolicy(warn_after=50, redesign_after=50)})
    (ws.root / "run.json").write_text(config.model_dump_json(indent=2))
    return Workspace(ws.root, config)


def variant(ws: Workspace, tag: str, fast: int = 0) -> list:
    source = ws.kernel.read_text() + f"# {tag}" + " FAST" * fast + "\n"
    return [call("write_file", {"path": "kernel.py", "content": source}), call("evaluate", {"note": tag})]


def events(ws: Workspace) -> list[ev.Base]:
    return list(trajectory.scan(ws.root / trajectory.TRAJECTORY))


class Gate:
    """Holds each agent's first turn until both agents are in it: the two really run at once."""

    def __init__(self, n: int):
        self.barrier = threading.Barrier(n, timeout=30)

    def turn(self, script):
        def first(messages):
            self.barrier.wait()
            return script
        return first


def test_two_agents_share_the_archive_and_never_reuse_an_id(tmp_path):
    ws = workspace(tmp_path)
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    gate = Gate(2)
    shared = variant(ws, "same source in both agents", 1)
    scripts = {0: [gate.turn(variant(ws, "a0-first", 2))] + [variant(ws, f"a0-{i}", i) for i in range(4)] + [shared],
               1: [gate.turn(variant(ws, "a1-first", 3))] + [variant(ws, f"a1-{i}", 0) for i in range(4)] + [shared]}
    for seat in run.seats:
        seat.model = ScriptedModel(scripts[seat.agent])
    stop = run.execute()
    assert stop.reason == "finished", stop

    log = events(ws)
    evaluations = [e for e in log if isinstance(e, ev.Evaluation)]
    ids = [e.candidate for e in evaluations]
    assert len(ids) == len(set(ids)), "a candidate id was evaluated (or allocated) twice"
    files = sorted(p.name for p in (ws.root / "candidates").glob("*.py"))
    assert files == [f"{i:04d}.py" for i in range(1, len(files) + 1)]  # dense, no gaps, no clobbering
    # the same source in both agents: verified once, the other agent told it is cached
    assert sum(1 for source, _ in fake.calls if "same source in both agents" in source) == 1
    assert sum(isinstance(e, ev.EvaluationCached) for e in log) >= 1
    # every agent event carries its id; the run's own do not; both agents evaluated candidates
    assert {e.agent for e in evaluations} == {0, 1}
    assert all(e.agent is None for e in log if isinstance(e, (ev.RunStart, ev.RunEnd)))
    assert {e.agent for e in log if isinstance(e, ev.AgentEnd)} == {0, 1}
    for e in evaluations:  # the candidate file says which agent made it
        assert read_candidate(ws.root / "candidates" / f"{e.candidate:04d}.json")[1]["agent"] == e.agent
    # each agent edited its own kernel file; the run's kernel.py stayed the baseline
    for e in evaluations:
        assert e.note.startswith(f"a{e.agent}-") or e.note == "same source in both agents", (e.agent, e.note)
    assert (ws.root / "agents/0/kernel.py").exists() and (ws.root / "agents/1/NOTES.md").exists()
    assert "# a" not in ws.kernel.read_text() and "# same" not in ws.kernel.read_text()
    # lineage is per agent: each agent's candidates descend from its own earlier ones (or the baseline)
    view = inspect.load(ws.root)
    by_agent = {e.candidate: e.agent for e in evaluations}
    for row in inspect.history(view):
        if row.parent is not None:
            assert by_agent[row.parent] == by_agent[row.id], (row.id, row.parent)
    # run-wide counts are the sum of the agents'
    assert run.fold.counters.evaluations == sum(s.fold.counters.evaluations for s in run.seats) == len(evaluations)
    assert run.fold.best_of[1].candidate != run.fold.best_of[0].candidate


def test_status_block_shows_the_other_agents_best(tmp_path):
    ws = workspace(tmp_path)
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    seen: dict[int, str] = {}

    def look(agent):
        def turn(messages):
            seen[agent] = messages[-1].content
            return [call("finish", {"summary": "done"})]
        return turn
    gate, zero_evaluated = Gate(2), threading.Event()

    def signal_then_look(messages):  # agent 0's second request comes after its evaluation was recorded
        zero_evaluated.set()
        return look(0)(messages)

    def wait_for_zero(messages):  # so agent 1's next status block is made after it
        assert zero_evaluated.wait(30)
        return [call("read_file", {"path": "NOTES.md"})]
    run.seats[0].model = ScriptedModel([gate.turn(variant(ws, "a0", 4)), signal_then_look])
    run.seats[1].model = ScriptedModel([gate.turn(variant(ws, "a1", 1)), wait_for_zero, look(1)])
    run.execute()
    best0 = run.fold.best_of[0].candidate
    assert "You are agent 1 of 2" in seen[1] and f"agent 0: 1 evaluations; best candidate {best0:04d} 1.4000" in seen[1]


def test_one_agents_crash_does_not_stop_the_other(tmp_path):
    ws = workspace(tmp_path)
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)

    class Broken:
        name = "broken"

        def complete(self, messages, tools):
            raise RuntimeError("the client fell over")
    run.seats[0].model = ScriptedModel([variant(ws, f"a0-{i}", i) for i in range(3)])
    run.seats[1].model = Broken()
    stop = run.execute()
    log = events(ws)
    ends = {e.agent: e for e in log if isinstance(e, ev.AgentEnd)}
    assert ends[1].reason == "model_error" and "the client fell over" in ends[1].detail
    assert ends[0].reason == "finished"
    assert sum(isinstance(e, ev.Evaluation) and e.agent == 0 for e in log) == 3
    assert stop.reason == "finished"


def test_budgets_are_the_runs_over_all_agents(tmp_path):
    ws = workspace(tmp_path, budgets=Budgets(max_evals=4))
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    for seat in run.seats:  # each agent alone would make ten evaluations
        seat.model = ScriptedModel([variant(ws, f"a{seat.agent}-{i}", i) for i in range(10)])
    stop = run.execute()
    assert stop.reason == "budget", stop
    evaluations = run.fold.counters.evaluations
    # checked before every model request: an agent already past its check may finish its evaluation
    assert 4 <= evaluations <= 4 + 1, evaluations
    assert all(s.fold.counters.evaluations < 10 for s in run.seats)


def test_resume_restores_every_agent_where_it_was(tmp_path):
    ws = workspace(tmp_path)
    fake = FakeVerifier()

    class Cut(BaseException):
        pass

    def cut_agent1_second(source, cid):
        if "a1-1" in source:
            raise Cut  # the process dies in the middle of agent 1's second evaluation
        return fake.evaluate(source, cid)
    scripts = {a: [variant(ws, f"a{a}-{i}", i) for i in range(3)] for a in (0, 1)}
    run = Run(ws, None, cut_agent1_second, fake.compile, context_tokens=1_000_000)
    for seat in run.seats:
        seat.model = ScriptedModel(scripts[seat.agent])
    run.seats[0].model = ScriptedModel(scripts[0][:1])  # agent 0 ends early: after one evaluation it finishes
    run.execute()  # (agent 1's thread died with the cut; agent 0 finished)
    path = ws.root / trajectory.TRAJECTORY  # the process died there: its run_end never reached the log
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"run_end"' in lines[-1]
    path.write_bytes(b"".join(lines[:-1]))
    before = events(ws)
    assert any(isinstance(e, ev.ToolCallEvent) and e.agent == 1 and e.call.name == "evaluate" for e in before)

    resumed = Run(Workspace.open(ws.root), None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    # agent 1's cut-off evaluate is pending; agent 0 is not
    assert [c.name for c, _ in resumed.seats[1].resume.pending] == ["evaluate"]
    assert resumed.seats[0].resume.pending == []
    for seat in resumed.seats:
        seat.model = ScriptedModel(scripts[seat.agent])
    resumed.execute()
    log = events(ws)
    mine = [e for e in log if isinstance(e, ev.Evaluation) and e.agent == 1]
    notes = [e.note for e in mine]
    assert notes == ["a1-0", "a1-1", "a1-2"], notes  # the cut evaluation redone once, then agent 1 went on
    assert [e.note for e in log if isinstance(e, ev.Evaluation) and e.agent == 0] == ["a0-0"]
    ids = [e.candidate for e in log if isinstance(e, ev.Evaluation)]
    assert len(ids) == len(set(ids))


# ---- kill -9 in the middle of a real two-agent run (the builtin on rmsnorm, the CPU path), then resume

@pytest.mark.slow
def test_kill_nine_mid_two_agent_run_then_resume_loses_nothing(tmp_path):
    from tests.harness.test_kill_resume import kill_strays, kopt, start
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = start(["run", "--task", "rmsnorm", "--model", "builtin", "--device", "cpu", "--agents", "2",
                  "--max-evals", "6", "--run-dir", str(run_dir)], tmpdir, tmp_path / "first.log")
    log = run_dir / trajectory.TRAJECTORY
    deadline = time.monotonic() + 240
    # killed while both agents are at work: after the first evaluation, during a later one
    while time.monotonic() < deadline and proc.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum('"type":"evaluation"' in x for x in lines) >= 2 and '"name":"evaluate"' in (lines[-1] if lines else ""):
            break
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()
    os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
    proc.wait()
    kill_strays(tmpdir)
    before = events(Workspace.open(run_dir))
    assert not any(isinstance(e, ev.RunEnd) for e in before)
    cut = [e.agent for e in before if isinstance(e, ev.ToolCallEvent) and e.call.name == "evaluate"
           and not any(isinstance(r, ev.ToolResult) and r.call_id == e.call.id and r.agent == e.agent for r in before)]
    assert cut, "the kill did not land during an evaluation"

    done = kopt("resume", str(run_dir), tmpdir=tmpdir, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    log_events = events(Workspace.open(run_dir))
    evaluations = [e for e in log_events if isinstance(e, ev.Evaluation)]
    ids = [e.candidate for e in evaluations]
    assert len(ids) == len(set(ids)) and {e.agent for e in evaluations} == {0, 1}
    files = sorted(int(p.stem) for p in (run_dir / "candidates").glob("[0-9]*.py"))
    assert set(ids) <= set(files)
    for cid in files:  # every snapshot has its verdict and an evaluation event: nothing lost, nothing twice
        verdict, meta = read_candidate(run_dir / "candidates" / f"{cid:04d}.json")
        assert verdict is not None and cid in ids, cid
    for agent in cut:  # the cut-off evaluate of each agent was answered after the resume
        calls = [e for e in log_events if isinstance(e, ev.ToolCallEvent) and e.agent == agent]
        answered = {e.call_id for e in log_events if isinstance(e, ev.ToolResult) and e.agent == agent}
        assert all(c.call.id in answered for c in calls)
    assert isinstance(log_events[-1], ev.RunEnd) and log_events[-1].reason in ("budget", "finished")


def test_replay_gives_each_agent_its_own_recorded_responses(tmp_path):
    from kopt.agent.messages import AssistantMessage, ModelResponse
    from kopt.harness.replay import ReplayModel
    log = tmp_path / "trajectory.jsonl"
    lines = [ev.ModelResponseEvent(index=i, agent=i % 2, response=ModelResponse(
        message=AssistantMessage(content=f"agent {i % 2} turn {i // 2}"), model="m")) for i in range(6)]
    log.write_bytes(b"".join(ev.dump(e) + b"\n" for e in lines) + b'{"torn')  # a torn last line is ignored
    one = ReplayModel(tmp_path, start=1, agent=1)
    assert [one.complete([], []).message.content for _ in range(2)] == ["agent 1 turn 1", "agent 1 turn 2"]
    assert one.complete([], []).message.tool_calls[0].name == "finish"  # exhausted: it finishes
    assert len(ReplayModel(log).responses) == 6 and log.read_bytes().endswith(b'{"torn')  # read, never repaired


def test_every_agent_starts_from_the_system_prompt_and_the_instruction(tmp_path):
    ws = workspace(tmp_path)
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    for seat in run.seats:
        seat.model = ScriptedModel([[call("finish", {"summary": "done"})]])
    run.execute()
    instruction = (ws.root / "instruction.md").read_text()
    for seat in run.seats:
        first = seat.model.seen[0]
        assert first[0].role == "system" and "kernel.py" in first[0].content
        assert first[1].content == instruction


def test_second_interrupt_leaves_agents_waiting_on_their_models_and_resumes_them(tmp_path):
    # Signals reach the main thread only: an agent's thread waiting on a slow model must not hold the
    # run after a second Ctrl-C. The run ends at once (resumably); what the stuck agents get back later
    # is never recorded after the run's end; resume re-issues their requests.
    ws = workspace(tmp_path)
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    release, waiting = threading.Event(), threading.Semaphore(0)

    def stuck(messages):  # a model call that takes as long as a long generation
        waiting.release()
        release.wait(120)
        return [call("finish", {"summary": "late"})]
    for seat in run.seats:
        seat.model = ScriptedModel([variant(ws, f"a{seat.agent}-0", seat.agent), stuck])

    def interrupt_twice():
        for _ in range(2):
            assert waiting.acquire(timeout=60)
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
    threading.Thread(target=interrupt_twice, daemon=True).start()
    started = time.monotonic()
    stop = run.execute()
    took = time.monotonic() - started
    assert stop.reason == "interrupted", stop
    assert took < 60, took  # the agents' model calls were not waited for (they would take 120 s)
    log = events(ws)
    assert isinstance(log[-1], ev.RunEnd) and log[-1].reason == "interrupted"
    size = (ws.root / trajectory.TRAJECTORY).stat().st_size
    release.set()  # the stuck calls come back now: nothing of theirs reaches the log
    for thread in threading.enumerate():
        if thread.name.startswith("kopt-agent-"):
            thread.join(30)
            assert not thread.is_alive()
    assert (ws.root / trajectory.TRAJECTORY).stat().st_size == size
    assert not any(isinstance(e, ev.ModelResponseEvent) and e.response.message.content == "turn 1" for e in log)

    resumed = Run(Workspace.open(ws.root), None, fake.evaluate, fake.compile, context_tokens=1_000_000)
    for seat in resumed.seats:
        seat.model = ScriptedModel([variant(ws, f"a{seat.agent}-0", seat.agent),
                                    variant(ws, f"a{seat.agent}-1", seat.agent + 2)])
    assert resumed.execute().reason == "finished"
    notes = sorted(e.note for e in events(ws) if isinstance(e, ev.Evaluation))
    assert notes == ["a0-0", "a0-1", "a1-0", "a1-1"], notes  # each agent went on from its re-issued request
