"""A bounded context: a fixed head, a window of recent turns, and a regenerated status block.

Each request is head + window + status. Before a request would pass the high watermark the
oldest turns leave the window (whole turns: an assistant message with its tool results), until
the request is under the low watermark; a model-written summary of them (or, without one, the
facts the status block regenerates) carries what they held. Memory is bounded by the window,
whatever the length of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kopt.agent.messages import AssistantMessage, Message, ToolMessage, UserMessage

CHARS_PER_TOKEN = 3.0  # conservative for code and JSON; real tokenizers give 3.5-4
HIGH_WATERMARK = 0.75
LOW_WATERMARK = 0.5
MIN_MESSAGE_CHARS = 400


def tokens(messages: list[Message]) -> int:
    """An upper-bound estimate of the tokens a request takes (no tokenizer needed)."""
    chars = 0
    for m in messages:
        chars += len(getattr(m, "content", None) or "") + 16
        for call in getattr(m, "tool_calls", None) or []:
            chars += len(call.name) + len(call.arguments) + 24
    return int(chars / CHARS_PER_TOKEN) + 1


@dataclass
class Compaction:
    drop: int  # messages removed from the front of the window
    tokens_before: int
    tokens_after: int
    summary: str | None = None


@dataclass
class Context:
    limit_tokens: int
    head: list[Message]
    window: list[Message] = field(default_factory=list)
    summary: str | None = None  # of everything that has left the window

    def append(self, message: Message) -> None:
        self.window.append(message)

    def reset(self) -> None:
        """Start over from the head (a redesign); the summary is dropped with the turns."""
        self.window, self.summary = [], None

    def request(self, status: str | None) -> list[Message]:
        extra = []
        if self.summary:
            extra.append(UserMessage(content=f"[Summary of earlier work, compacted]\n{self.summary}"))
        tail = [UserMessage(content=status)] if status else []
        return self.fit(self.head + extra + self.window + tail)

    def fit(self, messages: list[Message]) -> list[Message]:
        """Never send more than the limit: cut the longest contents of older messages if needed."""
        budget_chars = int(self.limit_tokens * CHARS_PER_TOKEN * 0.95)
        out = list(messages)
        while tokens(out) > self.limit_tokens * 0.95:
            sizes = [(len(getattr(m, "content", None) or ""), i) for i, m in enumerate(out)]
            size, i = max(sizes)
            if size <= MIN_MESSAGE_CHARS:
                break
            excess = int((tokens(out) - self.limit_tokens * 0.95) * CHARS_PER_TOKEN) + 64
            keep = max(MIN_MESSAGE_CHARS, min(size - excess, budget_chars // 4))
            content = out[i].content
            cut = content[:keep // 2] + f"\n[... {size - keep} characters cut to fit the context ...]\n" + content[-keep // 2:]
            out[i] = out[i].model_copy(update={"content": cut})
        return out

    def status_reserve(self) -> int:
        """Tokens set aside for the status block: planning must not depend on its exact text
        (it holds the clock), so a resumed run makes the same compaction decisions."""
        return min(2000, self.limit_tokens // 5)

    def size(self, window: list[Message]) -> int:
        return tokens(Context(self.limit_tokens, self.head, window, self.summary).request(None)) + self.status_reserve()

    def plan_compaction(self) -> Compaction | None:
        """Drop whole turns from the window's front if the next request passes the high watermark.

        The smallest drop that brings the request under the low watermark, and never the
        latest turn (the model must see the result of what it just did).
        """
        before = self.size(self.window)
        if before <= self.limit_tokens * HIGH_WATERMARK:
            return None
        starts = [i for i, m in enumerate(self.window) if isinstance(m, AssistantMessage) and i > 0]
        if not starts:
            return None
        drop = next((i for i in starts if self.size(self.window[i:]) <= self.limit_tokens * LOW_WATERMARK), starts[-1])
        return Compaction(drop, before, self.size(self.window[drop:]))

    def apply(self, compaction: Compaction) -> None:
        self.window = self.window[compaction.drop:]
        if compaction.summary:
            self.summary = compaction.summary


def transcript(messages: list[Message], max_chars: int = 60_000) -> str:
    """Dropped turns as plain text for a summarising model call."""
    lines = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            if m.content:
                lines.append(f"ASSISTANT: {m.content}")
            for call in m.tool_calls:
                lines.append(f"CALL {call.name} {call.arguments[:1500]}")
        elif isinstance(m, ToolMessage):
            lines.append(f"RESULT {m.name}{' (error)' if m.is_error else ''}: {m.content[:1500]}")
        else:
            lines.append(f"{m.role.upper()}: {json.dumps(m.content)[:1500]}")
    text = "\n".join(lines)
    return text[-max_chars:]
