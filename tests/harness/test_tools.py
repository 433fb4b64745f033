"""The agent's tools: confinement, forbidden-action recording, edit semantics, bad arguments."""

from __future__ import annotations

import os

import pytest

from kopt.harness.candidates import CandidateStore
from kopt.verifier.verdict import CompileReport
from kopt.harness.tools import ToolBox
from tests.harness.helpers import FakeVerifier, call, make_workspace


@pytest.fixture
def box(tmp_path):
    ws = make_workspace(tmp_path / "run")
    events = []
    fake = FakeVerifier()
    tools = ToolBox(ws, CandidateStore(ws.root), fake.evaluate, fake.compile,
                    lambda event: events.append((event.type, event.data)))
    tools.events, tools.fake = events, fake
    return tools


def run(box, name, **args):
    return box.execute(call(name, args))


def test_read_kernel_with_line_range(box):
    out = run(box, "read_file", path="kernel.py", start_line=1, end_line=3)
    assert not out.is_error and out.content.startswith("kernel.py (lines 1-3 of")
    assert out.content.count("\n") == 3


@pytest.mark.parametrize("path", ["/etc/passwd", "../run.json", "candidates/../../x", "~/.ssh/id_rsa",
                                  "trajectory.jsonl", "run.json", "state.json", "candidates/0001.py",
                                  "reference.py", "verifier/gate.py", ".git/config"])
def test_escapes_are_refused_and_recorded(box, path):
    out = run(box, "read_file", path=path)
    assert out.is_error and out.forbidden and "refused" in out.content
    assert box.events[-1][0] == "forbidden" and box.events[-1][1]["name"] == "read_file"


def test_symlink_out_of_the_workspace_is_refused(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.remove(box.ws.notes)
    os.symlink(secret, box.ws.notes)
    out = run(box, "read_file", path="NOTES.md")
    assert out.forbidden and "link" in out.content and "top secret" not in out.content


def test_only_kernel_and_notes_are_writable(box):
    assert not run(box, "write_file", path="NOTES.md", content="hello\n").is_error
    refused = run(box, "write_file", path="instruction.md", content="do less")
    assert refused.forbidden
    typo = run(box, "write_file", path="kernle.py", content="x")
    assert typo.is_error and not typo.forbidden and "kernel.py" in typo.content


def test_edit_file_exact_unique_replacement(box):
    box.ws.kernel.write_text("A = 1\nB = 2\nB = 2\n")
    assert not run(box, "edit_file", path="kernel.py", old="A = 1\n", new="A = 3\n").is_error
    assert box.ws.kernel.read_text() == "A = 3\nB = 2\nB = 2\n"
    missing = run(box, "edit_file", path="kernel.py", old="C = 1", new="C = 2")
    assert missing.is_error and "not found" in missing.content
    twice = run(box, "edit_file", path="kernel.py", old="B = 2", new="B = 4")
    assert twice.is_error and "2 times" in twice.content
    assert box.ws.kernel.read_text() == "A = 3\nB = 2\nB = 2\n"


@pytest.mark.parametrize("tool_call, message", [
    (call("read_file", raw='{"path": "kernel.py"'), "not valid JSON"),
    (call("read_file", raw='["kernel.py"]'), "must be a JSON object"),
    (call("read_fle", {"path": "kernel.py"}), "unknown tool"),
    (call("read_file", {}), "needs argument 'path'"),
    (call("read_file", {"path": "kernel.py", "mode": "r"}), "no argument 'mode'"),
    (call("read_file", {"path": 3}), "must be a string"),
    (call("revert", {"candidate": "1"}), "must be a integer"),
    (call("revert", {"candidate": 99}), "no candidate 99"),
])
def test_bad_calls_become_error_messages(box, tool_call, message):
    out = box.execute(tool_call)
    assert out.is_error and message in out.content


def test_evaluate_snapshots_caches_and_reverts(box):
    box.ws.kernel.write_text("# FAST\n")
    first = run(box, "evaluate", note="one")
    assert "candidate 0001: OK" in first.content and "leaderboard" in first.content
    again = run(box, "evaluate", note="same source")
    assert "already has this exact source" in again.content
    assert len(box.fake.calls) == 1  # the same source is never verified twice
    box.ws.kernel.write_text("# BROKEN\n")
    bad = run(box, "evaluate")
    assert bad.is_error and "REJECTED" in bad.content and "wrong result" in bad.content
    assert (box.ws.root / "candidates" / "0002.py").read_text() == "# BROKEN\n"
    best = (box.ws.root / "best.py").read_text()  # the latest passing one, labelled: no GPU timed it
    assert best.startswith("# kopt: candidate 0001 (the latest passing candidate); not timed on a GPU")
    assert best.endswith("\n# FAST\n")
    assert not run(box, "revert", candidate=1).is_error
    assert box.ws.kernel.read_text() == "# FAST\n"
    kinds = [k for k, _ in box.events]
    assert kinds == ["evaluation", "evaluation_cached", "evaluation"]
    assert oct(os.stat(box.ws.root / "candidates" / "0001.py").st_mode & 0o777) == "0o444"


def test_notes_append_and_finish(box):
    run(box, "notes", text="tried BLOCK_N=512: slower")
    assert "tried BLOCK_N=512" in box.ws.notes.read_text()
    done = run(box, "finish", summary="done")
    assert done.finish == "done"


def test_store_reloads_from_disk(box):
    box.ws.kernel.write_text("# FAST FAST\n")
    run(box, "evaluate")
    store = CandidateStore(box.ws.root)
    assert store.best().id == 1 and store.items[1].verdict.passed


# ---- the text contract with the built-in policy, and the tool registry

def test_builtin_reads_the_same_facts_the_tools_return_as_data(box):
    """agent/builtin.py reads evaluate's and compile_report's text back; rewording them must fail here,
    not silently change the floor every LLM must beat."""
    from kopt.agent.builtin import BuiltinModel, spill_total
    from kopt.verifier.verdict import KernelResources

    def report(source):
        return CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True, kernels=[
            KernelResources(name="_k", num_warps=4, num_stages=2, shared_bytes=1024, registers=40, spill_bytes=24,
                            compile_s=0.1)])
    box.compile_fn = report
    for source in ("# FAST\n", "# FAST FAST\n", "# BROKEN\n"):
        box.ws.kernel.write_text(source)
        out = run(box, "evaluate", note="x")
        d = out.data
        score = f" {d['score']:.4f}" if d["score"] is not None else ""
        assert BuiltinModel.outcome(out.content) == f"candidate {d['candidate']:04d} {d['status']}{score} spill 0"
    compiled = run(box, "compile_report")
    assert spill_total(compiled.content) == compiled.data["spill_bytes"] == 24
    read = run(box, "read_file", path="kernel.py")
    assert read.content.split("\n", 1)[1] == box.ws.kernel.read_text().rstrip("\n")  # what builtin takes as the file


def test_a_new_tool_is_one_decorated_function(tmp_path, monkeypatch):
    """Adding a tool touches one file (harness/tools.py, or any module imported before the run) plus its
    registration line, the decorator: the loop offers it, calls it, and records it like any other."""
    from kopt.harness import tools
    from kopt.harness.run import Run
    from kopt.harness.tools import INT, ToolOutcome, tool
    from tests.harness.helpers import ScriptedModel

    monkeypatch.setattr(tools, "TOOLS", dict(tools.TOOLS))  # the registration is undone after the test

    @tool("count_lines", "Count the lines of the kernel file, or of its first N lines.", {"limit": INT})
    def count_lines(box, limit: int | None = None) -> ToolOutcome:
        lines = box.ws.kernel.read_text().splitlines()
        return ToolOutcome(f"{len(lines[:limit] if limit else lines)} lines")

    ws = make_workspace(tmp_path / "run")
    fake = FakeVerifier()
    script = [[call("count_lines", {"limit": 3})], [call("count_lines", {"limit": "x"})], [call("finish", {"summary": "ok"})]]
    r = Run(ws, ScriptedModel(script), fake.evaluate, fake.compile)
    assert "count_lines" in [s.name for s in r.tools.specs()]
    assert r.execute().reason == "finished"
    from kopt.harness import trajectory
    found, _ = trajectory.read(ws.root / "trajectory.jsonl")
    results = [e for e in found if e.type == "tool_result" and e.name == "count_lines"]
    assert [r.content for r in results] == ["3 lines", "error: argument 'limit' of count_lines must be a integer, got str"]
    assert r.counters.tool_calls == 3


def test_a_path_outside_the_allowed_files_says_so_rather_than_no_such_file(box):
    new = run(box, "write_file", path="helper.py", content="x = 1\n")
    assert new.is_error and not new.forbidden and "no such file" not in new.content
    assert "'helper.py' cannot be written: you may change only kernel.py and NOTES.md" in new.content
    elsewhere = run(box, "read_file", path="kernels/rmsnorm/baseline.py")
    assert elsewhere.is_error and "is not one of the files you may read (kernel.py, NOTES.md, instruction.md)" in \
        elsewhere.content


def test_compile_report_rows_name_their_variant_and_case(box):
    from kopt.harness.tools import format_compile
    from kopt.verifier.verdict import KernelResources
    rows = [KernelResources(name="_k", num_warps=4, num_stages=2, shared_bytes=512, registers=32, spill_bytes=0,
                            compile_s=0.1, specialization="_k[BLOCK_N=256]", case=case) for case in ("R1/bfloat16",
                                                                                                  "R2/bfloat16")]
    text = format_compile(CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True, kernels=rows))
    assert "_k[BLOCK_N=256] (first compiled for case R1/bfloat16): 4 warps" in text
    assert "_k[BLOCK_N=256] (first compiled for case R2/bfloat16)" in text
