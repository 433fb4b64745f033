"""`builtin`: the offline default model, a deterministic search driven through the same tools.

What it tunes comes from outside (the harness reads it from the task): integer constants of
the editable file (`NAME = value` lines) with their legal values and constraints, and named
source rewrites. It does coordinate descent around the incumbent: one neighbouring value of
one constant, or one rewrite, at a time; it compiles first and skips a change whose compile
report fails or spills far more than the incumbent; it evaluates, keeps a change only when it
beats the incumbent by a margin, and finishes when no untried change is left.

Its memory is NOTES.md (a line per tried change), read at the start of every context, so it
carries on after compaction, a redesign or a resume; every decision is a function of the
messages it is shown. The same scores give the same tool calls.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from kopt.agent.messages import AssistantMessage, Message, ModelResponse, ToolCall, ToolMessage, ToolSpec

NOTE = "builtin tried "
TRIED = re.compile(r"^builtin tried (?P<key>\S+) => (?P<outcome>.*)$", re.MULTILINE)
STATUS = re.compile(r"^candidate (?P<id>\d{4}): (?P<status>OK|REJECTED|ERROR)", re.MULTILINE)
SCORE = re.compile(r"(?:GPU geomean speedup|time ratio baseline/candidate) (?P<score>[0-9.]+)")
TRYING = re.compile(r"^Trying (?P<key>\S+); incumbent (?P<id>\d{4}) spill (?P<spill>\d+) B\.")
SPILL = re.compile(r"spill (?P<bytes>\d+|None) B")
OUTCOME = re.compile(r"^candidate (?P<id>\d{4}) (?P<status>ok|rejected|error)(?: (?P<score>[0-9.]+))?(?: spill (?P<spill>\d+))?"
                     r"(?: band (?P<band>[0-9.]+))?")
BAND = re.compile(r"noise band \+-(?P<band>[0-9.]+)%")


@dataclass(frozen=True)
class Tunable:
    name: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class Rewrite:
    name: str
    apply: Callable[[str], str | None]


@dataclass
class Tried:
    key: str
    candidate: int | None
    status: str  # ok / rejected / error / pruned
    score: float | None
    spill: int
    band: float = 0.0  # the evaluation's A/A noise band (a fraction): a change must beat the incumbent by more


def spill_total(text: str) -> int:
    return sum(int(m.group("bytes")) for m in SPILL.finditer(text) if m.group("bytes") != "None")


class BuiltinModel:
    name = "builtin"

    def __init__(self, editable: str = "kernel.py", tunables: list[Tunable] | None = None,
                 constraints: list[str] | None = None, rewrites: list[Rewrite] | None = None,
                 margin: float = 0.02, spill_slack_bytes: int = 256, note: str = "", order: int = 0):
        """`order`: where the search starts (agent N of several rotates the constants by N and, for odd N, tries
        the lower value of each first), so that parallel agents do not repeat each other."""
        self.editable = editable
        tunables = list(tunables or [])
        if tunables and order:
            shift = order % len(tunables)
            tunables = tunables[shift:] + tunables[:shift]
        self.tunables = tunables
        self.lower_first = order % 2 == 1
        self.constraints = constraints or []
        self.rewrites = rewrites or []
        self.margin, self.spill_slack = margin, spill_slack_bytes
        self.note = note  # said once in NOTES.md at the start (e.g. what the CPU path measures)

    # ---- the model interface
    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        if not tools:  # asked to summarise for a compaction: everything it needs is in NOTES.md
            return ModelResponse(message=AssistantMessage(content="The built-in policy keeps its memory in NOTES.md."),
                                 model=self.name)
        calls, text = self.decide(messages)
        # ids are unique and stable: the request (which holds the run's counters) decides them
        digest = hashlib.sha256("".join(m.model_dump_json() for m in messages).encode()).hexdigest()[:12]
        tool_calls = [ToolCall(id=f"builtin-{digest}-{i}", name=name, arguments=json.dumps(args))
                      for i, (name, args) in enumerate(calls)]
        return ModelResponse(message=AssistantMessage(content=text, tool_calls=tool_calls), model=self.name)

    # ---- the policy
    def decide(self, messages: list[Message]) -> tuple[list[tuple[str, dict]], str]:
        """Each step depends only on the latest turn plus what NOTES.md and the kernel say, and
        those two are always read together, so a compaction between steps loses nothing."""
        turns = self.turns(messages)
        last, result = turns[-1] if turns else (None, None)
        if last is not None and last.name == "evaluate" and result is not None:
            key = json.loads(last.arguments).get("note", "")
            return [("notes", {"text": f"{NOTE}{key} => {self.outcome(result.content)}"})], f"Recording {key}."
        if last is not None and last.name == "compile_report" and result is not None:
            plan = TRYING.search(self.latest_text(messages) or "")
            key = plan.group("key") if plan else "unknown"
            incumbent = int(plan.group("id")) if plan else None
            limit = max(self.spill_slack, 4 * int(plan.group("spill"))) if plan else self.spill_slack
            spill = spill_total(result.content)
            if result.is_error or spill > limit:
                why = result.content.splitlines()[0][:160] if result.is_error else f"spills {spill} B (limit {limit} B)"
                calls = [("notes", {"text": f"{NOTE}{key} => pruned: {why}"})]
                if incumbent:
                    calls.append(("revert", {"candidate": incumbent}))
                return calls, f"Skipping {key}: {why}."
            return [("evaluate", {"note": key})], f"Evaluating {key}."
        notes_at = self.last_read(turns, "NOTES.md")
        text = self.kernel_text(turns)
        if notes_at is None or text is None:
            return [("read_file", {"path": "NOTES.md"}), ("read_file", {"path": self.editable})], \
                "Reading my notes (what has been tried) and the kernel."
        memory = self.memory(turns, notes_at)
        if not memory:  # nothing measured yet: the starting point first
            intro = [("notes", {"text": self.note})] if self.note and self.note not in self.notes_text(turns) else []
            return intro + [("evaluate", {"note": self.key_of(text)})], "Measuring the starting point."
        incumbent = self.incumbent(memory)
        if incumbent is None:
            return [("finish", {"summary": "the starting kernel does not pass the verifier; nothing to tune"})], "Stop."
        if not self.holds(text, incumbent.key):
            return [("revert", {"candidate": incumbent.candidate})], f"Back to candidate {incumbent.candidate:04d}."
        target = self.next_change(text, incumbent, {t.key for t in memory})
        if target is None:
            # named, so best.py is the incumbent it chose (with its noise margin), not the latest passing one
            return [("finish", {"summary": self.summary(memory, incumbent), "candidate": incumbent.candidate})], \
                "Search space exhausted."
        key, new_text = target
        edits = edits_between(text, new_text)
        if not edits:
            return [("notes", {"text": f"{NOTE}{key} => pruned: no change to the source"})], "No-op change."
        return [("edit_file", {"path": self.editable, "old": old, "new": new}) for old, new in edits] + \
               [("compile_report", {})], \
               f"Trying {key}; incumbent {incumbent.candidate:04d} spill {incumbent.spill} B."

    # ---- reading the conversation
    @staticmethod
    def turns(messages: list[Message]) -> list[tuple[ToolCall, ToolMessage | None]]:
        results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
        return [(c, results.get(c.id)) for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls]

    @staticmethod
    def latest_text(messages: list[Message]) -> str | None:
        for m in reversed(messages):
            if isinstance(m, AssistantMessage):
                return m.content
        return None

    @staticmethod
    def last_read(turns, path: str) -> int | None:
        return max((i for i, (c, r) in enumerate(turns) if c.name == "read_file" and r is not None and not r.is_error
                    and json.loads(c.arguments).get("path") == path), default=None)

    @staticmethod
    def notes_text(turns) -> str:
        reads = [r.content for c, r in turns if c.name == "read_file" and r is not None and "NOTES.md" in c.arguments]
        written = [json.loads(c.arguments).get("text", "") for c, r in turns if c.name == "notes"]
        return "\n".join(reads + written)

    def memory(self, turns, notes_at: int) -> list[Tried]:
        text = turns[notes_at][1].content + "\n" + "\n".join(
            json.loads(c.arguments).get("text", "") for c, r in turns[notes_at + 1:] if c.name == "notes")
        tried = {}
        for m in TRIED.finditer(text):
            outcome = OUTCOME.match(m.group("outcome"))
            if outcome:
                tried[m.group("key")] = Tried(m.group("key"), int(outcome.group("id")), outcome.group("status"),
                                              float(outcome.group("score")) if outcome.group("score") else None,
                                              int(outcome.group("spill") or 0), float(outcome.group("band") or 0))
            else:
                tried[m.group("key")] = Tried(m.group("key"), None, "pruned", None, 0)
        return list(tried.values())

    def incumbent(self, memory: list[Tried]) -> Tried | None:
        best = None
        for t in memory:  # in the order tried: a later one must beat the incumbent by the margin and the noise
            if t.score is not None and (best is None or t.score > best.score * (1 + max(self.margin, t.band))):
                best = t
        return best

    @staticmethod
    def outcome(content: str) -> str:
        status = STATUS.search(content)
        if status is None:
            return "error: " + content.splitlines()[0][:120]
        score = SCORE.search(content)
        parts = [f"candidate {status.group('id')} {status.group('status').lower()}"]
        if score and status.group("status") == "OK":
            parts.append(score.group("score"))
        parts.append(f"spill {spill_total(content)}")
        band = BAND.search(content)
        if score and band and status.group("status") == "OK":
            parts.append(f"band {float(band.group('band')) / 100:.3f}")
        return " ".join(parts)

    def kernel_text(self, turns) -> str | None:
        """The kernel as last read, if nothing changed it since."""
        for c, r in reversed(turns):
            if c.name in ("edit_file", "revert", "write_file"):
                return None
            if c.name == "read_file" and json.loads(c.arguments).get("path") == self.editable and r is not None:
                if r.is_error or "\n" not in r.content:
                    return None
                return r.content.split("\n", 1)[1]
        return None

    def key_of(self, text: str) -> str:
        """The configuration a kernel text holds: its constants, and the rewrites whose pattern is
        absent (applied, or never applicable: either way not something left to try)."""
        return self.key(self.values(text), tuple(r.name for r in self.rewrites if r.apply(text) is None))

    def holds(self, text: str, key: str) -> bool:
        values, rewrites = self.parse_key(key)
        here_values, here_rewrites = self.parse_key(self.key_of(text))
        return here_values == values and set(here_rewrites) == set(rewrites)

    # ---- the search space
    def values(self, text: str) -> dict[str, int]:
        found = {}
        for t in self.tunables:
            m = re.search(rf"^{re.escape(t.name)} = (\d+)\b", text, re.MULTILINE)
            if m:
                found[t.name] = int(m.group(1))
        return found

    @staticmethod
    def key(values: dict[str, int], rewrites: tuple[str, ...]) -> str:
        return ",".join(f"{k}={v}" for k, v in values.items()) + "".join(f"+{r}" for r in rewrites)

    @staticmethod
    def parse_key(key: str) -> tuple[dict[str, int], tuple[str, ...]]:
        head, *rewrites = key.split("+")
        values = dict((k, int(v)) for k, v in (part.split("=") for part in head.split(",") if part))
        return values, tuple(rewrites)

    def allowed(self, values: dict[str, int]) -> bool:
        for expr in self.constraints:
            try:
                if not eval(expr, {"__builtins__": {}}, dict(values)):  # task data, trusted
                    return False
            except NameError:
                continue  # a constraint on a constant this kernel does not have
        return True

    def next_change(self, text: str, incumbent: Tried, tried: set[str]) -> tuple[str, str] | None:
        values, rewrites = self.parse_key(incumbent.key)
        for t in self.tunables:
            if t.name not in values:
                continue
            legal = sorted(t.values)
            here = values[t.name]
            higher = [v for v in legal if v > here][:1]
            lower = [v for v in legal if v < here][-1:]
            for v in (lower + higher) if self.lower_first else (higher + lower):
                trial = dict(values, **{t.name: v})
                key = self.key(trial, rewrites)
                if key in tried or not self.allowed(trial):
                    continue
                new = re.sub(rf"^{re.escape(t.name)} = {here}\b", f"{t.name} = {v}", text, count=1, flags=re.MULTILINE)
                return key, new
        for rewrite in self.rewrites:
            if rewrite.name in rewrites:
                continue
            key = self.key(values, rewrites + (rewrite.name,))
            if key in tried:
                continue
            new = rewrite.apply(text)
            if new is not None:
                return key, new
        return None

    @staticmethod
    def summary(memory: list[Tried], incumbent: Tried) -> str:
        evaluated = sum(t.candidate is not None for t in memory)
        pruned = sum(t.status == "pruned" for t in memory)
        return (f"Coordinate search done: {len(memory)} configurations tried ({evaluated} evaluated, {pruned} pruned "
                f"by the compile report). Best: candidate {incumbent.candidate:04d} ({incumbent.key}), score "
                f"{incumbent.score:.4f}.")


def edits_between(old: str, new: str) -> list[tuple[str, str]]:
    """One exact, unique search/replace pair (what edit_file takes) that turns `old` into `new`:
    from the first changed line to the last, grown by context lines until it is unique."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    changes = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not changes:
        return []
    i1, j1 = changes[0][1], changes[0][3]
    i2, j2 = changes[-1][2], changes[-1][4]
    lo, hi = i1, i2
    while True:
        before = "".join(a[lo:hi])
        if (before and old.count(before) == 1) or (lo == 0 and hi == len(a)):
            break
        lo, hi = max(0, lo - 1), min(len(a), hi + 1)
    after = "".join(a[lo:i1]) + "".join(b[j1:j2]) + "".join(a[i2:hi])
    return [(before, after)]
