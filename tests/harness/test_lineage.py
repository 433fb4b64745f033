"""Lineage (a candidate's parent is what its source was derived from) and what the model sees of past
candidates: the paged history tool and the bounded leaderboard that always shows the latest evaluations."""

from __future__ import annotations

from kopt.harness import inspect
from kopt.harness.candidates import read as read_candidate
from kopt.harness.run import Run
from kopt.harness.tools import HISTORY_PAGE
from kopt.harness.workspace import StallPolicy, Workspace
from tests.harness.helpers import FakeVerifier, ScriptedModel, call, make_workspace

LONG_NOTE = ("widen the block to 512 columns so each program covers a whole row of the narrow cases, and keep "
             "four warps; this note is long on purpose, past any sixty-character cut, and must arrive whole")


def edit(old: str, new: str):
    return call("edit_file", {"path": "kernel.py", "old": old, "new": new})


def test_parent_is_the_reverted_to_candidate_and_history_shows_the_tree(tmp_path):
    ws = make_workspace(tmp_path / "run")
    script = [
        [call("evaluate", {"note": "baseline"})],  # 0001
        [edit("NUM_WARPS = 4\n", "NUM_WARPS = 4  # FAST\n"), call("evaluate", {"note": LONG_NOTE})],  # 0002 <- 0001
        [edit("# FAST\n", "# FAST FAST\n"), call("evaluate", {"note": "more"})],  # 0003 <- 0002
        [call("revert", {"candidate": 1}), edit("NUM_WARPS = 4\n", "NUM_WARPS = 4  # BROKEN\n"),
         call("evaluate", {"note": "from the baseline again"})],  # 0004 <- 0001 (not 0003)
        [call("revert", {"candidate": 99})],  # a failed revert changes nothing
        [edit("# BROKEN\n", "# FAST BROKEN\n"), call("evaluate", {"note": "fix"})],  # 0005 <- 0004
        [call("history", {})],
    ]
    model = ScriptedModel(script)
    assert Run(ws, model, FakeVerifier().evaluate, FakeVerifier().compile).execute().reason == "finished"
    rows = {r.id: r for r in inspect.history(inspect.load(ws.root))}
    assert {i: r.parent for i, r in rows.items()} == {1: None, 2: 1, 3: 2, 4: 1, 5: 4}
    for cid, row in rows.items():  # the candidate files say the same as the fold
        assert read_candidate(ws.root / "candidates" / f"{cid:04d}.json")[1]["parent"] == row.parent
    text = [m.content for m in model.seen[-1] if getattr(m, "name", None) == "history"][-1]
    assert "0004 <- 0001" in text and "0001 <- baseline" in text and "0003 <- 0002" in text
    assert LONG_NOTE in text  # full notes, never cut
    assert "rejected" in text and "correctness: wrong result" in text


def test_history_pages_and_the_leaderboard_keeps_the_latest(tmp_path):
    ws = make_workspace(tmp_path / "run")
    # no stall policy and no compaction in the way of a long scripted run (a compaction shortens the
    # conversation, and the scripted model, which counts its own turns there, would replay the script)
    config = ws.config.model_copy(update={"stall": StallPolicy(warn_after=100, redesign_after=100)})
    ws = Workspace(ws.root, config)
    n = HISTORY_PAGE + 5
    baseline = ws.kernel.read_text()
    # the first six get better and better (FAST counts), the rest are worse than all of them
    script = [[call("write_file", {"path": "kernel.py", "content": baseline + f"# v{i}" + " FAST" * (i + 1 if i < 6 else 0)}),
               call("evaluate", {"note": f"variant {i}"})] for i in range(n)]
    script += [[call("history", {})], [call("history", {"page": 1})], [call("history", {"page": 3})]]
    model = ScriptedModel(script)
    Run(ws, model, FakeVerifier().evaluate, FakeVerifier().compile, context_tokens=1_000_000).execute()
    results = [m for m in model.seen[-1] if getattr(m, "name", None) == "history"]
    last, first, missing = (m.content for m in results)
    assert f"{n} candidates" in last and "page 2 of 2" in last and f"{n:04d} <-" in last and "0001 <-" not in last
    assert "page 1 of 2" in first and "0001 <- baseline" in first and f"{HISTORY_PAGE + 1:04d} <-" not in first
    assert results[2].is_error and "2 pages" in missing
    board = last.split("leaderboard", 1)[1]
    assert "best 5" in board and "latest evaluations:" in board
    # the best are early (FAST), the latest (no FAST) are still listed, with their notes
    assert f"{n:04d} " in board and f"variant {n - 1}" in board and "variant 3" in board


def test_an_interrupted_evaluation_keeps_its_lineage_when_redone(tmp_path):
    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()

    class Cut(BaseException):
        pass

    def cut_second(source, cid):
        if cid == 2:
            raise Cut
        return fake.evaluate(source, cid)

    script = [[call("evaluate", {"note": "a"})], [edit("NUM_WARPS = 4\n", "NUM_WARPS = 4  # FAST\n"),
                                                  call("evaluate", {"note": "b"})]]
    try:
        Run(ws, ScriptedModel(script), cut_second, fake.compile).execute()
    except Cut:
        pass
    Run(ws, ScriptedModel(script), fake.evaluate, fake.compile).execute()  # resume: the cut evaluate is redone
    rows = inspect.history(inspect.load(ws.root))
    assert [(r.id, r.parent, r.status) for r in rows] == [(1, None, "ok"), (2, 1, "ok")]
