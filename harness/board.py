"""`kopt compare --markdown | --html`: a per-model report over repeated runs, the way agent benchmarks report models.

One section per kind of score (GPU speedups of each GPU model, interpreter (CPU) time ratios,
simulated ratios), never pooled: models are ranked and compared with each other only inside a
section. Each section holds a verdict per model, "at a glance" (medians with spread and N), the
per-workload speedups of each run's best candidate, the traps that caught each model (and how
often they caught the others), and stability. Every figure comes from harness.inspect.compare,
i.e. from the fold of each run's events; this module only arranges and words them.

How a verdict is worded, so a reader can check it against the numbers it shows:
- rank: by median best score within the section (models with no passing run come last);
- steadiness: the relative spread of the bests, (max - min) / median: up to STEADY is steady, up
  to VARIABLE variable, beyond erratic; one run cannot say;
- cost: the median cost and tokens per run; traps: in how many runs any trap caught it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kopt.harness.inspect import KIND_NAMES, Group, Spread, spread
from kopt.harness.traps import FAMILIES, family

STEADY, VARIABLE = 0.05, 0.20
INTERPRETER, SIMULATED = KIND_NAMES["interpreter"], KIND_NAMES["simulated"]


# ---- figures

@dataclass
class Section:
    """Runs whose scores measure the same thing: one task, one kind, one GPU model."""

    task: str
    kind: str
    measured_on: str | None
    groups: list[Group] = field(default_factory=list)  # one per model, best median first

    @property
    def title(self) -> str:
        what = f"{self.kind} ({self.measured_on})" if self.measured_on else self.kind
        caveat = {INTERPRETER: ": Triton-interpreter time ratios on a CPU, NOT GPU speedups",
                  SIMULATED: ": simulated time ratios, not measured on a GPU"}.get(self.kind, "")
        return f"{self.task}, {what} scores{caveat}"


def sections(groups: list[Group]) -> list[Section]:
    found: dict[tuple[str, str, str], Section] = {}
    for g in groups:
        found.setdefault((g.task, g.kind, g.measured_on or ""), Section(g.task, g.kind, g.measured_on)).groups.append(g)
    for s in found.values():
        s.groups.sort(key=lambda g: (g.stats["best_score"].median is None, -(g.stats["best_score"].median or 0),
                                     g.model))
    return [found[k] for k in sorted(found)]


def rank(section: Section, group: Group) -> int | None:
    """1 + the models of the section with a strictly higher median best; None with no passing run."""
    mine = group.stats["best_score"].median
    if mine is None:
        return None
    return 1 + sum(1 for g in section.groups if (g.stats["best_score"].median or float("-inf")) > mine)


def relative_spread(s: Spread) -> float | None:
    if s.median is None or s.median == 0 or len([v for v in s.values if v is not None]) < 2:
        return None
    return (s.max - s.min) / s.median


def steadiness(group: Group) -> str:
    rel = relative_spread(group.stats["best_score"])
    if rel is None:
        return "steadiness unknown (fewer than 2 passing runs)"
    word = "steady" if rel <= STEADY else "variable" if rel <= VARIABLE else "erratic"
    return f"{word}: spread {rel:.1%} of the median"


@dataclass
class TrapRow:
    trap: str
    caught: int  # this model's runs it caught
    runs: int
    hits: int  # evaluations (or forbidden actions) it caught over those runs
    others: dict[str, tuple[int, int]]  # every other model of the section -> (runs caught, runs)


def runs_caught(group: Group, trap: str) -> tuple[int, int]:
    return sum(1 for r in group.runs if r.traps.get(trap)), len(group.runs)


def trap_rows(section: Section, group: Group) -> list[TrapRow]:
    """Every trap that caught any run of the section, so a model it never caught shows 0 of N."""
    seen = {t for g in section.groups for r in g.runs for t in r.traps}
    ordered = sorted(seen, key=lambda t: (FAMILIES.index(family(t)) if family(t) in FAMILIES else 9, t))
    return [TrapRow(t, *runs_caught(group, t), sum(r.traps.get(t, 0) for r in group.runs),
                    {g.model: runs_caught(g, t) for g in section.groups if g is not group}) for t in ordered]


def workload_spreads(section: Section) -> dict[str, dict[str, Spread]]:
    """workload -> model -> spread over runs of the best candidate's speedup on it."""
    names = list(dict.fromkeys(w for g in section.groups for r in g.runs for w in r.workloads))
    return {w: {g.model: spread([r.workloads.get(w) for r in g.runs]) for g in section.groups} for w in names}


# ---- words and numbers

def num(value: float | None, digits: int = 1) -> str:
    """Counts as integers (a median may end in .5), other figures to `digits` decimals."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def verbosity(value: float | None) -> str:
    return num(value, 2)


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def with_range(s: Spread, show=num) -> str:
    if s.median is None:
        return "-"
    return show(s.median) if s.min == s.max else f"{show(s.median)} ({show(s.min)}-{show(s.max)})"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def verdict(section: Section, group: Group) -> str:
    """One line per model, derived from the numbers it quotes."""
    best, n = group.stats["best_score"], len(group.runs)
    passed = sum(v is not None for v in best.values)
    place = rank(section, group)
    if place is None:
        head = f"no passing candidate in {'its one run' if n == 1 else f'any of its {n} runs'}"
    else:
        where = ("the only model here" if len(section.groups) == 1 else
                 f"{ordinal(place)} of {len(section.groups)} by median best")
        head = (f"{where}: median best {score(best.median)} (range {score(best.min)}-{score(best.max)}, "
                f"a pass in {passed} of {n} runs)")
        head += f"; {steadiness(group)}"
    cost, tokens = group.stats["cost_usd"].median, group.stats["tokens"].median
    calls = group.stats["tool_calls_per_eval"].median
    rows = [r for r in trap_rows(section, group) if r.caught]
    caught = sum(1 for r in group.runs if r.traps)
    traps = (f"traps caught it in {caught} of {n} runs (" + ", ".join(f"{r.trap} {r.caught}/{r.runs}" for r in rows)
             + ")" if caught else f"no trap caught it in {plural(n, 'run')}")
    return (f"{group.model}: {head}; median {usd(cost)} and {num(tokens)} tokens per run, "
            f"{verbosity(calls)} tool calls per evaluation; {traps}.")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---- the document: blocks rendered as Markdown or HTML

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


Block = tuple[str, str] | Table  # ("h1" | "h2" | "h3" | "p" | "li", text)


def document(groups: list[Group], reach: float) -> list[Block]:
    runs = sum(len(g.runs) for g in groups)
    models = sorted({g.model for g in groups})
    pct = f"{reach:.0%}"
    blocks: list[Block] = [
        ("h1", "kopt: models compared"),
        ("p", f"{runs} runs of {len(models)} models ({', '.join(models)}). Scores of different kinds (GPU, per GPU "
              "model, interpreter, simulated) are never pooled: each has its own section. Medians are over the runs "
              "that have the figure, with (min-max) (a run with no passing candidate has no best: each verdict says "
              "how many runs passed); \"to reach\" counts up to the first evaluation scoring at least "
              f"{pct} of the run's best. Verdicts rank by median best; steady means a spread (max - min) of at most "
              f"{STEADY:.0%} of the median, variable at most {VARIABLE:.0%}, erratic beyond.")]
    if not groups:
        blocks.append(("p", "no runs"))
    for s in sections(groups):
        blocks += section_blocks(s, pct)
    blocks += rescore_blocks(groups)
    blocks.append(("p", f"written {time.strftime('%Y-%m-%d %H:%M:%S')} by kopt compare"))
    return blocks


def rescore_blocks(groups: list[Group]) -> list[Block]:
    """`kopt rescore` results of the compared runs, each with its device; never pooled with any section."""
    from pathlib import Path

    from kopt.harness.rescore import read
    rows = [[g.model, r.run_id, f"{x.candidate:04d}", x.where, x.status, score(x.score), x.label]
            for g in groups for r in g.runs for x in read(Path(r.run_dir))]
    if not rows:
        return []
    return [("h2", "Rescored on other devices (kopt rescore): each score with its device, never pooled above"),
            Table(["model", "run", "candidate", "device", "status", "score", "what the score is"], rows)]


def section_blocks(s: Section, pct: str) -> list[Block]:
    blocks: list[Block] = [("h2", s.title), ("h3", "Verdict")]
    blocks += [("li", verdict(s, g)) for g in s.groups]
    st = lambda g, k: g.stats[k]  # noqa: E731
    blocks += [("h3", "At a glance"), Table(
        ["model", "N", "best score", f"evaluations to {pct}", f"tool calls to {pct}", f"hours to {pct}", "tokens",
         "cost", "tool calls per evaluation", "how runs ended"],
        [[g.model, str(len(g.runs)), with_range(st(g, "best_score"), score), with_range(st(g, "evals_to_reach")),
          with_range(st(g, "tool_calls_to_reach")), with_range(st(g, "hours_to_reach"), hours),
          with_range(st(g, "tokens")), with_range(st(g, "cost_usd"), usd), with_range(st(g, "tool_calls_per_eval"), verbosity),
          ", ".join(f"{end} x{k}" for end, k in sorted(g.ends.items()))] for g in s.groups])]
    spreads = workload_spreads(s)
    blocks.append(("h3", "Per workload: speedup of each run's best candidate, median (min-max) and N"))
    if spreads:
        blocks.append(Table(["workload", *(g.model for g in s.groups)],
                            [[w, *(f"{with_range(by[g.model], score)} N={sum(v is not None for v in by[g.model].values)}"
                                   for g in s.groups)] for w, by in spreads.items()]))
    else:
        blocks.append(("p", "no passing candidate in any run"))
    blocks.append(("h3", "Traps: which caught each model, and how often they caught the others"))
    for g in s.groups:
        rows = trap_rows(s, g)
        if not rows:
            blocks.append(("p", f"{g.model}: no trap caught any run of this section."))
            continue
        others = [o.model for o in s.groups if o is not g]
        blocks.append(Table(
            [f"trap ({g.model})", "runs caught", "times caught", *(f"runs of {o}" for o in others)],
            [[r.trap, f"{r.caught} of {r.runs}", str(r.hits), *(f"{r.others[o][0]} of {r.others[o][1]}" for o in others)]
             for r in rows]))
    blocks += [("h3", "Stability"), Table(
        ["model", "best score per run", "spread (max - min)", "relative spread", "stall warnings per run",
         "redesigns per run"],
        [[g.model, ", ".join(score(v) for v in st(g, "best_score").values),
          score(None if st(g, "best_score").median is None else st(g, "best_score").max - st(g, "best_score").min),
          "-" if relative_spread(st(g, "best_score")) is None else f"{relative_spread(st(g, 'best_score')):.1%}",
          ", ".join(num(v) for v in st(g, "stall_warnings").values),
          ", ".join(num(v) for v in st(g, "redesigns").values)] for g in s.groups])]
    if any(g.several_agents for g in s.groups):  # runs of several agents: how many, and who found each best
        blocks += [("h3", "Agents: runs of several agents, and which agent found each run's best"), Table(
            ["model", "run", "agents", "best found by", "best of each agent"],
            [[g.model, r.run_id, str(r.agents), "-" if r.agents <= 1 or r.best_agent is None else f"agent {r.best_agent}",
              ", ".join(f"agent {a} {score(v)}" for a, v in r.agent_bests.items()) or "-"]
             for g in s.groups for r in g.runs])]
    blocks.append(("p", "runs: " + "; ".join(f"{g.model}: " + ", ".join(r.run_id for r in g.runs) for g in s.groups)))
    return blocks


def markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Table):
            cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
            out += ["| " + " | ".join(map(cell, b.header)) + " |", "|" + "---|" * len(b.header)]
            out += ["| " + " | ".join(map(cell, row)) + " |" for row in b.rows]
            out.append("")
        elif b[0] == "li":
            out.append(f"- {b[1]}")
        else:
            prefix = {"h1": "# ", "h2": "## ", "h3": "### "}.get(b[0], "")
            if out and out[-1].startswith("- "):
                out.append("")
            out += [prefix + b[1], ""]
    return "\n".join(out).rstrip() + "\n"


def html(blocks: list[Block]) -> str:
    from kopt.harness.report import CSS, esc
    body, items = [], []
    for b in blocks + [("end", "")]:
        if not (isinstance(b, tuple) and b[0] == "li") and items:
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
            items = []
        if isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b[0] == "li":
            items.append(b[1])
        elif b[0] in ("h1", "h2", "h3", "p"):
            body.append(f"<{b[0]}>{esc(b[1])}</{b[0]}>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>kopt: models compared</title>"
            f"<style>{CSS}h3{{font-size:15px;margin-top:20px}}</style></head><body>{''.join(body)}</body></html>")
