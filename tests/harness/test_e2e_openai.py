"""`kopt run` end to end against a scripted agent over the OpenAI chat-completions protocol.

A real subprocess of `python -m kopt.harness.cli`, real HTTP on 127.0.0.1 (tests/agent/server.py),
the real verifier on the rmsnorm task. The server plays an *agent*: it reads the request's messages
and answers with the next assistant turn, and injects transport faults between turns (429 with
Retry-After, 5xx, a dropped connection, a truncated body). The retry policy sleeps for real in the
subprocess, so the faults are few (about 7 s of waiting in all).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.agent.server import DROP, Reply, ScriptedServer, Truncate, openai_completion, openai_error

REPO = Path(__file__).resolve().parents[2]
NOTE = "BLOCK_N 512: fewer loop trips per row"
MALFORMED = '{"path": "kernel.py"'  # cut JSON: the tool must answer with an error naming JSON

# The agent's turns: turn n answers a request that holds n assistant messages. (id, name, arguments)
TURNS: list[list[tuple[str, str, Any]]] = [
    [("call-read", "read_file", {"path": "kernel.py"})],
    [("call-edit", "edit_file", {"path": "kernel.py", "old": "BLOCK_N = 256", "new": "BLOCK_N = 512"})],
    [("call-eval", "evaluate", {"note": NOTE})],
    [("call-badjson", "read_file", MALFORMED), ("call-unknown", "run_shell", {"cmd": "cat /etc/passwd"})],
    [("call-escape", "read_file", {"path": "../run.json"}), ("call-abs", "read_file", {"path": "/etc/passwd"})],
    [("call-history", "history", {})],
    [("call-finish", "finish", {"summary": "BLOCK_N 512 evaluated"})],
]
# Faults served before a turn's real answer (each retried call resends the same request).
FAULTS: dict[int, list[Any]] = {
    0: [Reply(429, openai_error("Rate limit reached for requests", "requests"), {"Retry-After": "1"})],
    2: [Reply(500, openai_error("The server had an error", "server_error"))],
    3: [DROP],
    4: ["truncate"],  # the turn's own body, cut in half (a complete HTTP message holding broken JSON)
    5: [Reply(502, "Bad Gateway"), DROP],  # two in a row: the second wait doubles
}
# What each fault must look like as a model_retry event: (status, attempt, wait_s, error fragment)
EXPECTED_RETRIES = [(429, 1, 1.0, "HTTP 429: Rate limit reached"), (500, 1, 1.0, "HTTP 500: The server had an error"),
                    (None, 1, 1.0, "RemoteProtocolError"), (200, 1, 1.0, "not JSON"),
                    (502, 1, 1.0, "HTTP 502: Bad Gateway"), (None, 2, 2.0, "RemoteProtocolError")]


class ScriptedAgent:
    """The server's script: one callable for every request. Logs what each request got, in order."""

    def __init__(self) -> None:
        self.attempts: Counter[int] = Counter()
        self.log: list[tuple[int, str, float]] = []  # (turn, "reply" or "fault", monotonic time)
        self.lock = threading.Lock()

    def __call__(self, received) -> Any:
        body = received.json()
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        with self.lock:
            attempt = self.attempts[turn]
            self.attempts[turn] += 1
            faults = FAULTS.get(turn, [])
            kind = "fault" if attempt < len(faults) else "reply"
            self.log.append((turn, kind, time.monotonic()))
        calls = TURNS[turn] if turn < len(TURNS) else [(f"call-extra-{turn}", "finish", {"summary": "over"})]
        reply = Reply(body=openai_completion(f"turn {turn}", calls, usage=(1000 + turn, 40), model="scripted-v1"))
        if kind == "fault":
            fault = faults[attempt]
            return Truncate(reply, 0.5) if fault == "truncate" else fault
        return reply


def events_of(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "trajectory.jsonl").read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    return [json.loads(line) for line in lines]


def verifier_children(pid: int) -> list[int]:
    """Descendants of pid running the verifier's child module (seen through /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += frontier
    out = []
    for child in found:
        try:
            if b"kopt.verifier.child" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            pass
    return out


class EnvWatcher(threading.Thread):
    """Reads the environment of every verifier child of a process while it runs."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.environs: dict[int, bytes] = {}

    def run(self) -> None:
        while not self.done.is_set():
            for child in verifier_children(self.pid):
                if child not in self.environs:
                    try:
                        self.environs[child] = Path(f"/proc/{child}/environ").read_bytes()
                    except OSError:
                        pass
            time.sleep(0.1)


def test_e2e_openai(tmp_path):
    key = f"sk-test-{secrets.token_hex(16)}"
    run_dir = tmp_path / "run"
    agent = ScriptedAgent()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(OPENAI_API_KEY=key, PYTHONUNBUFFERED="1")
    with ScriptedServer([agent] * 100) as server:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "kopt.harness.cli", "run", "--task", "rmsnorm", "--model", "openai:scripted",
             "--base-url", server.base_url + "/v1", "--run-dir", str(run_dir), "--max-evals", "3"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = EnvWatcher(proc.pid)
        watcher.start()
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            watcher.done.set()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        wall = time.monotonic() - started
        requests = list(server.requests)
    print(f"kopt run took {wall:.1f} s; {len(requests)} requests")

    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    events = events_of(run_dir)
    kinds = [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert kinds[0] == "run_start" and kinds.count("run_start") == 1 and "run_resume" not in kinds
    assert kinds[-1] == "run_end" and events[-1]["reason"] == "finished"
    assert events[-1]["detail"] == "BLOCK_N 512 evaluated"

    # Every tool call the model made has exactly one tool_call and one tool_result with its id.
    made = [c["id"] for e in events if e["type"] == "model_response" for c in e["response"]["message"]["tool_calls"]]
    assert made == [c[0] for turn in TURNS for c in turn]
    assert Counter(e["call"]["id"] for e in events if e["type"] == "tool_call") == Counter(made)
    assert Counter(e["call_id"] for e in events if e["type"] == "tool_result") == Counter(made)
    results = {e["call_id"]: e for e in events if e["type"] == "tool_result"}

    # Every fault is one model_retry event, in order, with the wait the policy owes it; the waits were real.
    retries = [e for e in events if e["type"] == "model_retry"]
    assert len(retries) == sum(len(f) for f in FAULTS.values()) == 6
    for event, (status, attempt, wait_s, fragment) in zip(retries, EXPECTED_RETRIES):
        assert (event["status"], event["attempt"], event["wait_s"]) == (status, attempt, wait_s), event
        assert fragment in event["error"], event
    assert len(requests) == len(agent.log) == kinds.count("model_request") + len(retries)
    for (turn, kind, at), (next_turn, _, next_at) in zip(agent.log, agent.log[1:]):
        if kind == "fault":
            assert next_turn == turn  # the same call retried ...
            assert next_at - at >= 0.9  # ... after a real wait (>= 1 s each)
    assert [k for _, k, _ in agent.log].count("fault") == 6

    # The forbidden attempts are recorded as such, and the model was told.
    forbidden = [e for e in events if e["type"] == "forbidden"]
    assert [(e["call_id"], e["name"]) for e in forbidden] == [("call-escape", "read_file"), ("call-abs", "read_file")]
    assert "../run.json" in forbidden[0]["detail"] and "/etc/passwd" in forbidden[1]["detail"]
    for call_id in ("call-escape", "call-abs"):
        assert results[call_id]["outcome"] == "forbidden" and results[call_id]["is_error"]
        assert results[call_id]["content"].startswith("refused:")
    assert "root:" not in results["call-abs"]["content"] and '"secret"' not in results["call-escape"]["content"]

    # Misuse became error messages for the model, never a crash.
    assert results["call-badjson"]["is_error"] and "JSON" in results["call-badjson"]["content"]
    assert results["call-badjson"]["outcome"] == "error"
    assert results["call-unknown"]["is_error"] and "unknown tool 'run_shell'" in results["call-unknown"]["content"]
    assert not results["call-read"]["is_error"] and "BLOCK_N = 256" in results["call-read"]["content"]
    assert not results["call-edit"]["is_error"] and results["call-edit"]["content"].startswith("edited kernel.py")
    assert "0001" in results["call-history"]["content"] and NOTE in results["call-history"]["content"]

    # Every request is well formed and authenticated; the model name is the spec's.
    for request in requests:
        assert (request.method, request.path) == ("POST", "/v1/chat/completions")
        assert request.headers["authorization"] == f"Bearer {key}"
        assert request.json()["model"] == "scripted"
    # For each turn's tool results, the NEXT request the server received carries them, in call order,
    # right after the assistant message that made the calls (and every later request still does).
    bodies = [r.json() for r in requests]
    replied = [i for i, (_, kind, _) in enumerate(agent.log) if kind == "reply"]
    for turn, index in enumerate(replied[:-1]):
        nxt = bodies[index + 1]["messages"]
        ids = [c[0] for c in TURNS[turn]]
        at = next(i for i, m in enumerate(nxt) if m["role"] == "assistant" and
                  [c["id"] for c in m.get("tool_calls", [])] == ids)
        sent = nxt[at + 1:at + 1 + len(ids)]
        assert [m["role"] for m in sent] == ["tool"] * len(ids)
        for message, call_id in zip(sent, ids):
            assert message["tool_call_id"] == call_id
            assert message["content"] == results[call_id]["content"]
        for later in bodies[index + 1:]:
            assert any(m["role"] == "tool" and m["tool_call_id"] == ids[0] for m in later["messages"])
    assert replied[-1] == len(requests) - 1  # nothing was asked after finish
    # The malformed arguments are resent as "{}" (a strict server would reject the whole request).
    last = bodies[-1]["messages"]
    sent_calls = {c["id"]: c["function"]["arguments"] for m in last if m["role"] == "assistant"
                  for c in m.get("tool_calls", [])}
    assert sent_calls["call-badjson"] == "{}" and json.loads(sent_calls["call-edit"])["new"] == "BLOCK_N = 512"

    # The evaluation: candidate 0001 holds the edit, and its verdict passed.
    evaluations = [e for e in events if e["type"] == "evaluation"]
    assert len(evaluations) == 1 and evaluations[0]["candidate"] == 1 and evaluations[0]["status"] == "ok"
    assert evaluations[0]["note"] == NOTE
    source = (run_dir / "candidates" / "0001.py").read_text()
    assert "BLOCK_N = 512" in source and "BLOCK_N = 256" not in source
    record = json.loads((run_dir / "candidates" / "0001.json").read_text())
    assert record["verdict"]["status"] == "ok" and record["meta"]["note"] == NOTE
    assert sorted(p.name for p in (run_dir / "candidates").iterdir()) == ["0001.json", "0001.py"]
    assert results["call-eval"]["content"].startswith("candidate 0001: OK")

    state = json.loads((run_dir / "state.json").read_text())
    assert state["counters"]["retries"] == 6 and state["counters"]["forbidden"] == 2
    assert state["counters"]["evaluations"] == 1 and state["counters"]["tool_calls"] == len(made)
    assert state["counters"]["input_tokens"] == sum(1000 + t for t in range(len(TURNS)))
    assert state["seq"] == len(events) and state["offset"] == (run_dir / "trajectory.jsonl").stat().st_size

    # The key: sent as a Bearer token, but in no file of the run, no output, no verifier child.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in stdout and key not in stderr
    assert watcher.environs, "no verifier child was seen during the evaluation"
    for environ in watcher.environs.values():
        assert key.encode() not in environ and b"OPENAI_API_KEY" not in environ
