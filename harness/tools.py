"""The agent's tools, confined to the workspace. Misuse becomes an error message, never a crash.

Every tool is a function registered in TOOLS by the `tool` decorator (its spec, and the file it
changes when it changes one); a driver (kopt's loop, the MCP server) offers `specs()` and calls
`ToolBox.execute`, recording through harness.recorder. Adding a tool: one decorated function.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kopt.agent.messages import ToolCall, ToolSpec
from kopt.harness import events, traps
from kopt.harness.candidates import Candidate, CandidateStore, score
from kopt.harness.fold import Fold
from kopt.harness.trajectory import write_atomic
from kopt.harness.workspace import NOTES, Forbidden, ToolError, Workspace
from kopt.verifier.verdict import CompileReport, Verdict

MAX_OUTPUT_CHARS = 60_000
MAX_NOTE_CHARS = 20_000
HISTORY_PAGE = 20  # candidates per page of the history tool
LEADERBOARD = 5  # best candidates in the leaderboard, which also lists the latest evaluations
LATEST = 3

EvaluateFn = Callable[[str, int], Verdict]  # (source, candidate id) -> Verdict
CompileFn = Callable[[str], CompileReport]
RecordFn = Callable[[events.Base], Any]  # the recorder: evaluation and forbidden events
STR, INT = {"type": "string"}, {"type": "integer"}


@dataclass
class ToolOutcome:
    content: str
    is_error: bool = False
    forbidden: str | None = None
    finish: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # structured facts behind `content`


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    run: Callable[..., ToolOutcome]  # run(box, **arguments)
    changes: Callable[["ToolBox", dict[str, Any]], Path] | None = None  # the file a call changes (exact resume)


TOOLS: dict[str, Tool] = {}


def tool(name: str, description: str, properties: dict[str, Any] | None = None, required: tuple[str, ...] = (),
         changes: Callable[["ToolBox", dict[str, Any]], Path] | None = None) -> Callable:
    """Register a tool: `@tool(name, description, {arg: json schema}, required)` over `fn(box, **args)`."""
    spec = ToolSpec(name=name, description=description, parameters={
        "type": "object", "properties": properties or {}, "required": list(required), "additionalProperties": False})

    def register(fn: Callable[..., ToolOutcome]) -> Callable[..., ToolOutcome]:
        TOOLS[name] = Tool(spec, fn, changes)
        return fn
    return register


def sha_of(path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


class ToolBox:
    def __init__(self, ws: Workspace, store: CandidateStore, evaluate: EvaluateFn, compile_report: CompileFn,
                 record: RecordFn, approve: Callable[[Candidate], bool] | None = None, logged: set[int] | None = None,
                 fold: Fold | None = None, agent: int | None = None):
        """`fold`: the run's (lineage, latest evaluations), or in a run of several agents this agent's;
        `logged`: candidates whose evaluation event is in the log (default: the fold's)."""
        self.ws, self.store, self.agent = ws, store, agent
        self.fold = fold if fold is not None else Fold()
        self.logged = logged if logged is not None else self.fold.evaluated
        self.evaluate_fn, self.compile_fn, self.record, self.approve = evaluate, compile_report, record, approve
        self.tool_index = 0  # tool calls so far, set by the recorder for the candidate's metadata

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in TOOLS.values()]

    def target_of(self, call: ToolCall) -> Path | None:
        """The file a mutating call changes (for exact resume after an interruption), else None."""
        entry = TOOLS.get(call.name)
        if entry is None or entry.changes is None:
            return None
        try:
            return entry.changes(self, call.parsed())
        except (ValueError, ToolError, Forbidden):
            return None

    def execute(self, call: ToolCall) -> ToolOutcome:
        entry = TOOLS.get(call.name)
        if entry is None:
            return ToolOutcome(f"unknown tool {call.name!r}; tools: {', '.join(TOOLS)}", True)
        try:
            args = call.parsed()
            check_args(entry.spec, args)
            return entry.run(self, **args)
        except Forbidden as exc:
            self.record(events.Forbidden(call_id=call.id, name=call.name, detail=str(exc), kind=exc.kind))
            return ToolOutcome(f"refused: {exc}. This attempt was recorded.", True, forbidden=str(exc))
        except (ToolError, ValueError) as exc:
            return ToolOutcome(f"error: {exc}", True)

    def parent_of(self, candidate: Candidate) -> int | None:
        """The candidate the kernel file was derived from (the fold's lineage: after a revert, the
        reverted-to candidate; else the last evaluated source); None: the baseline."""
        parent = self.fold.derived_of(self.agent)
        return parent if parent != candidate.id else self.fold.parent_of(candidate.id)  # re-verified: its own

    def latest(self) -> list[int]:
        """The candidates of the last few evaluations, most recent last."""
        seen: list[int] = []
        for e in reversed(self.fold.evaluations[-4 * LATEST:]):
            if e.candidate not in seen:
                seen.insert(0, e.candidate)
            if len(seen) == LATEST:
                break
        return seen


def check_args(spec: ToolSpec, args: dict[str, Any]) -> None:
    props, required = spec.parameters["properties"], spec.parameters["required"]
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise ToolError(f"{spec.name} has no argument {unknown[0]!r}; it takes {', '.join(props) or 'none'}")
    missing = [r for r in required if r not in args]
    if missing:
        raise ToolError(f"{spec.name} needs argument {missing[0]!r}")
    for name, value in args.items():
        want = props[name]["type"]
        ok = isinstance(value, str) if want == "string" else isinstance(value, int) and not isinstance(value, bool)
        if not ok and not (want == "integer" and value is None and name not in required):
            raise ToolError(f"argument {name!r} of {spec.name} must be a {want}, got {type(value).__name__}")


def _path(box: ToolBox, args: dict[str, Any]) -> Path:
    return box.ws.resolve(args.get("path"), write=True)


# ---- the tools, in the order they are offered

@tool("read_file", "Read a workspace file (the kernel, NOTES.md, instruction.md), optionally a 1-based inclusive "
      "line range.", {"path": STR, "start_line": INT, "end_line": INT}, ("path",))
def read_file(box: ToolBox, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolOutcome:
    full = box.ws.resolve(path)
    lines = full.read_text().splitlines()
    lo = max(1, start_line or 1)
    hi = min(len(lines), end_line or len(lines))
    if lo > max(hi, 1) and lines:
        raise ToolError(f"{path} has {len(lines)} lines; start_line {lo} is past the end")
    body = "\n".join(lines[lo - 1:hi])
    if len(body) > MAX_OUTPUT_CHARS:
        body = body[:MAX_OUTPUT_CHARS] + "\n[... cut: read a smaller line range]"
    return ToolOutcome(f"{path} (lines {lo}-{hi} of {len(lines)}):\n{body}",
                       data={"path": path, "start_line": lo, "end_line": hi, "lines": len(lines)})


@tool("write_file", "Replace the whole content of the kernel file or NOTES.md.", {"path": STR, "content": STR},
      ("path", "content"), changes=_path)
def write_file(box: ToolBox, path: str, content: str) -> ToolOutcome:
    full = box.ws.resolve(path, write=True)
    write_atomic(full, content)
    return ToolOutcome(f"wrote {path} ({len(content.splitlines())} lines)")


@tool("edit_file", "Replace one exact, unique occurrence of `old` with `new` in the kernel file or NOTES.md.",
      {"path": STR, "old": STR, "new": STR}, ("path", "old", "new"), changes=_path)
def edit_file(box: ToolBox, path: str, old: str, new: str) -> ToolOutcome:
    full = box.ws.resolve(path, write=True)
    text = full.read_text()
    if not old:
        raise ToolError("old must be non-empty text copied exactly from the file")
    count = text.count(old)
    if count == 0:
        first = old.strip().splitlines()[0] if old.strip() else old
        hint = [i + 1 for i, line in enumerate(text.splitlines()) if first.strip() and first.strip() in line]
        where = f" (its first line appears at line {hint[0]}: check whitespace and the following lines)" if hint else ""
        raise ToolError(f"old text not found in {path}{where}; read the file and copy the text exactly")
    if count > 1:
        raise ToolError(f"old text occurs {count} times in {path}; include more surrounding lines to make it unique")
    line = text[:text.index(old)].count("\n") + 1
    write_atomic(full, text.replace(old, new, 1))
    return ToolOutcome(f"edited {path}: replaced {len(old.splitlines())} line(s) at line {line} with "
                       f"{len(new.splitlines())} line(s)")


@tool("evaluate", "Snapshot the kernel file as a candidate and run the verifier: static gate, compile, correctness "
      "against the reference, timing against the baseline. Returns the verdict and leaderboard.",
      {"note": {"type": "string", "description": "what this candidate tries"}})
def evaluate(box: ToolBox, note: str | None = None) -> ToolOutcome:
    source = box.ws.kernel.read_text()
    with box.store.claim(source):  # (agents of one run: the same source is verified and logged once)
        return _evaluate(box, source, note)


def _evaluate(box: ToolBox, source: str, note: str | None) -> ToolOutcome:
    candidate = box.store.snapshot(source)
    done = candidate.verdict is not None and candidate.verdict.status != "error"  # an infra error may be retried
    if done and candidate.id in box.logged:
        box.record(events.EvaluationCached(candidate=candidate.id))
        return ToolOutcome(f"candidate {candidate.name} already has this exact source; not re-verified.\n"
                           + summarize(candidate, box.store, box.latest()), data=verdict_data(candidate, cached=True))
    if not done:  # (a verdict on disk whose event a crash cut off is logged now, not verified again)
        if box.approve is not None and not box.approve(candidate):
            return ToolOutcome("the operator declined this evaluation; change the kernel or try again later", True)
        verdict = box.evaluate_fn(source, candidate.id)
        meta = {"note": note or "", "tool_index": box.tool_index, "parent": box.parent_of(candidate)}
        if box.agent is not None:
            meta["agent"] = box.agent
        box.store.record(candidate.id, verdict, meta)
    verdict = candidate.verdict
    value, _ = score(verdict)
    box.record(events.Evaluation(candidate=candidate.id, sha256=candidate.sha256, status=verdict.status, score=value,
                                 kind=verdict.timing.kind if verdict.timing else None,
                                 note=candidate.meta.get("note", ""), **traps.facts(verdict)))
    box.logged.add(candidate.id)
    return ToolOutcome(summarize(candidate, box.store, box.latest()), is_error=not verdict.passed,
                       data=verdict_data(candidate, cached=False))


def verdict_data(candidate: Candidate, cached: bool) -> dict[str, Any]:
    """What `evaluate` tells a policy, as data: the same facts its text says."""
    v = candidate.verdict
    kernels = v.compile.kernels if v.compile and v.compile.ok else []
    return {"candidate": candidate.id, "cached": cached, "status": v.status, "score": score(v)[0],
            "spill_bytes": sum(k.spill_bytes or 0 for k in kernels)}


@tool("compile_report", "Compile the current kernel for the target GPU without checking it: registers, spills and "
      "shared memory per kernel.")
def compile_report(box: ToolBox) -> ToolOutcome:
    report = box.compile_fn(box.ws.kernel.read_text())
    return ToolOutcome(format_compile(report), is_error=not report.ok,
                       data={"ok": report.ok, "spill_bytes": sum(k.spill_bytes or 0 for k in report.kernels)})


@tool("history", f"Every evaluated candidate, oldest first, {HISTORY_PAGE} per page: id, the candidate it was derived "
      "from, status, score, per-workload numbers, full note. Without `page`, the latest page.", {"page": INT})
def history(box: ToolBox, page: int | None = None) -> ToolOutcome:
    items = sorted(box.store.items.values(), key=lambda c: c.id)
    if not items:
        return ToolOutcome("no candidates evaluated yet")
    pages = (len(items) + HISTORY_PAGE - 1) // HISTORY_PAGE
    if page is not None and not 1 <= page <= pages:
        raise ToolError(f"page {page} does not exist: there {'is' if pages == 1 else 'are'} {pages} "
                        f"page{'s' if pages > 1 else ''} of {HISTORY_PAGE} candidates")
    page = page or pages
    shown = items[(page - 1) * HISTORY_PAGE:page * HISTORY_PAGE]
    label = next((score(c.verdict)[1] for c in items if score(c.verdict)[0] is not None), "")
    lines = [f"{len(items)} candidates; {shown[0].name}-{shown[-1].name} shown (page {page} of {pages}"
             + ("; history(page=N) for others" if pages > 1 else "") + ")."
             + (f" Scores: {label}." if label else "") + " Format: id <- parent, status, score, per-workload, note."]
    lines += [history_line(c) for c in shown]
    lines.append(leaderboard_text(box.store, box.latest()))
    return ToolOutcome("\n".join(lines))


def history_line(c: Candidate) -> str:
    parent = c.meta.get("parent")
    head = f"{c.name} <- {parent:04d}" if isinstance(parent, int) else f"{c.name} <- baseline"
    v = c.verdict
    if v is None:
        return f"{head}  not evaluated (interrupted; evaluate again to verify it)"
    value, _ = score(v)
    parts = [head, v.status]
    if value is not None:
        parts.append(f"{value:.4f}")
        if v.timing is not None and v.timing.workloads:
            parts.append(" ".join(f"{w.workload} {w.speedup:.3f}" for w in v.timing.workloads))
    elif v.reason:
        parts.append(f"({v.phase or v.status}) {' '.join(v.reason.split())[:300]}")
    note = " ".join((c.meta.get("note") or "").split())
    return "  ".join(parts) + (f"  note: {note}" if note else "")


@tool("revert", "Restore an evaluated candidate's source into the kernel file.", {"candidate": INT}, ("candidate",),
      changes=lambda box, args: box.ws.kernel)
def revert(box: ToolBox, candidate: int) -> ToolOutcome:
    if candidate not in box.store.items:
        raise ToolError(f"no candidate {candidate}; evaluated: {', '.join(map(str, sorted(box.store.items))) or 'none'}")
    write_atomic(box.ws.kernel, box.store.path(candidate).read_text())
    return ToolOutcome(f"restored candidate {candidate:04d} into {box.ws.config.editable_file}")


@tool("notes", "Append text to NOTES.md (your notes survive context resets and resumes).", {"text": STR}, ("text",),
      changes=lambda box, args: box.ws.notes)
def notes(box: ToolBox, text: str) -> ToolOutcome:
    if len(text) > MAX_NOTE_CHARS:
        raise ToolError(f"a note may hold at most {MAX_NOTE_CHARS} characters; summarise")
    with open(box.ws.notes, "a") as f:
        f.write(text.rstrip("\n") + "\n")
    return ToolOutcome(f"appended {len(text)} characters to {NOTES}")


@tool("finish", "End the run with a summary of what was achieved. `candidate`: the passing candidate to deliver "
      "as best.py (default: the best GPU speedup; without GPU timing, the latest passing candidate).",
      {"summary": STR, "candidate": INT}, ("summary",))
def finish(box: ToolBox, summary: str, candidate: int | None = None) -> ToolOutcome:
    if candidate is not None:
        chosen = box.store.items.get(candidate) if isinstance(candidate, int) else None
        if chosen is None or chosen.verdict is None or not chosen.verdict.passed:
            passing = [c.name for c in list(box.store.items.values()) if c.verdict is not None and c.verdict.passed]
            raise ToolError(f"candidate {candidate!r} did not pass (or does not exist): name a passing one "
                            f"({', '.join(passing[-10:]) or 'none yet'}), or omit it")
        box.store.write_best(candidate, "named in finish")
    return ToolOutcome("run finished", finish=summary or "(no summary)")


def format_compile(report: CompileReport) -> str:
    if not report.ok:
        return f"compile for {report.target} failed: {report.error}"
    rows = [f"compiled for {report.target} (shared memory limit {report.shared_limit_bytes} B):"]
    for k in report.kernels:
        rows.append(f"  {k.specialization or k.name}" + (f" (first compiled for case {k.case})" if k.case else "")
                    + f": {k.num_warps} warps, {k.num_stages} stages, registers {k.registers}, "
                    f"spill {k.spill_bytes} B, shared {k.shared_bytes} B")
    if report.launches or report.launch_errors:
        from kopt.verifier.launches import render
        rows.append("what the GPU workloads launch (dry run on meta tensors, compiled for the target):")
        rows.append(render(report.launches, report.launch_errors))
    return "\n".join(rows)


def summarize(candidate: Candidate, store: CandidateStore, latest: list[int] | None = None) -> str:
    v = candidate.verdict
    assert v is not None
    lines = [f"candidate {candidate.name}: {v.status.upper()}" + (f" in {v.phase}" if v.phase else "")]
    if v.reason:
        lines.append(f"reason: {v.reason[:3000]}")
    failing = [c for c in v.cases if not c.passed][:5]
    for c in failing:
        lines.append(f"  failed: {'hidden case' if c.hidden else c.case} {c.dtype}: {(c.reason or '')[:300]}")
    if v.compile and v.compile.ok:
        lines.append(format_compile(v.compile))
    if v.timing and v.passed:
        t = v.timing
        if t.geomean_speedup is not None:
            lines.append(f"GPU geomean speedup {t.geomean_speedup:.4f}x (noise band +-{t.noise_band:.1%}): " +
                         ", ".join(f"{w.workload} {w.speedup:.3f}x" + (f" (SOL {w.sol_fraction:.0%})"
                                                                        if w.sol_fraction else "")
                                   for w in t.workloads))
        else:
            ratio = t.simulated_ratio if t.simulated_ratio is not None else t.interpreter_ratio
            band = f"A/A noise band +-{t.noise_band:.0%}; " if t.noise_band is not None else ""
            if ratio is not None:
                lines.append(f"{t.label} time ratio baseline/candidate {ratio:.4f} ({band}NOT a GPU speedup; no GPU "
                             "here: differences inside the noise band are noise)")
    if v.unverified:
        lines.append("not verified by this evaluation: " + "; ".join(v.unverified))
    if v.log_excerpt and not v.passed:
        lines.append("log excerpt:\n" + v.log_excerpt[-1500:])
    lines.append(leaderboard_text(store, latest))
    return "\n".join(lines)


def leaderboard_text(store: CandidateStore, latest: list[int] | None = None) -> str:
    """The best few candidates, then the latest evaluations that are not among them: bounded in size (notes
    shortened; the history tool has them whole)."""
    board = store.leaderboard(LEADERBOARD)
    if board:
        passing = sum(score(c.verdict)[0] is not None for c in list(store.items.values()))
        lines = [f"leaderboard ({score(board[0].verdict)[1]}), best {len(board)} of {passing} passing:"]
        lines += [f"  {entry(c)}" for c in board]
    else:
        lines = ["leaderboard: no passing candidate yet"]
    rest = [store.items[i] for i in latest or [] if i in store.items and store.items[i] not in board]
    if rest:
        lines.append("latest evaluations:")
        lines += [f"  {entry(c)}" for c in rest]
    return "\n".join(lines)


def entry(c: Candidate) -> str:
    value = score(c.verdict)[0]
    outcome = f"{value:.4f}" if value is not None else (c.verdict.status if c.verdict else "not evaluated")
    return f"{c.name} {outcome}" + (f"  {short(c.meta['note'], 100)}" if c.meta.get("note") else "")


def short(text: str, limit: int = 160) -> str:
    """`text` on one line, cut at a word boundary when longer than `limit` (full notes: the history tool)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit // 2 else flat[:limit]) + " ..."
