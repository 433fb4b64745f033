"""Which trap caught a candidate or an action: the keys `kopt compare` counts per model.

Four families, each keyed "family: detail":
- forbidden: an action refused by the workspace, by kind ("forbidden: absolute path");
- gate: the static gate's rules a rejected kernel broke ("gate: host-read");
- correctness: the case classes it failed (a public case id, "hidden", "must-raise"), or
  "run failed" when its child crashed or timed out before any case result;
- timing: the timing-integrity checks of the GPU path ("timing: integrity"), or "run failed".
A verdict with status `error` is the verifier's or the machine's failure, never a trap.

The evaluate tool writes a verdict's facts (`facts`) into its evaluation event and the fold
counts them; for logs written before those fields existed, `harness.inspect.load` derives the
same facts from the candidate files, with this same function.
"""

from __future__ import annotations

import re
from typing import Any

from kopt.verifier.verdict import CaseResult, Verdict

FAMILIES = ("forbidden", "gate", "correctness", "timing")
RULE = re.compile(r"line \d+: \[([A-Za-z0-9_-]+)\]")
RUN_FAILED = "run failed (crash, timeout or fault)"
# forbidden kinds; the workspace raises each with its kind, older logs are classified by their text
FORBIDDEN_KINDS = {"absolute path": "absolute path", "leaves the workspace": "path escape",
                   "off-limits": "off-limits file", "link out of the workspace": "link out of the workspace"}


def key(family: str, detail: str) -> str:
    return f"{family}: {detail}"


def family(trap: str) -> str:
    return trap.split(":", 1)[0]


def case_class(case: CaseResult) -> str:
    if case.hidden:
        return "hidden"
    if case.case.startswith("raises:"):
        return "must-raise"
    return case.case


def of_verdict(verdict: Verdict) -> list[str]:
    """The traps that rejected this verdict's kernel (empty for a pass or an error), in a stable order."""
    if verdict.status != "rejected":
        return []
    phase, reason = verdict.phase or "", verdict.reason or ""
    if phase == "gate":
        rules = list(dict.fromkeys(RULE.findall(reason)))
        if not rules:
            rules = ["size"] if "larger than" in reason else ["(rule not named)"]
        return [key("gate", r) for r in rules]
    if phase.startswith("correctness"):
        classes = list(dict.fromkeys(case_class(c) for c in verdict.cases if not c.passed))
        return [key("correctness", c) for c in classes] or [key("correctness", RUN_FAILED)]
    if phase == "timing":
        return [key("timing", "integrity" if reason.startswith("timing integrity") else RUN_FAILED)]
    return []


def forbidden(kind: str | None, detail: str) -> str:
    """The trap key of a forbidden action (events before `kind` was recorded: from the detail's text)."""
    if not kind:
        kind = next((k for fragment, k in FORBIDDEN_KINDS.items() if fragment in detail), "other")
    return key("forbidden", kind)


def facts(verdict: Verdict) -> dict[str, Any]:
    """The fields of an evaluation event (harness.events.Evaluation) that come from its verdict."""
    t = verdict.timing if verdict.passed else None
    kind = t.kind if t else None
    on = verdict.versions.get("gpu_name") if kind == "gpu" else verdict.target if kind == "simulated" else None
    return {"phase": verdict.phase, "traps": of_verdict(verdict),
            "workloads": {w.workload: w.speedup for w in t.workloads} if t else {}, "measured_on": on}
