"""`kopt compare --markdown | --html`: the per-model report on synthetic runs whose every number is known.

Two models, three runs each, on interpreter scores, plus single runs timed on two GPU models and
one on a simulated device. Every expected figure below is worked out by hand from the RunSpecs
(comments show the arithmetic); the report is parsed back from its Markdown.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kopt.harness import inspect
from kopt.harness.cli import main
from tests.harness.synthetic import RunSpec, make_run

BETA = dict(model="anthropic:beta", calls_per_eval=2, tokens=(1000, 100), cost_usd=0.1)
ALPHA_RUNS = [RunSpec(outcomes=[1.0, "gate:import+host-read", 1.5, 2.0], forbidden=1, stall_warnings=1),
              RunSpec(outcomes=[0.5, "correctness:R2+hidden", 0.8], redesigns=1),
              RunSpec(outcomes=[1.2, "gate:import", 1.3], forbidden=2)]
BETA_RUNS = [RunSpec(outcomes=[3.0, 1.0], **BETA), RunSpec(outcomes=["correctness:R2", 2.9], **BETA),
             RunSpec(outcomes=[2.0, 3.1, 3.05], **BETA)]
OTHER_KINDS = [RunSpec(outcomes=[1.5, "timing:integrity"], gpu=True, gpu_name="NVIDIA H100"),
               RunSpec(outcomes=[1.2], gpu=True, gpu_name="NVIDIA A100"),
               RunSpec(outcomes=[2.5], simulated=True, **BETA)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("board")
    specs = [("a", s) for s in ALPHA_RUNS] + [("b", s) for s in BETA_RUNS] + [("o", s) for s in OTHER_KINDS]
    return [make_run(root / f"{name}{i}", spec) for i, (name, spec) in enumerate(specs)]


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)
    return {p.split("\n", 1)[0]: p for p in parts[1:]}


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table: its rows (header first) as lists of cells."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split(" | ")])
        elif current:
            found.append(current)
            current = []
    return found


def table(text: str, first_header: str) -> dict[str, list[str]]:
    """The table whose header starts with `first_header`, as {first cell: the row's cells}."""
    rows = next(t for t in tables(text) if t[0][0] == first_header)
    return {row[0]: row for row in rows}


INTERP = "rmsnorm, interpreter (CPU) scores: Triton-interpreter time ratios on a CPU, NOT GPU speedups"


def test_markdown_report_matches_a_hand_computation(runs, capsys):
    assert main(["compare", *map(str, runs), "--markdown"]) == 0
    text = capsys.readouterr().out
    parts = sections(text)
    assert set(parts) == {INTERP, "rmsnorm, GPU (NVIDIA A100) scores", "rmsnorm, GPU (NVIDIA H100) scores",
                          "rmsnorm, simulated (sm_90) scores: simulated time ratios, not measured on a GPU"}
    body = parts[INTERP]

    glance = table(body, "model")
    # alpha bests 2.0, 0.8, 1.3; 90% targets 1.8, 0.72, 1.17 reached at evaluations 4, 3, 1, i.e. tool calls
    # 1 + 4*3 = 13, 3*3 = 9, 2 + 3 = 5 (forbidden calls come first), at 10 s per call: 130, 90, 50 s.
    # Tool calls 13, 9, 11; 120 tokens and $0.01 per call; per evaluation 13/4, 9/3, 11/3.
    assert glance["openai:alpha"] == ["openai:alpha", "3", "1.3000 (0.8000-2.0000)", "3 (1-4)", "9 (5-13)",
                                      f"{90 / 3600:.4f} ({50 / 3600:.4f}-{130 / 3600:.4f})", "1,320 (1,080-1,560)",
                                      "$0.1100 ($0.0900-$0.1300)", "3.25 (3-3.67)", "budget x3"]
    # beta bests 3.0, 2.9, 3.1; targets 2.7, 2.61, 2.79 reached at evaluations 1, 2, 2 = tool calls 2, 4, 4
    # (20, 40, 40 s); tool calls 4, 4, 6 at 1100 tokens and $0.1 each; 2 per evaluation.
    assert glance["anthropic:beta"] == ["anthropic:beta", "3", "3.0000 (2.9000-3.1000)", "2 (1-2)", "4 (2-4)",
                                        f"{40 / 3600:.4f} ({20 / 3600:.4f}-{40 / 3600:.4f})", "4,400 (4,400-6,600)",
                                        "$0.4000 ($0.4000-$0.6000)", "2", "budget x3"]
    assert list(glance) == ["model", "anthropic:beta", "openai:alpha"]  # best median first

    verdicts = [line for line in body.splitlines() if line.startswith("- ")]
    # beta: (3.1 - 2.9) / 3.0 = 6.7% -> variable; alpha: (2.0 - 0.8) / 1.3 = 92.3% -> erratic
    assert verdicts[0] == ("- anthropic:beta: 1st of 2 by median best: median best 3.0000 (range 2.9000-3.1000, "
                           "a pass in 3 of 3 runs); variable: spread 6.7% of the median; median $0.4000 and 4,400 "
                           "tokens per run, 2 tool calls per evaluation; traps caught it in 1 of 3 runs "
                           "(correctness: R2 1/3).")
    assert verdicts[1].startswith("- openai:alpha: 2nd of 2 by median best: median best 1.3000 (range 0.8000-2.0000")
    assert "erratic: spread 92.3% of the median" in verdicts[1]
    assert ("traps caught it in 3 of 3 runs (forbidden: path escape 2/3, gate: host-read 1/3, gate: import 2/3, "
            "correctness: R2 1/3, correctness: hidden 1/3).") in verdicts[1]

    # per workload: the synthetic best has W1 = s / 1.1, W2 = s, W3 = s * 1.1
    work = table(body, "workload")
    assert work["W2"][1:] == ["3.0000 (2.9000-3.1000) N=3", "1.3000 (0.8000-2.0000) N=3"]
    assert work["W1"][2] == f"{1.3 / 1.1:.4f} ({0.8 / 1.1:.4f}-{2.0 / 1.1:.4f}) N=3"

    # traps: alpha's forbidden reads in runs 1 (once) and 3 (twice); the gate's import rule in runs 1 and 3
    alpha = table(body, "trap (openai:alpha)")
    assert alpha["forbidden: path escape"] == ["forbidden: path escape", "2 of 3", "3", "0 of 3"]
    assert alpha["gate: import"] == ["gate: import", "2 of 3", "2", "0 of 3"]
    assert alpha["gate: host-read"] == ["gate: host-read", "1 of 3", "1", "0 of 3"]
    assert alpha["correctness: hidden"] == ["correctness: hidden", "1 of 3", "1", "0 of 3"]
    assert alpha["correctness: R2"] == ["correctness: R2", "1 of 3", "1", "1 of 3"]  # it caught beta's run 2 too
    beta = table(body, "trap (anthropic:beta)")
    assert beta["gate: import"] == ["gate: import", "0 of 3", "0", "2 of 3"]
    assert beta["correctness: R2"] == ["correctness: R2", "1 of 3", "1", "1 of 3"]

    stability = table(body, "model")  # the first "model" table is at a glance; stability is the last
    stability = {r[0]: r for r in [t for t in tables(body) if t[0][0] == "model"][-1]}
    assert stability["openai:alpha"] == ["openai:alpha", "2.0000, 0.8000, 1.3000", "1.2000", "92.3%", "1, 0, 0",
                                         "0, 1, 0"]
    assert stability["anthropic:beta"][1:4] == ["3.0000, 2.9000, 3.1000", "0.2000", "6.7%"]


def test_scores_of_different_kinds_and_gpu_models_are_never_pooled(runs, capsys):
    assert main(["compare", *map(str, runs), "--markdown"]) == 0
    parts = sections(capsys.readouterr().out)
    h100 = parts["rmsnorm, GPU (NVIDIA H100) scores"]
    assert table(h100, "model")["openai:alpha"][1:3] == ["1", "1.5000"]
    assert table(h100, "trap (openai:alpha)")["timing: integrity"][1:3] == ["1 of 1", "1"]
    assert "the only model here" in h100 and "anthropic:beta" not in h100
    assert table(parts["rmsnorm, GPU (NVIDIA A100) scores"], "model")["openai:alpha"][1:3] == ["1", "1.2000"]
    simulated = parts["rmsnorm, simulated (sm_90) scores: simulated time ratios, not measured on a GPU"]
    assert table(simulated, "model")["anthropic:beta"][1:3] == ["1", "2.5000"]
    # none of them moved the interpreter medians (checked above: 1.3 and 3.0 over 3 runs each)
    assert table(parts[INTERP], "model")["openai:alpha"][1] == "3"


def test_logs_written_before_the_facts_were_recorded_read_the_same(tmp_path):
    new = inspect.metrics(inspect.load(make_run(tmp_path / "new", ALPHA_RUNS[0])))
    old_spec = RunSpec(**{**ALPHA_RUNS[0].__dict__, "facts": False})
    old_dir = make_run(tmp_path / "old", old_spec)
    assert '"traps":[' not in (old_dir / "trajectory.jsonl").read_text()  # null: read as absent
    old = inspect.metrics(inspect.load(old_dir))
    assert old.traps == new.traps == {"forbidden: path escape": 1, "gate: host-read": 1, "gate: import": 1}
    assert old.workloads == new.workloads and new.workloads["W2"] == 2.0
    assert old.failed_by_phase == new.failed_by_phase == {"gate": 1}


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.cells, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        if tag not in ("meta",):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open[-5:], tag)
        self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1] == "td":
            self.cells.append(data)


def test_html_report_holds_the_same_figures_and_is_well_formed(runs, tmp_path, capsys):
    out = tmp_path / "board.html"
    assert main(["compare", *map(str, runs), "--html", "-o", str(out)]) == 0
    parser = Tags()
    parser.feed(out.read_text())
    assert parser.open == [] and parser.scripts == 0
    assert "1.3000 (0.8000-2.0000)" in parser.cells and "3.25 (3-3.67)" in parser.cells
    assert "NOT GPU speedups" in out.read_text()
    assert main(["compare", *map(str, runs), "-o", str(out)]) == 2  # -o needs a report format
    assert "add --markdown or --html" in capsys.readouterr().err
