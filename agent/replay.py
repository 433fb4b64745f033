"""`replay:PATH`: answers with the model responses recorded in a trajectory, in order."""

from __future__ import annotations

import json
from pathlib import Path

from kopt.agent.messages import AssistantMessage, Message, ModelResponse, ToolCall, ToolSpec
from kopt.agent.model import ModelError


class ReplayModel:
    def __init__(self, path: Path, start: int = 0):
        if path.is_dir():
            path = path / "trajectory.jsonl"
        if not path.is_file():
            raise ModelError(f"replay: {path} not found: give a run directory or its trajectory.jsonl")
        self.name = f"replay:{path}"
        self.responses: list[ModelResponse] = []
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                event = json.loads(line)
                if event.get("type") == "model_response":
                    self.responses.append(ModelResponse.model_validate(event["response"]))
        self.position = start  # responses already consumed (a resumed run sets it)

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        if self.position >= len(self.responses):
            self.position += 1
            finish = ToolCall(id=f"replay-end-{self.position}", name="finish",
                              arguments=json.dumps({"summary": "replay exhausted: no more recorded responses"}))
            return ModelResponse(message=AssistantMessage(tool_calls=[finish]), model=self.name)
        response = self.responses[self.position]
        self.position += 1
        return response.model_copy(update={"latency_s": 0.0})
