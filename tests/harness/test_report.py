"""`kopt report` (HTML, rendered in headless Chromium) and `kopt export --atif`, on synthetic runs
and on one real `kopt run --model builtin` run driven end to end through the command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import atif
import pytest

from kopt.harness import report
from kopt.harness.atif import export
from kopt.harness.cli import main
from kopt.harness.inspect import load
from kopt.verifier.verdict import INTERPRETER_LABEL
from tests.conftest import REPO
from tests.harness.synthetic import RunSpec, big_run, make_run

ARTIFACTS = REPO / "tests" / "artifacts"


def kopt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kopt.harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "run"
    proc = kopt("run", "--task", "rmsnorm", "--model", "builtin", "--max-evals", "2", "--run-dir", str(root),
                timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "r", RunSpec(outcomes=[1.0, "correctness", 1.5, 2.0, 1.9], forbidden=1,
                                            redesigns=1))


# ---- the HTML report

def test_report_holds_plots_tables_diff_totals_and_transcript(run):
    out = report.write(run)
    assert out == run / "report.html"
    page = out.read_text()
    assert page.count("<svg") == 4  # best so far vs time, evaluations, tool calls; per-workload bars
    assert "not a GPU speedup" in page and INTERPRETER_LABEL in page
    assert "0001 &rarr; 0002 &rarr; 0003 &rarr; 0004" in page  # lineage of the best, by parent links
    assert "<tr class='best'><td>0004 *</td>" in page
    # the task path in run.json is from another machine: the diff is against the first candidate
    assert "Best kernel (0004) against the baseline (candidates/0001.py)" in page
    assert "<span class=del>-# candidate 1</span>" in page and "<span class=add>+# candidate 4</span>" in page
    assert "1,600 in, 320 out, 1,920 total" in page and "$0.1600" in page  # 16 responses
    assert page.count("<details>") >= 2 * 16  # every tool call and every result is collapsible
    assert "FORBIDDEN read_file" in page and "evaluation of candidate 0004: ok 2.0000" in page
    # self-contained: no script, no external resource (SVG links are internal: href="#...")
    assert "<script" not in page and " src=" not in page
    assert set(re.findall(r'href="(.)', page)) <= {"#"}


def test_report_of_a_gpu_run_says_geomean_speedup(tmp_path):
    page = report.render(load(make_run(tmp_path / "g", RunSpec(outcomes=[1.1, 1.3], gpu=True)), keep_events=True))
    assert "GPU geomean speedup" in page and "not a GPU speedup" not in page


def test_report_of_a_run_that_has_not_started(tmp_path):
    root = make_run(tmp_path / "e", RunSpec(outcomes=[]))
    (root / "trajectory.jsonl").unlink()
    page = report.render(load(root, keep_events=True))
    assert "no passing candidate" in page and "not started" in page


def test_report_of_a_huge_run_caps_its_transcript(tmp_path):
    root = big_run(tmp_path / "big", candidates=500)
    page = report.write(root, tmp_path / "elsewhere.html").read_text()
    omitted = re.search(r"([\d,]+) messages omitted here", page)
    assert omitted and int(omitted.group(1).replace(",", "")) > 4000
    assert page.count("class='msg ") <= report.TRANSCRIPT_HEAD + report.TRANSCRIPT_TAIL + 2
    assert page.count("<tr class=") == 500 and len(page) < 5_000_000


def test_report_cli_writes_where_asked(run, tmp_path, capsys):
    assert main(["report", str(run), "-o", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").read_text().startswith("<!DOCTYPE html>")
    assert "wrote" in capsys.readouterr().out


# ---- ATIF

def test_atif_export_validates_and_keeps_kopt_data(run, tmp_path):
    assert main(["export", str(run), "--atif", "-o", str(tmp_path / "t.json")]) == 0
    document = json.loads((tmp_path / "t.json").read_text())
    trajectory = atif.Trajectory.model_validate(document)  # the atif package's own models
    assert trajectory.schema_version == "ATIF-v1.8" and trajectory.agent.name == "kopt"
    assert [s.step_id for s in trajectory.steps] == list(range(1, len(trajectory.steps) + 1))
    assert [s.source for s in trajectory.steps[:2]] == ["system", "user"]
    agent = [s for s in trajectory.steps if s.source == "agent"]
    assert len(agent) == 16 and all(s.metrics.prompt_tokens == 100 for s in agent)  # 1 forbidden + 5 x 3 calls
    results = [r for s in agent for r in s.observation.results]
    assert len(results) == 16 and all(r.source_call_id for r in results)
    evaluations = [r.extra["evaluation"] for r in results if "evaluation" in r.extra]
    assert [e["candidate"] for e in evaluations] == [1, 2, 3, 4, 5]
    assert evaluations[3]["score"] == 2.0 and evaluations[1]["phase"] == "correctness"
    assert any("forbidden" in r.extra for r in results)
    assert any(s.source == "system" and s.extra.get("kopt_event") == "redesign" for s in trajectory.steps)
    metrics = trajectory.final_metrics
    assert (metrics.total_prompt_tokens, metrics.total_completion_tokens) == (1600, 320)
    assert metrics.extra["best_candidate"] == 4 and metrics.extra["score_label"] == f"{INTERPRETER_LABEL} time ratio"
    kopt_data = trajectory.extra["kopt"]
    assert [c["id"] for c in kopt_data["candidates"]] == [1, 2, 3, 4, 5]
    assert kopt_data["candidates"][3]["workloads"]["W2"] == 2.0
    assert "secret" not in kopt_data["config"]


def test_atif_keeps_malformed_tool_arguments_verbatim(run):
    path = run / "trajectory.jsonl"
    lines = path.read_text().splitlines()
    event = json.loads(lines[2])
    assert event["type"] == "model_response"
    event["response"]["message"]["tool_calls"][0]["arguments"] = "{not json"
    lines[2] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    step = export(run).steps[2]
    assert step.tool_calls[0].arguments == {} and step.tool_calls[0].extra == {"raw_arguments": "{not json"}


# ---- one real run, end to end through the command line

def test_real_run_status_history_report_export(real_run, tmp_path):
    status = kopt("status", str(real_run))
    assert status.returncode == 0 and "ended" in status.stdout and "max_evals" in status.stdout
    history = json.loads(kopt("history", str(real_run), "--json").stdout)
    assert [c["id"] for c in history["candidates"]] == [1, 2]
    assert history["score_label"] == f"{INTERPRETER_LABEL} time ratio"
    assert all(c["status"] == "ok" and c["workloads"] and c["max_registers"] for c in history["candidates"])
    assert sum(c["best"] for c in history["candidates"]) == 1
    assert kopt("report", str(real_run)).returncode == 0
    page = (real_run / "report.html").read_text()
    assert page.count("<svg") == 4 and "kernels/rmsnorm/baseline.py" in page  # the task's own baseline
    proc = kopt("export", str(real_run), "--atif", "-o", str(tmp_path / "real.json"))
    assert proc.returncode == 0, proc.stderr
    trajectory = atif.Trajectory.model_validate_json((tmp_path / "real.json").read_text())
    agent = [s for s in trajectory.steps if s.source == "agent"]
    assert agent and all(s.llm_call_count == 0 and s.metrics is None for s in agent)  # builtin: no LLM
    compare = json.loads(kopt("compare", str(real_run), "--json").stdout)
    assert compare["groups"][0]["model"] == "builtin" and compare["groups"][0]["ends"] == {"budget": 1}


def test_report_renders_in_headless_chromium(real_run, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium with apt-get)")
    page = report.write(real_run, tmp_path / "report.html")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert dom.count("<svg") == 4 and dom.count("<table") == 3  # summary, best's workloads, lineage
    assert "Best candidate per workload" in dom and "Transcript" in dom
    # the plots were painted: the best-so-far line's green is on the screenshot
    from matplotlib.image import imread
    pixels = imread(shot)[..., :3]
    green = ((abs(pixels[..., 0] - 0x1a / 255) < 0.08) & (abs(pixels[..., 1] - 0x7f / 255) < 0.08)
             & (abs(pixels[..., 2] - 0x37 / 255) < 0.08)).sum()
    assert green > 200, green
