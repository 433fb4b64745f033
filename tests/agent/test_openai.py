"""OpenAIModel against a real chat-completions server on loopback."""

from __future__ import annotations

import json
import time

import pytest

from kopt.agent.messages import (AssistantMessage, SystemMessage, ToolCall, ToolMessage, ToolSpec,
                                 UserMessage)
from kopt.agent.model import ModelError, ModelUnavailable, Pricing
from kopt.agent.openai import OpenAIModel
from kopt.agent.retry import RetryPolicy
from tests.agent.server import (DROP, FakeTime, Reply, ScriptedServer, Sleep, Truncate, openai_completion,
                                openai_error)

KEY = "sk-test-0123456789"
READ = ToolSpec(name="read_file", description="Read a file.",
                parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
HELLO = [SystemMessage(content="You optimise kernels."), UserMessage(content="Start.")]
DONE = Reply(body=openai_completion("done", usage=(100, 20)))


def model(server: ScriptedServer, **kwargs) -> tuple[OpenAIModel, FakeTime, list]:
    time_, events = FakeTime(), []
    options = dict(api_key=KEY, api_key_env="QWEN_KEY", on_retry=events.append, sleep=time_.sleep,
                   clock=time_.clock, timeout_s=5.0)
    return OpenAIModel("qwen-test", base_url=server.base_url + "/v1", **(options | kwargs)), time_, events


def test_tool_call_turn_round_trip():
    history = HELLO + [
        AssistantMessage(content="Reading.", reasoning="hidden", tool_calls=[
            ToolCall(id="call_a", name="read_file", arguments='{"path": "kernel.py"}'),
            ToolCall(id="call_b", name="read_file", arguments='{"path": "bad'),
        ]),
        ToolMessage(tool_call_id="call_a", name="read_file", content="def kernel(): ..."),
        ToolMessage(tool_call_id="call_b", name="read_file", content="arguments not valid JSON", is_error=True),
    ]
    reply = openai_completion(None, [("call_c", "read_file", '{"path": "bench.py"}')], reasoning="think",
                              usage=(1000, 50), model="qwen-test-2026")
    with ScriptedServer([Reply(body=reply)]) as server:
        client, _, events = model(server, pricing=Pricing(input_per_mtok=2.0, output_per_mtok=10.0))
        response = client.complete(history, [READ])
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json()
    assert body["model"] == "qwen-test" and body["tool_choice"] == "auto" and "max_tokens" not in body
    assert body["tools"] == [{"type": "function", "function": READ.model_dump()}]
    assert body["messages"] == [
        {"role": "system", "content": "You optimise kernels."},
        {"role": "user", "content": "Start."},
        {"role": "assistant", "content": "Reading.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "read_file", "arguments": '{"path": "kernel.py"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "def kernel(): ..."},
        {"role": "tool", "tool_call_id": "call_b", "content": "arguments not valid JSON"},
    ]
    assert response.message == AssistantMessage(
        content=None, reasoning="think",
        tool_calls=[ToolCall(id="call_c", name="read_file", arguments='{"path": "bench.py"}')])
    assert response.stop_reason == "tool_calls" and response.model == "qwen-test-2026"
    assert response.usage.input_tokens == 1000 and response.usage.output_tokens == 50
    assert response.usage.cost_usd == pytest.approx(0.0025)
    assert response.latency_s > 0 and events == []


def test_local_server_without_key_with_options():
    reply = openai_completion("done")
    reply["choices"][0]["message"]["reasoning"] = "vLLM's newer field"
    with ScriptedServer([Reply(body=reply)]) as server:
        client, _, _ = model(server, api_key=None, max_tokens=256,
                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        response = client.complete(HELLO, [])
    request = server.requests[0]
    assert "authorization" not in request.headers
    body = request.json()
    assert "tools" not in body and "tool_choice" not in body
    assert body["max_tokens"] == 256 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert response.message.content == "done" and response.message.reasoning == "vLLM's newer field"
    assert response.usage.cost_usd == 0.0


def test_malformed_arguments_and_missing_ids_pass_through():
    reply = openai_completion(None, [(None, "read_file", '{"path": "a.py"'), (None, "run", {"n": 1})])
    with ScriptedServer([Reply(body=reply), Reply(body=reply)]) as server:
        client, _, _ = model(server)
        first = client.complete(HELLO, [READ])
        again = client.complete(HELLO, [READ])
    calls = first.message.tool_calls
    assert [c.arguments for c in calls] == ['{"path": "a.py"', '{"n": 1}']  # raw, for the loop to judge
    assert [c.id for c in calls] == ["call_0_0", "call_0_1"] == [c.id for c in again.message.tool_calls]
    with pytest.raises(ValueError, match="not valid JSON"):
        calls[0].parsed()


def test_429_honours_retry_after():
    busy = Reply(429, openai_error("Rate limit reached", "requests"), {"Retry-After": "7"})
    with ScriptedServer([busy, DONE]) as server:
        client, time_, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert time_.sleeps == [7.0] and len(server.requests) == 2
    assert [(e.attempt, e.status, e.wait_s) for e in events] == [(1, 429, 7.0)]
    assert "Rate limit reached" in events[0].error


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_then_success(status):
    with ScriptedServer([Reply(status, "upstream error"), DONE]) as server:
        client, time_, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert time_.sleeps == [1.0]
    assert [(e.status, e.error) for e in events] == [(status, f"HTTP {status}: upstream error")]


def test_read_timeout_then_success():
    with ScriptedServer([Sleep(1.5, DONE), DONE]) as server:
        client, time_, events = model(server, timeout_s=0.3)
        started = time.monotonic()
        assert client.complete(HELLO, []).message.content == "done"
        assert time.monotonic() - started < 1.4  # gave up on the stalled request, did not wait it out
    assert len(events) == 1 and events[0].status is None and "ReadTimeout" in events[0].error


def test_dropped_connection_then_success():
    with ScriptedServer([DROP, DONE]) as server:
        client, _, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert [e.error.split(":")[0] for e in events] == ["RemoteProtocolError"]


@pytest.mark.parametrize("honest_length", [True, False])
def test_truncated_body_then_success(honest_length):
    with ScriptedServer([Truncate(DONE, 0.5, honest_length), DONE]) as server:
        client, _, events = model(server)
        assert client.complete(HELLO, []).message.content == "done"
    assert len(events) == 1 and len(server.requests) == 2


def test_401_is_fatal_at_once_without_the_key():
    denied = Reply(401, openai_error(f"Incorrect API key provided: {KEY}", "invalid_request_error", "invalid_api_key"))
    with ScriptedServer([denied, DONE]) as server:
        client, time_, events = model(server)
        with pytest.raises(ModelError) as info:
            client.complete(HELLO, [])
    message = str(info.value)
    assert "authentication failed (401)" in message and "Incorrect API key provided" in message
    assert "$QWEN_KEY" in message and KEY not in message
    assert len(server.requests) == 1 and not time_.sleeps and not events


def test_400_carries_the_provider_message():
    bad = Reply(400, {"object": "error", "message": "max_tokens is too large: 99999", "type": "BadRequestError",
                      "code": 400})  # vLLM's shape
    with ScriptedServer([bad]) as server:
        client, _, _ = model(server)
        with pytest.raises(ModelError, match=r"bad request \(400\): max_tokens is too large: 99999"):
            client.complete(HELLO, [])


def test_404_from_ollama_names_the_model():
    missing = Reply(404, {"error": "model \"qwen9\" not found, try pulling it first"})
    with ScriptedServer([missing]) as server:
        client, _, _ = model(server, api_key=None)
        with pytest.raises(ModelError, match='not found \\(404\\): model "qwen9" not found'):
            client.complete(HELLO, [])


def test_outage_outlasting_the_budget():
    down = Reply(503, openai_error("The engine is currently overloaded", "server_error"))
    with ScriptedServer([down] * 6) as server:
        client, time_, events = model(server, retry=RetryPolicy(base_s=1.0, cap_s=60.0, outage_budget_s=20.0))
        with pytest.raises(ModelUnavailable, match="last error: HTTP 503: The engine is currently overloaded"):
            client.complete(HELLO, [])
    assert time_.sleeps == [1.0, 2.0, 4.0, 8.0] and len(server.requests) == 5
    assert [(e.attempt, e.status) for e in events] == [(1, 503), (2, 503), (3, 503), (4, 503)]
    assert json.loads(server.requests[-1].body) == json.loads(server.requests[0].body)  # same request resent
