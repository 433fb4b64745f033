"""Endurance benchmark: 10,000 cheap tool calls driven over real HTTP on loopback, with faults.

    python tests/bench/endurance.py [--steps 10000] [--context-tokens 16000] [--dir DIR]

A scripted agent behind an OpenAI-compatible server on 127.0.0.1 reads, edits and takes
notes; every 97th request fails (500, 429 with Retry-After, a dropped connection, a truncated
body) and is retried by the real client. Prints the harness's own time per step for the
first and last 1,000 steps, RSS, the largest request, total wall time and the time to
rebuild the run for a resume.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kopt.agent.openai import OpenAIModel
from kopt.agent.retry import RetryPolicy
from kopt.harness.run import Run
from kopt.harness.workspace import Budgets, RunConfig, Workspace
from kopt.verifier.task import load_task
from kopt.verifier.verdict import CompileReport, Timing, Verdict

FAULTS = ("500", "429", "drop", "truncate")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class AgentServer:
    """An OpenAI-compatible endpoint playing a scripted agent; keeps counters, not bodies."""

    def __init__(self, steps: int, fault_every: int = 97):
        self.steps, self.fault_every = steps, fault_every
        self.requests = self.faults = self.largest = 0
        self.turn = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests += 1
                owner.largest = max(owner.largest, len(body))
                if owner.requests % owner.fault_every == 0:
                    owner.faults += 1
                    return owner.fault(self, FAULTS[owner.faults % len(FAULTS)])
                request = json.loads(body)
                owner.reply(self, 200, owner.next_turn(request))

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @staticmethod
    def reply(handler, status, payload, headers=None):
        data = json.dumps(payload).encode()
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def fault(self, handler, kind):
        if kind == "500":
            self.reply(handler, 500, {"error": {"message": "internal error"}})
        elif kind == "429":
            self.reply(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        elif kind == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)
        else:
            data = b'{"id": "x", "choices": [{"message": {"role": "assist'
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

    def next_turn(self, request) -> dict:
        if not request.get("tools"):  # a compaction summary
            message = {"role": "assistant", "content": "Summary: reads, edits and notes so far; no evaluations."}
        else:
            self.turn += 1
            n = self.turn
            if n > self.steps:
                name, args = "finish", {"summary": f"{self.steps} steps done"}
            elif n % 3 == 0:
                name, args = "notes", {"text": f"step {n}: nothing new"}
            elif n % 3 == 1:
                name, args = "read_file", {"path": "kernel.py", "start_line": 1 + n % 20, "end_line": 30 + n % 20}
            else:
                old, new = ("NUM_WARPS = 4\n", "NUM_WARPS = 4  # touched\n") if n % 2 == 0 else \
                    ("NUM_WARPS = 4  # touched\n", "NUM_WARPS = 4\n")
                name, args = "edit_file", {"path": "kernel.py", "old": old, "new": new}
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}
        return {"id": "c", "object": "chat.completion", "model": "scripted", "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 30}}

    def close(self):
        self.httpd.shutdown()


def unused_verifier(source: str, candidate: int) -> Verdict:
    return Verdict(status="ok", task="rmsnorm", task_hash="-", kernel_sha256="-", device="cpu", target="sm_90",
                   timing=Timing(label="interpreter (CPU)", interpreter_ratio=1.0))


def unused_compile(source: str) -> CompileReport:
    return CompileReport(target="sm_90", shared_limit_bytes=232448, ok=True)


def run_endurance(steps: int, root: Path, context_tokens: int = 16_000, fault_every: int = 97) -> dict:
    task = load_task("rmsnorm")
    config = RunConfig(run_id="endurance", task=str(task.root), task_hash=task.hash, editable_file="kernel.py",
                       model="openai:scripted", budgets=Budgets(max_tool_calls=steps + 10))
    ws = Workspace.create(root, config, task.baseline_path, task.instruction_text())
    server = AgentServer(steps, fault_every)
    marks: list[float] = []
    model_time = [0.0]
    rss = {"peak": 0.0, "at_1000": 0.0}

    def on_event(event, run):
        if event.type == "tool_result":
            marks.append(time.perf_counter() - model_time[0])
            if len(marks) == 1000:
                rss["at_1000"] = rss_mb()
            if len(marks) % 250 == 0:
                rss["peak"] = max(rss["peak"], rss_mb())

    run = Run(ws, None, unused_verifier, unused_compile, on_event=on_event, context_tokens=context_tokens)
    client = OpenAIModel("scripted", base_url=server.base_url, api_key=None, on_retry=run.model_retry,
                         retry=RetryPolicy(base_s=0.001, cap_s=0.005, outage_budget_s=30))
    largest_request_tokens = [0]

    class Timed:
        name = client.name

        def complete(self, messages, tools):
            from kopt.agent.context import tokens
            largest_request_tokens[0] = max(largest_request_tokens[0], tokens(messages))
            start = time.perf_counter()
            try:
                return client.complete(messages, tools)
            finally:
                model_time[0] += time.perf_counter() - start

    run.model = Timed()
    start = time.perf_counter()
    stop = run.execute()
    wall = time.perf_counter() - start
    server.close()
    steps_s = [b - a for a, b in zip(marks, marks[1:])]
    resume_start = time.perf_counter()
    again = Run(Workspace.open(root), None, unused_verifier, unused_compile, context_tokens=context_tokens)
    resume_s = time.perf_counter() - resume_start
    return {"stop": stop.reason, "steps": len(marks), "wall_s": wall, "first_1000_ms": statistics.mean(steps_s[:1000]) * 1e3,
            "last_1000_ms": statistics.mean(steps_s[-1000:]) * 1e3, "peak_rss_mb": max(rss["peak"], rss_mb()),
            "rss_at_1000_mb": rss["at_1000"], "final_rss_mb": rss_mb(), "faults": server.faults,
            "retries": again.counters.retries, "largest_request_tokens": largest_request_tokens[0],
            "largest_request_bytes": server.largest, "context_tokens": context_tokens, "resume_s": resume_s,
            "compactions": sum(1 for line in open(root / "trajectory.jsonl") if '"type":"compaction"' in line),
            "trajectory_mb": (root / "trajectory.jsonl").stat().st_size / 1e6,
            "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--context-tokens", type=int, default=16_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kopt-endurance-")) / "run"
    r = run_endurance(args.steps, root, args.context_tokens)
    print(f"run dir                     {root}")
    print(f"ended                       {r['stop']} after {r['steps']} tool calls in {r['wall_s']:.1f} s")
    print(f"harness time per step       first 1000: {r['first_1000_ms']:.2f} ms   last 1000: "
          f"{r['last_1000_ms']:.2f} ms   ratio {r['last_1000_ms'] / r['first_1000_ms']:.2f}")
    print(f"RSS                         at step 1000: {r['rss_at_1000_mb']:.0f} MB   peak: {r['peak_rss_mb']:.0f} MB   "
          f"final: {r['final_rss_mb']:.0f} MB   (final - step 1000: {r['final_rss_mb'] - r['rss_at_1000_mb']:+.0f} MB)")
    print(f"largest request             {r['largest_request_tokens']} tokens (estimated; limit {r['context_tokens']}), "
          f"{r['largest_request_bytes']} bytes on the wire")
    print(f"faults injected / retried   {r['faults']} / {r['retries']}   compactions {r['compactions']}")
    print(f"trajectory                  {r['trajectory_mb']:.1f} MB")
    print(f"resume (rebuild from log)   {r['resume_s']:.2f} s")


if __name__ == "__main__":
    main()
