"""`kopt mcp` driven by a real client on the official MCP SDK, spawning the server as a user's agent does.

The rmsnorm task on the CPU path keeps a real evaluation short. Everything the client does must
land in the run's trajectory as in `kopt run`, with the client recorded as the driver.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.types import Implementation  # noqa: E402

from kopt.harness import events as ev  # noqa: E402
from kopt.harness import inspect, trajectory  # noqa: E402
from kopt.harness.cli import main  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TOOLS = ["read_file", "write_file", "edit_file", "evaluate", "compile_report", "history", "revert", "notes", "finish"]
EDIT = {"path": "kernel.py", "old": "BLOCK_N = 256\n", "new": "BLOCK_N = 256  # tried by the MCP client\n"}


def server(*args: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    return StdioServerParameters(command=sys.executable, args=["-m", "kopt.harness.cli", "mcp", *args], cwd=str(REPO),
                                 env=env)


def client(params: StdioServerParameters, name: str = "test-client") -> Client:
    return Client(params, client_info=Implementation(name=name, version="1.2.3"), read_timeout_seconds=300)


def text(result) -> str:
    return result.content[0].text


def events_of(root: Path) -> list[ev.Base]:
    return trajectory.read(root / "trajectory.jsonl", repair=False)[0]


@pytest.fixture(scope="module")
def driven(tmp_path_factory) -> tuple[Path, dict]:
    """One run driven end to end: list, read, a refused escape, edit, evaluate, history, finish, one call after."""
    root = tmp_path_factory.mktemp("mcp") / "run"
    seen: dict = {}

    async def drive() -> None:
        async with client(server("--task", "rmsnorm", "--run-dir", str(root), "--device", "cpu")) as c:
            seen["tools"] = [t.name for t in (await c.list_tools()).tools]
            seen["prompt"] = (await c.get_prompt("instruction")).messages[0].content.text
            seen["read"] = await c.call_tool("read_file", {"path": "kernel.py"})
            seen["escape"] = await c.call_tool("read_file", {"path": "../run.json"})
            seen["edit"] = await c.call_tool("edit_file", EDIT)
            seen["evaluate"] = await c.call_tool("evaluate", {"note": "a comment"})
            seen["history"] = await c.call_tool("history", {})
            seen["finish"] = await c.call_tool("finish", {"summary": "done over MCP"})
            seen["after"] = await c.call_tool("read_file", {"path": "kernel.py"})
    asyncio.run(drive())
    return root, seen


def test_a_client_sees_the_run_tools_and_the_instruction(driven):
    root, seen = driven
    assert seen["tools"] == TOOLS
    assert "Triton kernel" in seen["prompt"] and (root / "instruction.md").read_text() in seen["prompt"]
    assert not seen["read"].is_error and "BLOCK_N = 256" in text(seen["read"])
    assert seen["escape"].is_error and "refused" in text(seen["escape"])
    assert not seen["edit"].is_error and "tried by the MCP client" in (root / "kernel.py").read_text()
    assert not seen["evaluate"].is_error and text(seen["evaluate"]).startswith("candidate 0001: OK")
    assert seen["evaluate"].structured_content["status"] == "ok"
    assert "0001 <- baseline  ok" in text(seen["history"])
    assert not seen["finish"].is_error
    assert seen["after"].is_error and "ended" in text(seen["after"])


def test_the_trajectory_records_it_all_with_the_client_as_driver(driven):
    root, _ = driven
    found = events_of(root)
    start = found[0]
    assert isinstance(start, ev.RunStart) and start.driver == ev.Driver(kind="mcp", name="test-client",
                                                                        version="1.2.3")
    calls = [e.call.name for e in found if isinstance(e, ev.ToolCallEvent)]
    assert calls == ["read_file", "read_file", "edit_file", "evaluate", "history", "finish"]
    assert len([e for e in found if isinstance(e, ev.ToolResult)]) == 6
    forbidden = [e for e in found if isinstance(e, ev.Forbidden)]
    assert len(forbidden) == 1 and "../run.json" in forbidden[0].detail
    evaluation = next(e for e in found if isinstance(e, ev.Evaluation))
    assert (evaluation.candidate, evaluation.status, evaluation.kind) == (1, "ok", "interpreter")
    assert isinstance(found[-1], ev.RunEnd) and found[-1].reason == "finished"
    assert json.loads((root / "run.json").read_text())["model"] == "mcp"


def test_inspection_treats_an_mcp_run_like_any_other(driven, tmp_path, capsys):
    root, _ = driven
    view = inspect.load(root)
    assert view.model == "mcp:test-client" and view.best.candidate == 1 and view.counters.forbidden == 1
    assert main(["status", str(root)]) == 0 and "mcp:test-client" in capsys.readouterr().out
    assert main(["history", str(root), "--json"]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["candidates"]] == [1]
    assert main(["compare", str(root), "--json"]) == 0
    assert [g["model"] for g in json.loads(capsys.readouterr().out)["groups"]] == ["mcp:test-client"]
    assert main(["report", str(root), "-o", str(tmp_path / "r.html")]) == 0
    pytest.importorskip("atif")
    assert main(["export", str(root), "--atif", "-o", str(tmp_path / "t.json")]) == 0
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["agent"]["model_name"] == "mcp:test-client"


def test_a_second_segment_continues_the_run_and_a_second_client_is_refused(tmp_path):
    root = tmp_path / "run"

    async def first() -> None:
        async with client(server("--task", "rmsnorm", "--run-dir", str(root), "--device", "cpu",
                                 "--max-tool-calls", "3"), "first") as c:
            await c.call_tool("notes", {"text": "segment one"})
            busy = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "mcp", str(root)], cwd=REPO,
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert busy.returncode == 2 and "in use" in busy.stderr  # the run lock
    asyncio.run(first())
    assert events_of(root)[-1].reason == "interrupted"  # a client that leaves without finish: resumable

    resumed = subprocess.run([sys.executable, "-m", "kopt.harness.cli", "resume", str(root)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 2 and "kopt mcp" in resumed.stderr

    async def second() -> list:
        async with client(server(str(root)), "second") as c:
            return [await c.call_tool("notes", {"text": "segment two"}),
                    await c.call_tool("read_file", {"path": "NOTES.md"}),
                    await c.call_tool("read_file", {"path": "NOTES.md"})]
    two, read, spent = asyncio.run(second())
    assert not two.is_error and "segment one\nsegment two" in text(read)
    assert spent.is_error and "max_tool_calls" in text(spent)  # the budget counts both segments
    found = events_of(root)
    resume = next(e for e in found if isinstance(e, ev.RunResume))
    assert resume.driver.name == "second"
    assert [e.index for e in found if isinstance(e, ev.ToolCallEvent)] == [1, 2, 3]
    assert found[-1].reason == "budget"
    assert inspect.load(root).model == "mcp:second"


def server_pid(root: Path) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mcp" in cmdline and str(root).encode() in cmdline and b"kopt.harness.cli" in cmdline:
                return int(entry)
    raise AssertionError("no kopt mcp process")


def test_killing_the_server_mid_evaluation_loses_nothing(tmp_path):
    root = tmp_path / "run"

    async def killed() -> None:
        async with client(server("--task", "rmsnorm", "--run-dir", str(root), "--device", "cpu")) as c:
            await c.call_tool("edit_file", EDIT)
            evaluation = asyncio.ensure_future(c.call_tool("evaluate", {"note": "killed"}))
            deadline = time.monotonic() + 60
            while not (root / "candidates" / "0001.py").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            pid = server_pid(root)
            os.killpg(os.getpgid(pid), signal.SIGKILL) if os.getpgid(pid) != os.getpgid(0) else os.kill(pid, 9)
            with pytest.raises(BaseException):
                await asyncio.wait_for(evaluation, 60)
    try:
        asyncio.run(killed())
    except BaseException:
        pass  # the client's transport dies with the server
    found = [e for e in events_of(root) if not isinstance(e, ev.EvaluationProgress)]  # how far it got: no result
    assert isinstance(found[-1], ev.ToolCallEvent) and found[-1].call.name == "evaluate"
    assert (root / "candidates" / "0001.py").exists()

    async def again() -> str:
        async with client(server(str(root)), "after-kill") as c:
            return text(await c.call_tool("history", {}))
    history = asyncio.run(again())
    assert "0001 <- baseline  ok" in history  # the cut-off evaluation was finished on resume, with the same candidate id
    found = events_of(root)
    evaluations = [e for e in found if isinstance(e, ev.Evaluation)]
    assert [e.candidate for e in evaluations] == [1] and evaluations[0].status == "ok"
    redone = [e for e in found if isinstance(e, ev.ToolCallEvent) and e.call.name == "evaluate"]
    assert len(redone) == 2 and redone[1].retry and redone[0].call.id == redone[1].call.id
    assert inspect.load(root).counters.tool_calls == 3  # edit, evaluate (counted once), history
