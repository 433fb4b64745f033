"""`replay:PATH`: answers with the model responses recorded in a trajectory, in order.

It reads the log through the trajectory's own reader and event models (harness.trajectory,
harness.events), so it reads every format kopt reads (older ones migrated) and stops at a torn
last line as resume does. In a run of several agents, agent K replays agent K's responses.
"""

from __future__ import annotations

import json
from pathlib import Path

from kopt.agent.messages import AssistantMessage, Message, ModelResponse, ToolCall, ToolSpec
from kopt.agent.model import ModelError
from kopt.harness import events as ev
from kopt.harness import trajectory


class ReplayModel:
    def __init__(self, path: Path, start: int = 0, agent: int | None = None):
        """`start`: responses (of this agent) the replaying run already consumed; `agent`: whose responses, in a
        run of several (None: all of a one-agent run's)."""
        if path.is_dir():
            path = path / trajectory.TRAJECTORY
        if not path.is_file():
            raise ModelError(f"replay: {path} not found: give a run directory or its trajectory.jsonl")
        self.name = f"replay:{path}"
        try:
            self.responses = [e.response for e in trajectory.scan(path, repair=False)
                              if isinstance(e, ev.ModelResponseEvent) and (agent is None or e.agent == agent)]
        except (ValueError, ev.UnsupportedTrajectory) as exc:
            raise ModelError(f"replay: {path} cannot be read: {exc}") from None
        self.position = start

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        if self.position >= len(self.responses):
            self.position += 1
            finish = ToolCall(id=f"replay-end-{self.position}", name="finish",
                              arguments=json.dumps({"summary": "replay exhausted: no more recorded responses"}))
            return ModelResponse(message=AssistantMessage(tool_calls=[finish]), model=self.name)
        response = self.responses[self.position]
        self.position += 1
        return response.model_copy(update={"latency_s": 0.0})
