"""`kopt status | history | report | compare` on a run of several agents: who evaluated what, each agent's best
and end, who found the run's best and when; and a one-agent run shows no agent anywhere."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from kopt.harness import board, inspect, report, views
from kopt.harness.cli import main
from kopt.harness.run import Run
from kopt.harness.workspace import RUN_JSON, Workspace
from tests.harness.helpers import FakeVerifier, ScriptedModel, call, make_workspace
from tests.harness.synthetic import RunSpec, make_run

# evaluation i (1-based) is by AGENTS[i - 1]; 3 tool calls of 10 s each per evaluation: evaluation i at 30*i s
OUTCOMES = [1.1, 1.3, "correctness", 1.2, 0.9]
AGENTS = [0, 1, 1, 0, 1]


@pytest.fixture
def two(tmp_path) -> Path:
    """Agent 0: candidates 1 and 4 (best 0004, 1.2), still live; agent 1: 2, 3 (failed) and 5, best 0002 (1.3, the
    run's best, at 60 s), ended by its model. The run has no run_end (agent 0 goes on)."""
    return make_run(tmp_path / "two", RunSpec(outcomes=OUTCOMES, agents=AGENTS, agent_ends={1: "model_error"},
                                              end=None))


@pytest.fixture
def one(tmp_path) -> Path:
    return make_run(tmp_path / "one", RunSpec(outcomes=OUTCOMES))


def status_text(root: Path, now_after_last: float = 1.0) -> str:
    view = inspect.load(root)
    console = Console(file=io.StringIO(), width=240)
    console.print(views.status_table(view, now=view.last.time + now_after_last))
    return console.file.getvalue()


def row_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if re.search(rf"│ {name}\s+│", line))


def test_the_view_counts_each_agent_from_the_fold(two):
    view = inspect.load(two)
    assert view.agent_ids == [0, 1]
    a0, a1 = view.agents(now=view.last.time + 1)
    assert (a0.evaluations, a0.failed, a0.best.candidate, a0.best.score, a0.end, a0.state) == \
        (2, 0, 4, 1.2, None, "live")
    assert (a1.evaluations, a1.failed, a1.best.candidate, a1.best.score, a1.state) == \
        (3, 1, 2, 1.3, "ended: model_error")
    assert (view.best.candidate, view.best.agent, view.best.elapsed_s) == (2, 1, 60.0)
    assert view.best_found() == "agent 1 at 1.0 min"
    # once the run has been quiet too long, a live agent without an end reads as the run does
    assert inspect.load(two).agents(now=view.last.time + inspect.QUIET_S + 1)[0].state.startswith("no end recorded")


def test_status_shows_each_agent_and_who_holds_the_best(two):
    text = status_text(two)
    assert "agent 1 at 1.0 min" in row_of(text, "best found by")
    a0, a1 = row_of(text, "agent 0"), row_of(text, "agent 1")
    assert "2 evaluations (0 did not pass)" in a0 and "best 0004: 1.2000" in a0 and "live" in a0
    assert "holds the run's best" not in a0
    assert "3 evaluations (1 did not pass)" in a1 and "best 0002: 1.3000" in a1 and "ended: model_error" in a1
    assert "holds the run's best" in a1


def test_history_has_an_agent_column_and_per_agent_lineage(two, capsys):
    assert main(["history", str(two)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["id", "agent", "parent"]
    rows = {line.split()[0]: line.replace(" BEST", "").replace(" *", "").split() for line in lines[2:7]}
    # (agent, parent): each agent's lineage from the fold, not the candidate files' (which say id - 1)
    assert {cid: tuple(r[1:3]) for cid, r in rows.items()} == {
        "0001": ("0", "-"), "0002": ("1", "-"), "0003": ("1", "0002"), "0004": ("0", "0001"), "0005": ("1", "0003")}
    assert "BEST: the run's best (candidate 0002, found by agent 1 at 1.0 min)" in lines[7]
    assert lines[8].startswith("agent 0: 2 evaluations, best 0004 (1.2000), live")
    assert lines[9].startswith("agent 1: 3 evaluations, best 0002 (1.3000), ended: model_error")
    assert main(["history", str(two), "--json"]) == 0
    assert [c["agent"] for c in json.loads(capsys.readouterr().out)["candidates"]] == AGENTS


def test_report_has_an_agents_section_and_the_agent_of_each_row(two):
    page = report.render(inspect.load(two, keep_events=True))
    section = page[page.index("<h2>Agents (2)</h2>"):page.index("<h2>Progress")]
    assert "found by agent 1 at 1.0 min" in section
    assert "<tr><td>agent 0</td><td>2</td><td>0</td><td>0004: 1.2000" in section
    assert "<tr class=best><td>agent 1</td><td>3</td><td>1</td><td>0002: 1.3000" in section
    assert "ended: model_error" in section
    lineage = page[page.index("<h2>Lineage"):page.index("<h2>Best kernel (")]
    assert "<th>id</th><th>agent</th><th>parent</th>" in lineage
    assert "<td>0004</td><td>0</td><td>0001</td>" in lineage and "<td>0003</td><td>1</td><td>0002</td>" in lineage
    assert re.search(r"\[[0-9.]+ s, #\d+, agent 1\]", page)  # the transcript says whose each message is


def test_compare_says_agents_and_who_found_each_best(two, one, capsys):
    assert main(["compare", str(two), str(one)]) == 0
    agents = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ agents"))
    assert "2 agents, best by agent 1 (agent 0 1.2000, agent 1 1.3000)" in agents and "1 agent" in agents
    groups = inspect.compare([inspect.load(two), inspect.load(one)])
    text = board.markdown(board.document(groups, 0.9))
    assert "| openai:alpha | two | 2 | agent 1 | agent 0 1.2000, agent 1 1.3000 |" in text
    assert "| openai:alpha | one | 1 | - | - |" in text


def test_a_one_agent_run_shows_no_agent(one, capsys):
    text = status_text(one)
    assert "agent" not in text
    assert main(["history", str(one)]) == 0
    out = capsys.readouterr().out
    assert "agent" not in out and out.splitlines()[1].split()[:2] == ["id", "parent"]
    assert main(["compare", str(one)]) == 0
    assert "agent" not in capsys.readouterr().out
    assert "agent" not in board.markdown(board.document(inspect.compare([inspect.load(one)]), 0.9))
    page = report.render(inspect.load(one, keep_events=True))
    assert "<h2>Agents" not in page and "<th>agent</th>" not in page and ", agent " not in page


def test_a_scripted_two_agent_run_reads_back_per_agent(tmp_path):
    """A real two-agent Run (threads: which agent evaluates first is not fixed, so only what does not depend on
    it is asserted): agent 0 writes the faster kernel, so it holds the best whatever the order."""
    made = make_workspace(tmp_path / "r")
    ws = Workspace(made.root, made.config.model_copy(update={"agents": 2}))
    (ws.root / RUN_JSON).write_text(ws.config.model_dump_json(indent=2))
    fake = FakeVerifier()
    run = Run(ws, None, fake.evaluate, fake.compile)

    def script(marks: list[str]) -> ScriptedModel:
        turns = [[call("write_file", {"path": "kernel.py", "content": f"# {m}\nimport triton\n"}),
                  call("evaluate", {"note": m})] for m in marks]
        return ScriptedModel(turns + [[call("finish", {"summary": "done"})]])
    run.seats[0].model = script(["FAST FAST FAST", "FAST FAST"])
    run.seats[1].model = script(["FAST"])
    run.model = run.seats[0].model  # the run's driver, as a session sets it
    run.execute()
    view = inspect.load(ws.root)
    a0, a1 = view.agents()
    assert (a0.evaluations, a1.evaluations) == (2, 1)
    assert (a0.end[0], a1.end[0]) == ("finished", "finished")
    assert view.best.agent == 0 and round(view.best.score, 4) == 1.3
    rows = {r.id: r for r in inspect.history(view)}
    assert sorted(r.agent for r in rows.values()) == [0, 0, 1]
    second = next(r for r in rows.values() if r.agent == 0 and r.parent is not None)
    assert rows[second.parent].agent == 0  # agent 0's second candidate derives from its own first
