"""`kopt mcp`: a run's tools served over MCP (stdio), so any MCP client drives the same loop.

The client (Claude Code, Codex, any agent on an MCP SDK) gets the tools kopt's own loop gets,
with the same names, arguments, confinement and results, and every call lands in the run's
trajectory through the same recorder, with the driver recorded (`mcp`, the client's name and
version from the handshake). Budgets are checked before each call; `finish` ends the run. The
run directory stays locked while the server runs: a second client is refused.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

import kopt
from kopt.agent.loop import Stop
from kopt.agent.messages import ToolCall
from kopt.harness import events as ev
from kopt.harness.run import Run
from kopt.harness.workspace import INSTRUCTION, Workspace

INSTRUCTION_URI = "kopt://instruction"


class Session:
    """The run as an MCP client drives it: one tool call at a time, recorded, under the run's budgets."""

    def __init__(self, ws: Workspace, run: Run):
        self.ws, self.run = ws, run
        self.lock = threading.Lock()
        self.started = False
        self.ended: str | None = None  # why calls are refused now
        done = run.ended()
        if done is not None:
            self.ended = f"this run has ended ({done.detail}); start a new one with `kopt mcp --task ...`"

    def instruction(self) -> str:
        system = self.ws.config.prompts.system.format(editable=self.ws.config.editable_file)
        return f"{system}\n\n{(self.ws.root / INSTRUCTION).read_text()}"

    def begin(self, driver: ev.Driver) -> None:
        """The first request of a client: this session's run_start or run_resume, and any call a crash cut off."""
        with self.lock:
            if self.started or self.ended:
                return
            self.started = True
            self.run.begin(driver)
            for call, pre_sha in self.run.resume.pending:
                if not self.run.already_applied(call, pre_sha):
                    self.run.recorder.call(self.run.tools, call)

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
        """(content, is_error, data) of one tool call."""
        with self.lock:
            if self.ended:
                return self.ended, True, {}
            refused = self.refusal()
            if refused:
                return refused, True, {}
            call = ToolCall(id=f"mcp-{uuid.uuid4().hex[:12]}", name=name, arguments=json.dumps(arguments))
            outcome = self.run.recorder.call(self.run.tools, call)
            if outcome.finish is not None:
                self.end(Stop("finished", outcome.finish))
            return outcome.content, outcome.is_error, outcome.data

    def refusal(self) -> str | None:
        """A stop request or a spent budget ends the run; the call that finds it gets a clear error."""
        try:
            self.run.check_stop()
            spent = self.run.fold.spent(self.run.budgets, self.run.elapsed_s)
            if spent:
                raise Stop("budget", spent)
        except Stop as stop:
            self.end(stop)
            return self.ended
        return None

    def end(self, stop: Stop) -> None:
        self.run._end(stop)
        self.ended = f"this run has ended ({stop.reason}: {stop.detail[:300]}); no further tool calls are taken"

    def close(self) -> None:
        """The client went away without finishing: the run stays resumable."""
        with self.lock:
            if self.started and not self.ended:
                self.end(Stop("interrupted", "the MCP client disconnected"))
            self.run.recorder.close()


def driver_of(ctx: Any) -> ev.Driver:
    params = getattr(getattr(ctx, "session", None), "client_params", None)
    info = getattr(params, "client_info", None)
    return ev.Driver(kind="mcp", name=getattr(info, "name", None) or "unknown", version=getattr(info, "version", None))


def build_server(session: Session) -> Server:
    async def begin(ctx: Any) -> None:
        if not session.started:
            await anyio.to_thread.run_sync(session.begin, driver_of(ctx))

    async def list_tools(ctx, params) -> types.ListToolsResult:
        await begin(ctx)
        return types.ListToolsResult(tools=[types.Tool(name=s.name, description=s.description, input_schema=s.parameters)
                                            for s in session.run.tools.specs()])

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        await begin(ctx)
        content, is_error, data = await anyio.to_thread.run_sync(session.call, params.name, params.arguments or {})
        return types.CallToolResult(content=[types.TextContent(type="text", text=content)], is_error=is_error,
                                    structured_content=data or None)

    async def list_prompts(ctx, params) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[types.Prompt(name="instruction", description="What the agent is "
                                                             "told: the task, its rules and the workflow")])

    async def get_prompt(ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=session.instruction()))
        return types.GetPromptResult(description="the run's instruction", messages=[message])

    async def list_resources(ctx, params) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(name="instruction", uri=INSTRUCTION_URI,
                                                                   mime_type="text/markdown")])

    async def read_resource(ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=INSTRUCTION_URI,
                                                                             text=session.instruction())])

    return Server("kopt", version=kopt.__version__, instructions=session.instruction(), on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_prompts=list_prompts, on_get_prompt=get_prompt,
                  on_list_resources=list_resources, on_read_resource=read_resource)


def serve(session: Session) -> None:
    server = build_server(session)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        session.close()
