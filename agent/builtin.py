"""`builtin`: the offline default model. A deterministic search driven through the same tools.

It tunes the integer configuration constants it finds in the editable file (names holding
BLOCK, WARPS or STAGES), one change at a time: read, edit, evaluate, keep it if it becomes
the leaderboard's best, revert otherwise, and finish when no untried change is left. Its
state is derived from the conversation alone, so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import re

from kopt.agent.messages import AssistantMessage, Message, ModelResponse, ToolCall, ToolMessage, ToolSpec

TUNABLE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*(?:BLOCK|WARPS|STAGES)[A-Z0-9_]*|BLOCK[A-Z0-9_]*)"
                     r" = (?P<value>\d+)\b.*$", re.MULTILINE)
LEADER = re.compile(r"^leaderboard \(.*?\): (?P<id>\d{4}) ", re.MULTILINE)  # the label may hold "(CPU)"
CANDIDATE = re.compile(r"^candidate (?P<id>\d{4}): ", re.MULTILINE)


def variants(name: str, value: int) -> list[int]:
    if "WARPS" in name:
        return [w for w in (4, 8, 2) if w != value]
    if "STAGES" in name:
        return [s for s in (value + 1, value - 1) if 1 <= s <= 4]
    return [v for v in (value * 2, value // 2) if 16 <= v <= 256]


class BuiltinModel:
    name = "builtin"

    def __init__(self, editable: str = "kernel.py"):
        self.editable = editable
        self.calls = 0

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        name, args, text = self.decide(messages)
        self.calls += 1
        call = ToolCall(id=f"builtin-{sum(isinstance(m, AssistantMessage) for m in messages) + 1}", name=name,
                        arguments=json.dumps(args))
        return ModelResponse(message=AssistantMessage(content=text, tool_calls=[call]), model=self.name)

    def decide(self, messages: list[Message]) -> tuple[str, dict, str]:
        calls = [(m.tool_calls[0], None) for m in messages if isinstance(m, AssistantMessage) and m.tool_calls]
        results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
        history = [(call, results.get(call.id)) for call, _ in calls]
        if not history:
            return "read_file", {"path": self.editable}, "Reading the kernel to find its configuration."
        last, result = history[-1]
        evaluations = [r for c, r in history if c.name == "evaluate" and r is not None]
        if last.name == "read_file" and not evaluations:
            return "evaluate", {"note": "starting configuration"}, "Measuring the starting point."
        if last.name == "evaluate":
            best = self.best_id(result)
            this = CANDIDATE.search(result.content) if result else None
            if len(evaluations) > 1 and best and this and this.group("id") != best:
                return "revert", {"candidate": int(best)}, f"Not better than candidate {best}; reverting."
            return "read_file", {"path": self.editable}, "Reading the current kernel."
        if last.name in ("revert", "edit_file") and result is not None and result.is_error:
            return "read_file", {"path": self.editable}, "Re-reading after an error."
        if last.name == "revert":
            return "read_file", {"path": self.editable}, "Reading the current kernel."
        if last.name == "edit_file":
            note = json.loads(last.arguments).get("new", "").strip()
            return "evaluate", {"note": note}, f"Evaluating {note}."
        if last.name == "read_file" and result is not None:
            tried = {json.loads(c.arguments).get("new", "").strip() for c, _ in history if c.name == "edit_file"}
            text = result.content.split("\n", 1)[1] if "\n" in result.content else ""
            for match in TUNABLE.finditer(text):
                name, value = match.group("name"), int(match.group("value"))
                for new in variants(name, value):
                    line = f"{name} = {new}"
                    if line not in tried:
                        return ("edit_file", {"path": self.editable, "old": f"{name} = {value}\n", "new": f"{line}\n"},
                                f"Trying {line} (was {value}).")
            best = self.best_id(evaluations[-1]) if evaluations else None
            return "finish", {"summary": f"Tried every single-constant change; best candidate {best}."}, "Done."
        return "finish", {"summary": "nothing left to do"}, "Done."

    @staticmethod
    def best_id(result: ToolMessage | None) -> str | None:
        match = LEADER.search(result.content) if result else None
        return match.group("id") if match else None
