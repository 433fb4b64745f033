"""AnthropicModel against a real Messages API server on loopback."""

from __future__ import annotations

import pytest

from kopt.agent.anthropic import AnthropicModel
from kopt.agent.messages import (AssistantMessage, SystemMessage, ToolCall, ToolMessage, ToolSpec,
                                 UserMessage)
from kopt.agent.model import ModelError, ModelUnavailable, Pricing
from kopt.agent.retry import RetryPolicy
from tests.agent.server import (DROP, FakeTime, Reply, ScriptedServer, Truncate, anthropic_error,
                                anthropic_message)

KEY = "sk-ant-test-0123456789"
READ = ToolSpec(name="read_file", description="Read a file.",
                parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
HELLO = [SystemMessage(content="You optimise kernels."), UserMessage(content="Start.")]
DONE = Reply(body=anthropic_message("done", usage=(100, 20)))


def model(server: ScriptedServer, **kwargs) -> tuple[AnthropicModel, FakeTime, list]:
    time_, events = FakeTime(), []
    options = dict(api_key=KEY, api_key_env="ANTHROPIC_API_KEY", on_retry=events.append, sleep=time_.sleep,
                   clock=time_.clock, timeout_s=5.0)
    return AnthropicModel("claude-test", base_url=server.base_url, **(options | kwargs)), time_, events


def test_tool_use_turn_round_trip():
    history = HELLO + [
        AssistantMessage(content="Reading both.", reasoning="hidden", tool_calls=[
            ToolCall(id="toolu_a", name="read_file", arguments='{"path": "kernel.py"}'),
            ToolCall(id="toolu_b", name="read_file", arguments='{"path": "bad'),
        ]),
        ToolMessage(tool_call_id="toolu_a", name="read_file", content="def kernel(): ..."),
        ToolMessage(tool_call_id="toolu_b", name="read_file", content="arguments not valid JSON", is_error=True),
        UserMessage(content="Note: 3 evaluations left."),
    ]
    reply = anthropic_message("Now the bench.", [("toolu_c", "read_file", {"path": "bench.py"})],
                              thinking="let me see", usage=(1000, 50), model="claude-test-2026")
    with ScriptedServer([Reply(body=reply)]) as server:
        client, _, events = model(server, pricing=Pricing(input_per_mtok=3.0, output_per_mtok=15.0))
        response = client.complete(history, [READ])
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    body = request.json()
    assert body["model"] == "claude-test" and body["max_tokens"] == 8192
    assert body["system"] == "You optimise kernels."
    assert body["tools"] == [{"name": "read_file", "description": "Read a file.", "input_schema": READ.parameters}]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Start."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Reading both."},
            {"type": "tool_use", "id": "toolu_a", "name": "read_file", "input": {"path": "kernel.py"}},
            {"type": "tool_use", "id": "toolu_b", "name": "read_file", "input": {}}]},
        {"role": "user", "content": [  # one user message: both results first, then the text
            {"type": "tool_result", "tool_use_id": "toolu_a", "is_error": False, "content": "def kernel(): ..."},
            {"type": "tool_result", "tool_use_id": "toolu_b", "is_error": True, "content": "arguments not valid JSON"},
            {"type": "text", "text": "Note: 3 evaluations left."}]},
    ]
    assert response.message == AssistantMessage(
        content="Now the bench.", reasoning="let me see",
        tool_calls=[ToolCall(id="toolu_c", name="read_file", arguments='{"path": "bench.py"}')])
    assert response.stop_reason == "tool_use" and response.model == "claude-test-2026"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1000, 50)
    assert response.usage.cost_usd == pytest.approx(0.00375)
    assert events == []


def test_roles_stay_alternating_and_blocks_non_empty():
    history = HELLO + [
        AssistantMessage(content="  "),  # an empty turn still needs a non-empty block
        SystemMessage(content="Context was compacted."),  # a late system message: user-role text
        UserMessage(content="Go on."),
        AssistantMessage(tool_calls=[ToolCall(id="toolu_x", name="run", arguments="[1, 2]")]),
        ToolMessage(tool_call_id="toolu_x", name="run", content="", is_error=True),
    ]
    with ScriptedServer([DONE]) as server:
        client, _, _ = model(server, api_key=None, max_tokens=100)
        client.complete(history, [])
    body = server.requests[0].json()
    assert "x-api-key" not in server.requests[0].headers and "tools" not in body and body["max_tokens"] == 100
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert body["messages"][1]["content"] == [{"type": "text", "text": "(no response)"}]
    assert body["messages"][2]["content"] == [{"type": "text", "text": "Context was compacted."},
                                              {"type": "text", "text": "Go on."}]
    assert body["messages"][3]["content"][0]["input"] == {}  # a non-object argument list
    assert body["messages"][4]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_x", "is_error": True}]


def test_overloaded_and_rate_limited_then_success():
    overloaded = Reply(529, anthropic_error("Overloaded", "overloaded_error"))
    limited = Reply(429, anthropic_error("rate limited", "rate_limit_error"), {"retry-after": "12"})
    with ScriptedServer([overloaded, limited, DONE]) as server:
        client, time_, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert time_.sleeps == [1.0, 12.0]
    assert [(e.attempt, e.status) for e in events] == [(1, 529), (2, 429)]
    assert events[0].error == "HTTP 529: Overloaded [overloaded_error]"


def test_dropped_and_truncated_then_success():
    with ScriptedServer([DROP, Truncate(DONE, 0.6), DONE]) as server:
        client, _, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert [e.status for e in events] == [None, 200] and len(server.requests) == 3


def test_401_is_fatal_at_once_without_the_key():
    denied = Reply(401, anthropic_error(f"invalid x-api-key {KEY}", "authentication_error"))
    with ScriptedServer([denied, DONE]) as server:
        client, time_, events = model(server)
        with pytest.raises(ModelError) as info:
            client.complete(HELLO, [])
    message = str(info.value)
    assert "authentication failed (401): invalid x-api-key" in message and "$ANTHROPIC_API_KEY" in message
    assert KEY not in message and len(server.requests) == 1 and not time_.sleeps and not events


def test_400_carries_the_provider_message():
    bad = Reply(400, anthropic_error("messages: roles must alternate between \"user\" and \"assistant\""))
    with ScriptedServer([bad]) as server:
        client, _, _ = model(server)
        with pytest.raises(ModelError, match="bad request \\(400\\): messages: roles must alternate"):
            client.complete(HELLO, [])


def test_outage_outlasting_the_budget():
    with ScriptedServer([DROP] * 5) as server:
        client, time_, events = model(server, retry=RetryPolicy(base_s=2.0, cap_s=4.0, outage_budget_s=9.0))
        with pytest.raises(ModelUnavailable, match="last error: RemoteProtocolError"):
            client.complete(HELLO, [])
    assert time_.sleeps == [2.0, 4.0] and len(events) == 2 and len(server.requests) == 3
