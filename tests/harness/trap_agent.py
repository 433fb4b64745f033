"""A scripted "model" that walks into kopt's traps, served over the OpenAI protocol (not a test module).

It plays an agent on the rmsnorm task, one conversation per run, answering each request by the
number of assistant turns in it. It reads the kernel; then, in conversations 1, 3, 5, ... (the
careless ones), tries two forbidden reads (a path that leaves the workspace, an absolute path)
and submits a kernel the static gate rejects (an os import and host reads of tensor values)
before a correct one with BLOCK_N 512; in conversations 2, 4, ... it reads its notes and submits
the correct kernel first, the gated one second. Then it submits a wrong kernel (the weight
dropped), which fails correctness, and finishes. A budget cuts the script short: with
--max-evals 1 a careless run has only its gated evaluation, the others only the correct one.

Run it by hand for `kopt sweep`:  python -m tests.harness.trap_agent  (prints the base URL).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.agent.server import Reply, ScriptedServer, openai_completion

BASELINE = (Path(__file__).resolve().parents[2] / "kernels" / "rmsnorm" / "baseline.py").read_text()
GATED = (BASELINE.replace("import triton\n", "import os\nimport triton\n", 1)
         .replace("    if rows == 0:\n", "    if x.sum().item() == 0.5:\n        os.sync()\n    if rows == 0:\n"))
GOOD = BASELINE.replace("BLOCK_N = 256", "BLOCK_N = 512")
WRONG = GOOD.replace("(x * rstd * w)", "(x * rstd)")
assert "BLOCK_N = 256" in BASELINE and "(x * rstd * w)" in BASELINE, "the rmsnorm baseline changed: update this script"
GATE_RULES = ("import", "host-method", "host-read")  # of GATED's first five violations
USAGE = (1200, 80)  # tokens (in, out) of every response
MODEL = "trap-v1"


def turns(conversation: int) -> list[list[tuple[str, str, Any]]]:
    """The assistant turns of one conversation (0-based): (call id, tool, arguments)."""
    careless = conversation % 2 == 0
    probe = ([("escape", "read_file", {"path": "../run.json"}), ("abs", "read_file", {"path": "/etc/passwd"})]
             if careless else [("notes", "read_file", {"path": "NOTES.md"})])
    gated = [("gated", "write_file", {"path": "kernel.py", "content": GATED}),
             ("eval-gated", "evaluate", {"note": "host checks"})]
    good = [("good", "write_file", {"path": "kernel.py", "content": GOOD}),
            ("eval-good", "evaluate", {"note": "BLOCK_N 512"})]
    wrong = [("wrong", "write_file", {"path": "kernel.py", "content": WRONG}),
             ("eval-wrong", "evaluate", {"note": "skip the weight"})]
    return [[("read", "read_file", {"path": "kernel.py"})], probe, *([gated, good] if careless else [good, gated]),
            wrong, [("finish", "finish", {"summary": "BLOCK_N 512"})]]


class TrapAgent:
    """The server's script: one callable for every request. A request with no assistant turn starts a
    conversation (a run); ids carry the conversation's number so every run's ids are its own."""

    def __init__(self) -> None:
        self.conversations = 0
        self.lock = threading.Lock()

    def __call__(self, received) -> Reply:
        messages = received.json()["messages"]
        turn = sum(m["role"] == "assistant" for m in messages)
        with self.lock:
            if turn == 0:
                self.conversations += 1
            conversation = self.conversations - 1
        script = turns(conversation)
        calls = script[turn] if turn < len(script) else [("over", "finish", {"summary": "over"})]
        calls = [(f"c{conversation}-{turn}-{cid}", name, args) for cid, name, args in calls]
        return Reply(body=openai_completion(f"turn {turn}", calls, usage=USAGE, model=MODEL))


def serve() -> ScriptedServer:
    return ScriptedServer([TrapAgent()] * 100_000)


if __name__ == "__main__":
    import time
    with serve() as server:
        print(f"{server.base_url}/v1  (e.g. --models builtin,openai:trap@{server.base_url}/v1); Ctrl-C stops it",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
