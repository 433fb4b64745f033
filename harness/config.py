"""A run's configuration, declared once: each field with its default and description.

Frozen at run creation, written to run.json; resume reads it back unchanged. The command
line's run flags are derived from these fields (`add_flags`, `flag_values`), so a default or a
help text is written here and nowhere else. Prompts are data: a task may override them with a
`prompts.toml` in its directory (keys `system`, `nudge`, `summary`).
"""

from __future__ import annotations

import argparse
import secrets
import time
import tomllib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import field_validator, BaseModel, ConfigDict, Field

from kopt.agent.loop import NUDGE, SUMMARY_PROMPT

SYSTEM_PROMPT = """You are a GPU kernel engineer optimising a Triton kernel, working unattended through tools.
Your editable file is {editable}. Change only it (and NOTES.md, your notes, which survive resets).
Workflow: read the kernel, form a hypothesis, edit, evaluate. `evaluate` runs a verifier you cannot see or
change: it compiles the kernel, checks it against a reference on many hidden shapes, and times it against the
baseline. Only a kernel that passes every check counts; the best passing candidate is kept. Use revert to go
back to an earlier candidate, history to see them all, compile_report for registers/spills/shared memory.
Call finish(summary) when you are done."""
PROMPTS_FILE = "prompts.toml"


def flag(name: str) -> dict[str, Any]:
    """A field's command-line flag when it is not the field's name with dashes."""
    return {"flag": name}


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(Frozen):
    """Limits over the whole run (totals: a resume that raises one extends the run); None: no limit."""

    max_hours: float | None = Field(None, gt=0, description="wall time of the run (elapsed, excluding downtime "
                                                            "between resumes)")
    max_tool_calls: int | None = Field(None, gt=0, description="tool calls over the whole run")
    max_evals: int | None = Field(None, gt=0, description="evaluations over the whole run")
    max_usd: float | None = Field(None, gt=0, description="model cost; needs --price-in/--price-out")
    max_tokens: int | None = Field(None, gt=0, description="input + output tokens over all model calls")
    max_failed_evals_in_row: int | None = Field(20, gt=0, description="consecutive evaluations that did not pass")
    max_model_errors_in_row: int | None = Field(None, gt=0, description="consecutive failed model attempts (each "
                                                                        "retry counts)")


class StallPolicy(Frozen):
    """What happens when evaluations stop improving on the best candidate."""

    warn_after: int = Field(5, ge=1, description="evaluations without improvement before a warning",
                            json_schema_extra=flag("--stall-warn"))
    redesign_after: int = Field(10, ge=1, description="evaluations without improvement before the context restarts "
                                "from the best candidate", json_schema_extra=flag("--stall-redesign"))
    max_redesigns: int = Field(3, ge=0, description="redesigns without progress before the run ends")


class Prompts(Frozen):
    """What kopt says to the agent on its own."""

    system: str = Field(SYSTEM_PROMPT, description="the system prompt ({editable} is the kernel's file name)")
    nudge: str = Field(NUDGE, description="sent after a reply without a tool call")
    summary: str = Field(SUMMARY_PROMPT, description="the system prompt of a compaction's summary request")


def task_prompts(task_root: Path) -> Prompts:
    path = Path(task_root) / PROMPTS_FILE
    return Prompts.model_validate(tomllib.loads(path.read_text())) if path.is_file() else Prompts()


class RunConfig(Frozen):
    run_id: str
    task: str  # absolute path of the task directory
    task_hash: str
    editable_file: str
    model: str = Field("builtin", description="builtin | openai:MODEL | anthropic:MODEL | replay:PATH")
    base_url: str | None = Field(None, description="API base URL (vLLM, SGLang, Ollama, Model Studio, ...)")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (its name is "
                                                      "stored, never the key)")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens",
                                        json_schema_extra=flag("--price-in"))
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens",
                                         json_schema_extra=flag("--price-out"))
    device: str = Field("auto", description="cuda (or cuda:N): GPU checks and timing; cpu: AOT compile + "
                        "interpreter; sim: the GPU path simulated on CPU (never GPU speed); auto: cuda if visible")
    target: str | None = Field(None, description="AOT compile target on the CPU path, e.g. sm_90")
    executor: Literal["local", "ray"] = Field("local", description="where evaluations run: local (child processes "
                                              "here, one timing lease per GPU) or ray (tasks on a Ray cluster)")
    ray_address: str | None = Field(None, description="the Ray cluster for --executor ray (`ray start --head` "
                                                      "prints it); default: a local Ray instance")
    agents: int = Field(1, ge=1, le=32, description="agents with their own contexts and kernel files, sharing "
                                                    "the candidate archive, the leaderboard and the budgets")
    budgets: Budgets = Budgets()
    stall: StallPolicy = StallPolicy()
    context_tokens: int | None = Field(None, gt=0, description="request size limit (default: fitted to the model)")
    outage_hours: float = Field(2.0, ge=0, description="keep retrying a failing provider this long before stopping "
                                                       "(resumable)")
    approve: bool = Field(False, description="ask before each evaluation")
    prompts: Prompts = Prompts()

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        from kopt.verifier.devices import check_name
        return check_name(value)

    secret: int = Field(default_factory=lambda: secrets.randbits(62))  # mixed into every evaluation's seeds
    created: float = Field(default_factory=time.time)


# ---- command-line flags from the fields

def _plain(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], only: tuple[str, ...] | None = None,
              defaults: bool = True) -> None:
    """One flag per described field of `model` (and of its nested models), default, bounds and help from the
    field. defaults=False: a flag not given is absent from the parsed namespace (`kopt resume`'s new budgets)."""
    for name, info in model.model_fields.items():
        kind = _plain(info.annotation)
        if kind is Prompts:
            continue  # data of the task, not flags
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            add_flags(parser, kind, only, defaults)
            continue
        if info.description is None or (only is not None and name not in only):
            continue
        option = (info.json_schema_extra or {}).get("flag") or "--" + name.replace("_", "-")
        default = info.default if defaults else argparse.SUPPRESS
        text = info.description + (" (a new total; default: unchanged)" if not defaults else
                                   " (default: no limit)" if model is Budgets and info.default is None else "")
        if kind is bool:
            parser.add_argument(option, dest=name, action="store_true", help=text, default=default)
        elif get_origin(kind) is Literal:
            parser.add_argument(option, dest=name, default=default, choices=list(get_args(kind)),
                                help=text)
        else:
            parser.add_argument(option, dest=name, type=bounded(kind, info), default=default, help=text,
                                metavar=option[2:].upper().replace("-", "_"))


def bounded(kind: type, info: Any) -> Any:
    """The flag's converter: the field's type and its bounds (gt/ge), refused with what is allowed."""
    gt = next((m.gt for m in info.metadata if getattr(m, "gt", None) is not None), None)
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    unset = " (omit the flag for no limit)" if info.default is None else ""

    def convert(text: str) -> Any:
        value = kind(text)  # a ValueError: argparse says "invalid int value"
        if value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if gt is not None and not value > gt:
            raise argparse.ArgumentTypeError(f"must be {'positive' if gt == 0 else f'greater than {gt:g}'}, got {text}"
                                             + unset)
        if ge is not None and not value >= ge:
            raise argparse.ArgumentTypeError(f"must be at least {ge:g}, got {text}" + unset)
        return value
    convert.__name__ = kind.__name__
    return convert


def flag_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of `model` the parsed flags set (nested models built from theirs)."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kind = _plain(info.annotation)
        if kind is Prompts:
            continue
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            inner = flag_values(args, kind)
            if inner:
                values[name] = kind(**inner)
        elif info.description is not None and hasattr(args, name):
            values[name] = getattr(args, name)
    return values
