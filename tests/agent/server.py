"""A real HTTP server on loopback that plays a script, for model-client tests (not a test module).

Each request consumes the next step of the script: a Reply, DROP (close the socket without a
response), Sleep(s, then) (stall, then do `then`), Truncate(reply) (a cut body), or a
callable taking the Received request and returning a step. Every request is recorded.
The server is protocol-agnostic; `openai_completion` and `anthropic_message` build bodies for
the two protocols, so other tests can script whole conversations:

    with ScriptedServer([Reply(body=openai_completion("hi"))]) as server:
        OpenAIModel("m", base_url=server.base_url + "/v1").complete(...)
        server.requests[0].json()["messages"]
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Sequence, Union


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # dict/list: sent as JSON; str/bytes: sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return b"" if self.body is None else json.dumps(self.body).encode()


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending a response."""


DROP = Drop()


@dataclass(frozen=True)
class Sleep:
    seconds: float
    then: Union[Reply, Drop] = DROP


@dataclass(frozen=True)
class Truncate:
    """Send the first `keep` fraction of reply's body; honest_length=False announces the full
    length and closes mid-body (a dropped connection), True sends a complete but cut message."""

    reply: Reply
    keep: float = 0.5
    honest_length: bool = True


Step = Union[Reply, Drop, Sleep, Truncate, Callable[["Received"], Any]]
EXHAUSTED = Reply(500, {"error": {"message": "scripted server: script exhausted"}})


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    def __init__(self, script: Iterable[Step], gets: Step | None = None):
        """`script`: the POST requests' answers, in order. `gets`: the answer to every GET (a client's preflight
        listing of models), which never consumes the script; default 404."""
        self.script: list[Step] = list(script)
        self.requests: list[Received] = []
        self.gets = gets if gets is not None else Reply(404, {"error": {"message": "no such route"}})
        self.get_requests: list[Received] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._serve(self)

            def do_GET(self) -> None:
                owner._serve_get(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def remaining(self) -> int:
        return max(0, len(self.script) - len(self.requests))

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        received = Received(handler.command, handler.path,
                            {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            index = len(self.requests)
            self.requests.append(received)
        step = self.script[index] if index < len(self.script) else EXHAUSTED
        while callable(step):
            step = step(received)
        try:
            self._perform(handler, step)
        except OSError:  # the client gave up (timed out) first
            handler.close_connection = True

    def _serve_get(self, handler: BaseHTTPRequestHandler) -> None:
        received = Received(handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, b"")
        with self._lock:
            self.get_requests.append(received)
        step = self.gets
        while callable(step):
            step = step(received)
        try:
            self._perform(handler, step)
        except OSError:
            handler.close_connection = True

    def _perform(self, handler: BaseHTTPRequestHandler, step: Any) -> None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            step = step.then
        if isinstance(step, Drop):
            handler.close_connection = True
            return
        reply, payload, length = step, b"", 0
        if isinstance(step, Truncate):
            reply = step.reply
            full = reply.payload()
            payload = full[:int(len(full) * step.keep)]
            length = len(payload) if step.honest_length else len(full)
            handler.close_connection = not step.honest_length
        else:
            payload = reply.payload()
            length = len(payload)
        handler.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers, "Content-Length": str(length)}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()


def openai_completion(content: str | None = None, tool_calls: Sequence[tuple[str | None, str, Any]] = (),
                      *, reasoning: str | None = None, finish_reason: str | None = None,
                      usage: tuple[int, int] = (0, 0), model: str = "test-model") -> dict[str, Any]:
    """A chat-completions body; tool_calls are (id or None to omit it, name, arguments str or object)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{**({"id": id_} if id_ is not None else {}), "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for id_, name, arguments in tool_calls]
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop")}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": usage[0] + usage[1]}}


def anthropic_message(text: str | None = None, tool_uses: Sequence[tuple[str, str, dict[str, Any]]] = (),
                      *, thinking: str | None = None, stop_reason: str | None = None,
                      usage: tuple[int, int] = (0, 0), model: str = "test-model") -> dict[str, Any]:
    """A Messages API body; tool_uses are (id, name, input)."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
    if text is not None:
        content.append({"type": "text", "text": text})
    content += [{"type": "tool_use", "id": id_, "name": name, "input": input_} for id_, name, input_ in tool_uses]
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"), "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_error(message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


class FakeTime:
    """Injected sleep and clock: sleeping advances the clock at once and is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now
