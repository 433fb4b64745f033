"""`kopt sweep` end to end, and `kopt compare --markdown` of its runs against a hand computation.

Real subprocesses (`kopt sweep`, which runs each run as a `kopt resume` subprocess), real HTTP on
loopback (tests/agent/server.py playing scripted agents), the real verifier on the rmsnorm task
under the Triton interpreter. The expected figures are computed here from the raw JSON of the
trajectories and candidate files, with nothing of kopt's reading code.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kopt.harness.cli import build_parser, main
from kopt.harness.sweep import expand, prepare
from tests.agent.server import Reply, ScriptedServer, openai_completion
from tests.harness import trap_agent

REPO = Path(__file__).resolve().parents[2]
RUNS, MAX_EVALS = 2, 1  # the CI size (3 real evaluations); README gives the timing of --runs 3 --max-evals 4
PRICES = (1.0, 2.0)  # USD per million tokens, in and out


def kopt(*args: str, timeout_s: float = 1200, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    return subprocess.run([sys.executable, "-m", "kopt.harness.cli", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout_s, **kwargs)


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "trajectory.jsonl").read_text().splitlines()]


def candidate(run: Path, cid: int) -> dict[str, Any]:
    return json.loads((run / "candidates" / f"{cid:04d}.json").read_text())


def by_hand(run: Path) -> dict[str, Any]:
    """One run's figures from its raw files."""
    log = events(run)
    evals = [e for e in log if e["type"] == "evaluation"]
    scored = [e for e in evals if e["score"] is not None]
    best = max(scored, key=lambda e: e["score"], default=None)  # (no ties in these runs)
    hit = next((e for e in evals if best and e["score"] is not None and e["score"] >= 0.9 * best["score"]), None)
    calls = [e for e in log if e["type"] == "tool_call" and not e.get("retry")]
    usage = [e["response"]["usage"] for e in log if e["type"] == "model_response"]
    traps: dict[str, int] = {}
    for e in log:
        if e["type"] == "forbidden":
            kind = "path escape" if "leaves the workspace" in e["detail"] else \
                "absolute path" if e["detail"].startswith("absolute path") else "?"
            traps[f"forbidden: {kind}"] = traps.get(f"forbidden: {kind}", 0) + 1
    for e in evals:
        verdict = candidate(run, e["candidate"])["verdict"]
        if verdict["status"] == "rejected" and verdict["phase"] == "gate":
            for rule in dict.fromkeys(re.findall(r"line \d+: \[([a-z-]+)\]", verdict["reason"])):
                traps[f"gate: {rule}"] = traps.get(f"gate: {rule}", 0) + 1
    workloads = {}
    if best:
        workloads = {w["workload"]: w["speedup"] for w in candidate(run, best["candidate"])["verdict"]["timing"]
                     ["workloads"]}
    return {"best": best["score"] if best else None, "evals": len(evals), "calls": len(calls),
            "evals_to": evals.index(hit) + 1 if hit else None,
            "calls_to": sum(1 for c in calls if c["seq"] < hit["seq"]) if hit else None,
            "hours_to": hit["elapsed_s"] / 3600 if hit else None,
            "tokens": sum(u["input_tokens"] + u["output_tokens"] for u in usage),
            "cost": sum(u["cost_usd"] for u in usage), "end": log[-1]["reason"], "traps": traps,
            "workloads": workloads}


def med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def cell(values: list[float | None], show) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, high = min(known), max(known)
    return show(med(known)) if low == high else f"{show(med(known))} ({show(low)}-{show(high)})"


def count(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"


def rows(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    found = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        found[cells[0]] = cells
    return found


@pytest.mark.slow
def test_sweep_of_builtin_and_a_trap_prone_model_and_its_report(tmp_path):
    out = tmp_path / "sweep"
    with trap_agent.serve() as server:
        trap = f"openai:trap@{server.base_url}/v1"
        started = time.monotonic()
        done = kopt("sweep", "--task", "rmsnorm", "--models", f"builtin,{trap}", "--runs", str(RUNS),
                    "--max-evals", str(MAX_EVALS), "--device", "cpu", "--out", str(out),
                    "--price-in", str(PRICES[0]), "--price-out", str(PRICES[1]))
        wall = time.monotonic() - started
        served = len(server.requests)
    print(f"kopt sweep --runs {RUNS} --max-evals {MAX_EVALS} took {wall:.1f} s")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    builtin = [out / "builtin" / f"run-{k}" for k in range(1, RUNS + 1)]
    trapped = [out / "openai-trap" / f"run-{k}" for k in range(1, RUNS + 1)]
    assert json.loads((out / "sweep.json").read_text())["runs"] == RUNS
    for run in builtin + trapped:
        assert f"{run.parent.name}/{run.name}: budget" in done.stdout  # one line per run when piped
    # Every run is a normal run directory: `kopt status` reads it.
    assert "ended" in kopt("status", str(trapped[0])).stdout
    figures = {"builtin": [by_hand(r) for r in builtin], "openai:trap": [by_hand(r) for r in trapped]}
    assert served == sum(1 for r in trapped for e in events(r) if e["type"] == "model_response")
    for f in figures["builtin"] + figures["openai:trap"]:
        assert (f["evals"], f["end"]) == (MAX_EVALS, "budget")
    # the trap agent's first run is careless (forbidden reads, then the gated kernel: its one evaluation);
    # its second evaluates the correct kernel
    careless = {"forbidden: path escape": 1, "forbidden: absolute path": 1,
                **{f"gate: {r}": 1 for r in trap_agent.GATE_RULES}}
    assert [f["traps"] for f in figures["openai:trap"]] == [careless, {}]
    assert [f["best"] is None for f in figures["openai:trap"]] == [True, False]
    for f in figures["openai:trap"]:  # each response's usage priced by the client: tokens x price
        responses = f["tokens"] / sum(trap_agent.USAGE)
        assert f["cost"] == pytest.approx(responses * (trap_agent.USAGE[0] * PRICES[0] + trap_agent.USAGE[1]
                                                       * PRICES[1]) / 1e6)

    report = tmp_path / "report.md"
    shown = kopt("compare", str(out), "--markdown", "-o", str(report))
    assert shown.returncode == 0, shown.stderr
    text = report.read_text()
    assert "## rmsnorm, interpreter (CPU) scores: Triton-interpreter time ratios on a CPU, NOT GPU speedups" in text
    assert "GPU (" not in text  # nothing here was timed on a GPU

    glance = rows(text, "model")
    medians = {m: med([f["best"] for f in fs]) for m, fs in figures.items()}
    order = sorted(figures, key=lambda m: -medians[m])
    assert [m for m in glance if m != "model"] == order
    for model, fs in figures.items():
        assert glance[model] == [
            model, str(RUNS), cell([f["best"] for f in fs], lambda v: f"{v:.4f}"),
            cell([f["evals_to"] for f in fs], count), cell([f["calls_to"] for f in fs], count),
            cell([f["hours_to"] for f in fs], lambda v: f"{v:.4f}"), cell([f["tokens"] for f in fs], count),
            cell([f["cost"] for f in fs], lambda v: f"${v:.4f}"),
            cell([f["calls"] / f["evals"] for f in fs], lambda v: f"{int(v)}" if float(v).is_integer() else f"{v:.2f}"),
            f"budget x{RUNS}"]

    # verdicts: rank by median best, steadiness from (max - min) / median over passing runs, cost, traps
    for place, model in enumerate(order, 1):
        line = next(line for line in text.splitlines() if line.startswith(f"- {model}: "))
        bests = [f["best"] for f in figures[model] if f["best"] is not None]
        assert (f"{place}{'st' if place == 1 else 'nd'} of 2 by median best: median best {medians[model]:.4f} "
                f"(range {min(bests):.4f}-{max(bests):.4f}, a pass in {len(bests)} of {RUNS} runs)") in line
        if len(bests) > 1:
            rel = (max(bests) - min(bests)) / medians[model]
            word = "steady" if rel <= 0.05 else "variable" if rel <= 0.20 else "erratic"
            assert f"{word}: spread {rel:.1%} of the median" in line
        else:
            assert "steadiness unknown (fewer than 2 passing runs)" in line
        assert f"median ${med([f['cost'] for f in figures[model]]):.4f}" in line
        caught = {t: sum(1 for f in figures[model] if t in f["traps"]) for f in figures[model] for t in f["traps"]}
        if caught:
            listed = ", ".join(f"{t} {n}/{RUNS}" for t, n in sorted(caught.items(), key=lambda kv: (
                ["forbidden", "gate"].index(kv[0].split(":")[0]), kv[0])))
            runs = sum(1 for f in figures[model] if f["traps"])
            assert f"traps caught it in {runs} of {RUNS} runs ({listed})." in line
        else:
            assert f"no trap caught it in {RUNS} runs" in line

    # per workload: the median over runs of the best candidate's speedup on each, and over how many runs
    per_workload = rows(text, "workload")
    for name in figures["builtin"][0]["workloads"]:
        for column, model in enumerate(order, 1):
            values = [f["workloads"].get(name) for f in figures[model]]
            known = sum(v is not None for v in values)
            assert per_workload[name][column] == f"{cell(values, lambda v: f'{v:.4f}')} N={known}"

    # traps: this model's runs caught, times, and the other model's runs
    traps = rows(text, "trap (openai:trap)")
    assert traps["forbidden: path escape"] == ["forbidden: path escape", f"1 of {RUNS}", "1", f"0 of {RUNS}"]
    for rule in trap_agent.GATE_RULES:
        assert traps[f"gate: {rule}"] == [f"gate: {rule}", f"1 of {RUNS}", "1", f"0 of {RUNS}"]
    assert rows(text, "trap (builtin)")["gate: import"][1:] == [f"0 of {RUNS}", "0", f"1 of {RUNS}"]
    assert "### Stability" in text

    html = tmp_path / "report.html"
    assert kopt("compare", str(out), "--html", "-o", str(html)).returncode == 0
    assert "<td>openai:trap</td>" in html.read_text()


# ---- resuming a sweep: a scripted model whose second run is interrupted mid-call

class Pausing:
    """Each conversation reads the kernel twice, then finishes; the second conversation's second request
    is held until the test lets it go (so a Ctrl-C lands while that run is live)."""

    def __init__(self) -> None:
        self.conversations = 0
        self.held, self.release = threading.Event(), threading.Event()

    def __call__(self, received) -> Reply:
        turn = sum(m["role"] == "assistant" for m in received.json()["messages"])
        self.conversations += turn == 0
        if self.conversations == 2 and turn == 1 and not self.release.is_set():
            self.held.set()
            assert self.release.wait(120)
        c = self.conversations
        calls = ([(f"r{c}-{turn}", "read_file", {"path": "kernel.py"})] if turn < 2 else
                 [(f"f{c}", "finish", {"summary": "read it"})])
        return Reply(body=openai_completion(f"turn {turn}", calls, usage=(100, 10)))


def wait_for(condition, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_an_interrupted_sweep_continues_where_it_stopped_and_skips_what_ended(tmp_path):
    out, err = tmp_path / "sweep", tmp_path / "stderr.txt"
    agent = Pausing()
    with ScriptedServer([agent] * 1000) as server:
        command = ["sweep", "--task", "rmsnorm", "--models", f"openai:pausing@{server.base_url}/v1", "--runs", "2",
                   "--device", "cpu", "--out", str(out)]
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        with open(err, "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "kopt.harness.cli", *command], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True)
            try:
                assert agent.held.wait(300), "the second run never reached its second request"
                proc.send_signal(signal.SIGINT)  # as Ctrl-C: the sweep passes it on to the live run
                wait_for(lambda: "stopping openai-pausing/run-2" in err.read_text())
                agent.release.set()
                stdout, _ = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == 3, (stdout, err.read_text())
        assert "sweep interrupted: 1 run left; re-run the same command" in stdout
        first, second = out / "openai-pausing" / "run-1", out / "openai-pausing" / "run-2"
        assert events(first)[-1]["reason"] == "finished"
        assert events(second)[-1]["reason"] == "interrupted"
        before = (first / "trajectory.jsonl").read_bytes()

        again = kopt(*command)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (first / "trajectory.jsonl").read_bytes() == before  # ended: skipped, not resumed
        log = events(second)
        assert [e["type"] for e in log].count("run_resume") == 1 and log[-1]["reason"] == "finished"
        assert "ended earlier: finished" in again.stdout and "openai-pausing/run-2: resumed" in again.stdout
        assert [e["tool_calls"] for e in log if e["type"] == "run_resume"] == [2]  # counters continued



def plan(argv: list[str]):
    """What `kopt sweep ARGV` plans and creates, without running anything: (OUT, plan, jobs)."""
    out, planned, jobs, lock = prepare(build_parser().parse_args(argv))
    lock.close()
    return out, planned, jobs


def test_a_sweep_refuses_to_change_its_plan_or_to_take_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["sweep", "--task", "rmsnorm", "--device", "cpu", "--out", str(out), "--max-evals", "3"]
    _, first, jobs = plan([*base, "--models", "builtin", "--runs", "1"])
    assert [j.root for j in jobs] == [out / "builtin" / "run-1"]
    assert json.loads((out / "builtin" / "run-1" / "run.json").read_text())["budgets"]["max_evals"] == 3
    cases = [([*base[:-1], "4", "--models", "builtin", "--runs", "1"], "planned with other settings "
              "(budgets.max_evals 3 -> 4)"),
             ([*base, "--models", "builtin", "--runs", "0"], "--runs must be at least 1"),
             ([*base, "--models", "openai:x", "--runs", "1"], "also plans builtin: name every planned model"),
             ([*base, "--models", "builtin,builtin", "--runs", "1"], "names builtin twice"),
             ([*base, "--models", "builtin,", "--runs", "1"], "has an empty entry"),
             ([*base, "--models", "gpt-9", "--runs", "1"], "unknown model 'gpt-9'"),
             ([*base, "--models", "builtin", "--runs", "1", "--task", "nope"], "nope"),
             ([*base[:5], "--out", str(tmp_path), "--models", "builtin"], "is not a sweep directory"),
             ([*base[:5], "--out", str(tmp_path / "keys"), "--models", "builtin,anthropic:claude-x",
               "--api-key-env", "KOPT_NO_SUCH_KEY"],
              "anthropic:claude-x: no API key: set the environment variable KOPT_NO_SUCH_KEY")]
    for argv, message in cases:
        assert main(argv) == 2, argv  # refused before anything runs
        assert message in " ".join(capsys.readouterr().err.split()), argv  # (rich wraps long lines)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "builtin", "sweep.json"]
    assert not (tmp_path / "keys").exists()
    with open(out / ".lock", "a") as held:  # as a live `kopt sweep` of OUT holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main([*base, "--models", "builtin", "--runs", "1"]) == 2
        assert "is in use by another kopt sweep" in " ".join(capsys.readouterr().err.split())

    # growing is fine: another model (with its own endpoint) and another run of each
    _, grown, jobs = plan([*base, "--models", "builtin,openai:m@http://127.0.0.1:9/v1", "--runs", "2"])
    assert grown.secret == first.secret
    assert [(m.spec, m.base_url, m.slug) for m in grown.models] == [
        ("builtin", None, "builtin"), ("openai:m", "http://127.0.0.1:9/v1", "openai-m")]
    runs = [j.root.relative_to(out).as_posix() for j in jobs]
    assert runs == ["builtin/run-1", "openai-m/run-1", "builtin/run-2", "openai-m/run-2"]  # run 1 of each first
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/run-*")) == sorted(runs)
    assert json.loads((out / "sweep.json").read_text())["runs"] == 2
    config = json.loads((out / "openai-m" / "run-2" / "run.json").read_text())
    assert (config["base_url"], config["model"], config["budgets"]["max_evals"]) == ("http://127.0.0.1:9/v1",
                                                                                      "openai:m", 3)
    # run k of every model shares its evaluation secret (the same hidden cases); runs 1 and 2 differ
    secrets = {p: json.loads((out / p / "run.json").read_text())["secret"] for p in runs}
    assert secrets["builtin/run-2"] == secrets["openai-m/run-2"] != secrets["builtin/run-1"]


def test_compare_of_a_sweep_directory_reads_its_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    _, _, jobs = plan(["sweep", "--task", "rmsnorm", "--device", "cpu", "--out", str(out), "--models", "builtin",
                       "--runs", "2"])
    assert list(expand([out, jobs[0].root])) == [jobs[0].root, jobs[1].root, jobs[0].root]
    (out / "sweep.json").write_text("{not json")
    assert main(["compare", str(out), "--markdown"]) == 2
    assert "is not a readable sweep plan" in " ".join(capsys.readouterr().err.split())
