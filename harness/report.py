"""`kopt report`: one self-contained HTML file per run (no scripts, no network, plots inlined as SVG).

Best-so-far score against wall time, evaluations and tool calls; per-workload speedups of the
best candidate; the lineage of candidates; a diff of the best kernel against the baseline;
token and cost totals; the transcript message by message. A long run's transcript is capped
(its first and last messages are inlined, with a note) so the file stays quick to write and open.
"""

from __future__ import annotations

import difflib
import html
import io
import json
import os
import re
import time
from pathlib import Path

from kopt.harness import events as ev
from kopt.harness.inspect import CandidateRow, RunView, history, load, read_candidate
from kopt.harness.panel import describe
from kopt.harness.trajectory import Event
from kopt.verifier.verdict import INTERPRETER_LABEL

TRANSCRIPT_HEAD, TRANSCRIPT_TAIL = 300, 300  # messages inlined from each end of a longer transcript
MESSAGE_CHARS = 10_000  # per message; the rest stays in trajectory.jsonl
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1300px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}tr.best td{background:#e6f6e6;font-weight:600}tr.chain td{background:#f3fbf3}
tr.fail td{color:#a33}pre{background:#f7f7f7;padding:8px;overflow-x:auto;white-space:pre-wrap;margin:4px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}.note{color:#666;font-style:italic}
.msg{border-left:4px solid #ccc;padding:2px 10px;margin:8px 0}.system{border-color:#999}.user{border-color:#3a7}
.assistant{border-color:#37c}.tool{border-color:#c83}.event{border-color:#eee;color:#555;font-size:13px}
.role{font-weight:600;font-size:12px;text-transform:uppercase;color:#555}.add{color:#161;background:#e9f7e9}
.del{color:#a11;background:#fbeaea}.hunk{color:#55a}.warn{color:#a33;font-weight:600}summary{cursor:pointer}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def score_name(label: str) -> str:
    if not label:
        return "score"
    return f"{label} (not a GPU speedup)" if INTERPRETER_LABEL in label else label


# ---- plots (matplotlib, object API only: no pyplot, no global backend state)

def svg(figure) -> str:
    import matplotlib
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: small and searchable
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)  # RDF boilerplate


def progress_plots(view: RunView) -> list[tuple[str, str]]:
    from matplotlib.figure import Figure

    ylabel = score_name(view.label)
    plots = []
    axes = [("wall time (min)", lambda e: e.elapsed_s / 60, view.elapsed_s / 60),
            ("evaluations", lambda e: e.index, len(view.evaluations)),
            ("tool calls", lambda e: e.tool_calls, view.counters.tool_calls)]
    for xlabel, x_of, x_end in axes:  # the best-so-far line runs on to the end of the run
        fig = Figure(figsize=(4.3, 3.2))
        ax = fig.add_subplot()
        passed = [e for e in view.evaluations if e.score is not None]
        failed = [e for e in view.evaluations if e.score is None]
        xs, best, running = [], [], None
        for e in passed:  # the best so far is the fold's (harness.fold: new_best), never recomputed here
            running = e.score if e.new_best else running
            xs.append(x_of(e))
            best.append(running)
        if passed:
            ax.scatter([x_of(e) for e in passed], [e.score for e in passed], s=16 if len(passed) < 100 else 5,
                       color="#666", label="candidate")
            ax.step(xs + [x_end], best + [best[-1]], where="post", color="#1a7f37",
                    linewidth=2, label="best so far", zorder=4)
        if failed:
            ax.scatter([x_of(e) for e in failed], [0.02] * len(failed), marker="x", s=14, color="#c33",
                       transform=ax.get_xaxis_transform(), label="did not pass")
        ax.axhline(1.0, color="#888", linestyle=":", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"best so far vs {xlabel.split(' (')[0]}", fontsize=10)
        ax.grid(alpha=0.3)
        if passed or failed:
            ax.legend(fontsize=7, loc="best")
        plots.append((f"best so far against {xlabel}", svg(fig)))
    return plots


def workload_plot(row: CandidateRow) -> str:
    from matplotlib.figure import Figure

    names = list(row.workloads)
    fig = Figure(figsize=(6, 0.4 * len(names) + 1.2))
    ax = fig.add_subplot()
    values = [row.workloads[n] for n in names]
    ax.barh(names, values, color=["#1a7f37" if v >= 1 else "#c33" for v in values])
    ax.axvline(1.0, color="#555", linestyle=":")
    ax.invert_yaxis()
    ax.set_xlabel(score_name(row.label).replace("geomean ", ""), fontsize=8)
    ax.set_title(f"per-workload, candidate {row.id:04d}", fontsize=10)
    return svg(fig)


# ---- sections

def summary_section(view: RunView) -> str:
    c, (state, why) = view.counters, view.state()
    best = view.best
    rows = [("run", f"{view.run_id} ({view.root.name})"), ("model", view.model), ("task", view.task),
            ("state", f"{state}: {why}"), ("elapsed", f"{view.elapsed_s / 60:.1f} min"),
            ("tool calls", c.tool_calls), ("evaluations", f"{c.evaluations} ({c.failed_evaluations} did not pass)"),
            ("best", f"candidate {best.candidate:04d}: {best.score:.4f} {score_name(best.label)}, found at "
                     f"{best.elapsed_s / 60:.1f} min, tool call {best.tool_calls}, evaluation {best.index}"
             if best else "no passing candidate"),
            *([("best found by", view.best_found())] if view.best_found() else []),
            ("tokens", f"{c.input_tokens:,} in, {c.output_tokens:,} out, {c.input_tokens + c.output_tokens:,} total"),
            ("cost", f"${c.cost_usd:.4f}"), ("model calls", f"{c.model_responses} ({c.retries} retried attempts)"),
            ("redesigns / stall warnings", f"{view.redesigns} / {view.stall_warnings}"),
            ("forbidden attempts", c.forbidden), ("resumes", view.resumes)]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table>{body}</table>"


def agents_section(view: RunView) -> str:
    """A run of several agents: each one's evaluations, best and end ('' for a one-agent run)."""
    agents = view.agents()
    if not agents:
        return ""
    best = view.best
    rows = []
    for a in agents:
        mine = (f"{a.best.candidate:04d}: {a.best.score:.4f}, found at {a.best.elapsed_s / 60:.1f} min"
                if a.best else "no passing candidate")
        css = " class=best" if best is not None and best.agent == a.agent else ""
        end = a.state + (f" ({a.end[1].splitlines()[0][:300]})" if a.end and a.end[1] else "")
        rows.append(f"<tr{css}><td>agent {a.agent}</td><td>{a.evaluations}</td><td>{a.failed}</td>"
                    f"<td>{esc(mine)}</td><td>{esc(end)}</td></tr>")
    found = (f"The run's best, candidate {best.candidate:04d}, was found by {esc(view.best_found())}."
             if view.best_found() else "No agent has a passing candidate.")
    return (f"<h2>Agents ({len(agents)})</h2><p>{found}</p><table><tr><th>agent</th><th>evaluations</th>"
            f"<th>did not pass</th><th>its best</th><th>end</th></tr>{''.join(rows)}</table>")


def plots_section(view: RunView) -> str:
    try:
        plots = progress_plots(view)
    except ImportError:
        return "<h2>Progress</h2><p class=note>plots need matplotlib: pip install 'kopt[report]'</p>"
    figures = "".join(f"<figure aria-label='{esc(title)}'>{body}</figure>" for title, body in plots)
    label = view.label
    caveat = (f"<p class=warn>Scores are {esc(INTERPRETER_LABEL)} time ratios (baseline / candidate under the "
              "Triton interpreter): they say nothing about GPU speed.</p>" if INTERPRETER_LABEL in label else "")
    return f"<h2>Progress</h2>{caveat}<div class=plots>{figures}</div>"


def workloads_section(view: RunView, rows: list[CandidateRow]) -> str:
    best = next((r for r in rows if r.best), None)
    if best is None:
        return "<h2>Best candidate per workload</h2><p class=note>no passing candidate</p>"
    verdict, _ = read_candidate(view.root / "candidates" / f"{best.id:04d}.json")
    timings = verdict.timing.workloads if verdict and verdict.timing else []
    table = "".join(f"<tr><td>{esc(w.workload)}</td><td>{w.baseline_ms:.4f}</td><td>{w.candidate_ms:.4f}</td>"
                    f"<td>{w.speedup:.4f}</td><td>{esc(w.label)}</td><td>{esc('; '.join(w.flags))}</td></tr>"
                    for w in timings)
    plot = ""
    if best.workloads:
        try:
            plot = f"<figure aria-label='per-workload speedups'>{workload_plot(best)}</figure>"
        except ImportError:
            plot = "<p class=note>the bar chart needs matplotlib: pip install 'kopt[report]'</p>"
    return (f"<h2>Best candidate per workload: {best.id:04d}</h2>{plot}<table><tr><th>workload</th><th>baseline ms"
            f"</th><th>candidate ms</th><th>speedup</th><th>label</th><th>flags</th></tr>{table}</table>")


def lineage_section(rows: list[CandidateRow], several: bool = False) -> str:
    parents = {r.id: r.parent for r in rows}
    chain, node = [], next((r.id for r in rows if r.best), None)
    while node is not None and node not in chain:
        chain.append(node)
        node = parents.get(node)
    chain_ids = [f"{c:04d}" for c in reversed(chain)]
    if len(chain_ids) > 30:  # a long run's chain: its ends
        chain_ids = chain_ids[:10] + [f"... ({len(chain_ids) - 30} more) ..."] + chain_ids[-20:]
    path = " &rarr; ".join(chain_ids)
    body = []
    for r in rows:
        css = "best" if r.best else "chain" if r.id in chain else "fail" if r.status != "ok" else ""
        compile_ = f"{r.max_registers if r.max_registers is not None else '-'} / " \
                   f"{r.total_spill_bytes if r.total_spill_bytes is not None else '-'} / " \
                   f"{r.max_shared_bytes if r.max_shared_bytes is not None else '-'}"
        what = r.note + (f" [{r.phase or r.status}: {r.reason[:300]}]" if r.status != "ok" else "")
        agent = f"<td>{'-' if r.agent is None else r.agent}</td>" if several else ""
        body.append(f"<tr class='{css}'><td>{r.id:04d}{' *' if r.new_best else ''}</td>{agent}"
                    f"<td>{'-' if r.parent is None else f'{r.parent:04d}'}</td>"
                    f"<td>{'-' if r.elapsed_s is None else f'{r.elapsed_s / 60:.1f}'}</td>"
                    f"<td>{'-' if r.tool_index is None else r.tool_index}</td><td>{esc(r.status)}</td>"
                    f"<td>{fmt(r.score)}</td><td>{compile_}</td><td>{esc(what)}</td></tr>")
    return (f"<h2>Lineage of candidates</h2><p>Ancestry of the best (parent links): {path or 'none'}. "
            "<code>*</code> marks a candidate that raised the best so far.</p><table><tr><th>id</th>"
            f"{'<th>agent</th>' if several else ''}<th>parent</th>"
            "<th>min</th><th>tool call</th><th>status</th><th>score</th><th>regs / spill B / shared B</th>"
            f"<th>note</th></tr>{''.join(body)}</table>")


def rescore_section(view: RunView) -> str:
    """`kopt rescore` results beside the run's own scores, each with its device (never pooled with them)."""
    from kopt.harness.rescore import read
    found = read(view.root)
    if not found:
        return ""
    rows = "".join(f"<tr><td>{r.candidate:04d}</td><td>{esc(r.where)}</td><td>{esc(r.status)}</td>"
                   f"<td>{fmt(r.score)}</td><td>{esc(r.label)}</td>"
                   f"<td>{esc(', '.join(f'{k} {v:.3f}' for k, v in r.workloads.items()))}</td>"
                   f"<td>{esc(time.strftime('%Y-%m-%d %H:%M', time.localtime(r.time)))} on {esc(r.host)}</td></tr>"
                   for r in found)
    return ("<h2>Rescored on other devices</h2><p>`kopt rescore` re-evaluated these candidates; the run's own "
            "verdicts are unchanged.</p><table><tr><th>candidate</th><th>device</th><th>status</th><th>score</th>"
            f"<th>what the score is</th><th>per workload</th><th>when</th></tr>{rows}</table>")


def baseline_source(view: RunView) -> tuple[str, str] | None:
    """The task's baseline.py if this machine has the task, else the first candidate."""
    task_baseline = Path(view.config.get("task", "")) / "baseline.py"
    if view.config.get("task") and task_baseline.is_file():
        return str(task_baseline), task_baseline.read_text()
    first = view.root / "candidates" / "0001.py"
    return ("candidates/0001.py", first.read_text()) if first.is_file() else None


def diff_section(view: RunView, rows: list[CandidateRow]) -> str:
    best = next((r for r in rows if r.best), None)
    base = baseline_source(view)
    if best is None or base is None:
        return "<h2>Best kernel against the baseline</h2><p class=note>nothing to compare</p>"
    name, text = base
    best_text = (view.root / "candidates" / f"{best.id:04d}.py").read_text()
    lines = list(difflib.unified_diff(text.splitlines(), best_text.splitlines(), name,
                                      f"candidates/{best.id:04d}.py", lineterm=""))
    css = {"+": "add", "-": "del", "@": "hunk"}
    body = "\n".join(f"<span class={css.get(line[:1], 'ctx')}>{esc(line)}</span>" for line in lines)
    return (f"<h2>Best kernel ({best.id:04d}) against the baseline ({esc(name)})</h2>"
            f"<pre>{body or 'identical'}</pre>")


# ---- transcript

def clip(text: str) -> str:
    if len(text) <= MESSAGE_CHARS:
        return esc(text)
    return esc(text[:MESSAGE_CHARS]) + f"\n<span class=note>... {len(text) - MESSAGE_CHARS:,} more characters in " \
                                       "trajectory.jsonl</span>"


def message_html(event: Event) -> str:
    who = "" if event.agent is None else f", agent {event.agent}"  # a run of several agents: whose it is
    stamp = f"<span class=note>[{event.elapsed_s:.1f} s, #{event.seq}{who}]</span>"
    if isinstance(event, ev.RunStart):
        return "".join(f"<div class='msg {esc(m.role)}'><div class=role>{esc(m.role)} {stamp}</div><details>"
                       f"<summary>{esc((m.content or '')[:120])}</summary><pre>{clip(m.content or '')}</pre>"
                       "</details></div>" for m in event.messages)
    if isinstance(event, ev.ModelResponseEvent):
        m, usage = event.response.message, event.response.usage
        calls = "".join(f"<details><summary>tool call <b>{esc(c.name)}</b> {esc(c.arguments[:100])}</summary>"
                        f"<pre>{clip(pretty(c.arguments))}</pre></details>" for c in m.tool_calls)
        reasoning = (f"<details><summary>reasoning</summary><pre>{clip(m.reasoning)}</pre></details>"
                     if m.reasoning else "")
        return (f"<div class='msg assistant'><div class=role>assistant {stamp} <span class=note>"
                f"{usage.input_tokens} in / {usage.output_tokens} out tokens</span></div>"
                f"{reasoning}<pre>{clip(m.content or '')}</pre>{calls}</div>")
    if isinstance(event, ev.ToolResult):
        first = event.content.split("\n", 1)[0][:140]
        return (f"<div class='msg tool'><div class=role>tool result {stamp}</div><details><summary><b>"
                f"{esc(event.name)}</b> &rarr; {esc(event.outcome)}: {esc(first)}</summary>"
                f"<pre>{clip(event.content)}</pre></details></div>")
    if isinstance(event, ev.Compaction):
        summary = (f"<details><summary>summary</summary><pre>{clip(event.summary)}</pre></details>"
                   if event.summary else "")
        return (f"<div class='msg event'>{stamp} context compacted: {event.drop} messages dropped "
                f"({event.tokens_before} &rarr; {event.tokens_after} tokens){summary}</div>")
    if isinstance(event, ev.Redesign):
        return (f"<div class='msg event'>{stamp} <b>redesign {event.number}</b>: context restarted from "
                f"{'candidate %04d' % event.best if event.best else 'the baseline'} after {event.since_improvement} "
                "evaluations without improvement</div>")
    if isinstance(event, ev.UserMessage):
        return f"<div class='msg user'><div class=role>user {stamp}</div><pre>{clip(event.content)}</pre></div>"
    return f"<div class='msg event'>{stamp} {esc(describe(event))}</div>"


def pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=1, ensure_ascii=False)
    except ValueError:
        return arguments


def transcript_section(events: list[Event]) -> str:
    # calls show in their response; an evaluation's progress is for the live view
    shown = [e for e in events if e.type not in ("model_request", "tool_call", "evaluation_progress")]
    omitted = ""
    if len(shown) > TRANSCRIPT_HEAD + TRANSCRIPT_TAIL:
        gap = shown[TRANSCRIPT_HEAD:-TRANSCRIPT_TAIL]
        omitted = (f"<p class=warn>{len(gap):,} messages omitted here (events {gap[0].seq} to {gap[-1].seq}); "
                   "the full log is trajectory.jsonl, or `kopt export --atif`.</p>")
        shown = shown[:TRANSCRIPT_HEAD] + [None] + shown[-TRANSCRIPT_TAIL:]
    body = "".join(omitted if e is None else message_html(e) for e in shown)
    return f"<h2>Transcript</h2><p class=note>{len(events):,} events.</p>{body}"


def render(view: RunView) -> str:
    """The report's HTML; `view` must have been loaded with keep_events=True."""
    rows = history(view)
    sections = [summary_section(view), agents_section(view), plots_section(view), workloads_section(view, rows),
                rescore_section(view), lineage_section(rows, view.several_agents), diff_section(view, rows),
                transcript_section(view.events or [])]
    title = f"kopt run {view.run_id}"
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title><style>{CSS}</style>"
            f"</head><body><h1>{esc(title)}</h1><p class=note>{esc(view.model)} on {esc(view.task)}; written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>{''.join(sections)}</body></html>")


def write(root: Path, out: Path | None = None) -> Path:
    view = load(root, keep_events=True)
    out = Path(out or Path(root) / "report.html")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(view), encoding="utf-8")
    os.replace(tmp, out)
    return out
