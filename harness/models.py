"""Model specs (`builtin`, `openai:MODEL`, `anthropic:MODEL`, `replay:PATH`) to clients.

Keys are read from the environment variable the run names, at start and at each resume;
they are never written to run.json, the trajectory or a log, and never reach the verifier.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from kopt.agent.model import Model, ModelError, Pricing, RetryHook
from kopt.harness.workspace import RunConfig
from kopt.verifier.task import Task



@dataclass(frozen=True)
class Client:
    """A network model client (`KIND:MODEL`): where its class lives and what it needs."""

    module: str  # holds `cls(model, base_url=, api_key=, pricing=, retry=, on_retry=)`
    cls: str
    base_url: str
    key_env: str  # read by default
    key_always: bool  # a key is needed even on a private base URL
    context_tokens: int  # when no CONTEXT_WINDOWS fragment matches the model's name


# One line per client kind: adding a client is its module in agent/ plus a line here.
CLIENTS = {
    "openai": Client("kopt.agent.openai", "OpenAIModel", "https://api.openai.com/v1", "OPENAI_API_KEY", False, 64_000),
    "anthropic": Client("kopt.agent.anthropic", "AnthropicModel", "https://api.anthropic.com", "ANTHROPIC_API_KEY",
                        True, 160_000),
}
DEFAULT_KEY_ENV = {kind: c.key_env for kind, c in CLIENTS.items()}
PUBLIC_HOSTS = ("api.openai.com", "api.anthropic.com", "dashscope", "openrouter.ai")


# Context windows by model-name fragment (tokens); requests are kept well inside them.
CONTEXT_WINDOWS = (("claude", 200_000), ("qwen3", 128_000), ("qwen", 32_000), ("gpt-4.1", 1_000_000),
                   ("gpt-5", 400_000), ("gpt-4o", 128_000), ("o3", 200_000), ("o4", 200_000), ("llama", 128_000),
                   ("deepseek", 128_000), ("glm", 128_000), ("kimi", 128_000))


def default_context_tokens(spec: str) -> int:
    """The context limit a run uses unless --context-tokens says otherwise."""
    kind, _, name = spec.partition(":")
    if spec == "builtin" or kind == "replay":
        return 32_000
    for fragment, window in CONTEXT_WINDOWS:
        if fragment in name.lower():
            return int(window * 0.8)
    return CLIENTS[kind].context_tokens if kind in CLIENTS else 64_000


def check_spec(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    if spec == "builtin":
        return
    if (kind in CLIENTS or kind == "replay") and rest:
        return
    raise ModelError(f"unknown model {spec!r}: use builtin, " + ", ".join(f"{k}:MODEL" for k in CLIENTS)
                     + " or replay:PATH")


def api_key(config: RunConfig, kind: str) -> str | None:
    var = config.api_key_env or DEFAULT_KEY_ENV[kind]
    key = os.environ.get(var)
    base = config.base_url or ""
    needs_key = CLIENTS[kind].key_always or not base or any(h in base for h in PUBLIC_HOSTS)
    if not key and (needs_key or config.api_key_env):
        raise ModelError(f"no API key: set the environment variable {var} (or name another one with --api-key-env)")
    return key


CPU_NOTE = ("builtin: no GPU here, so scores are Triton-interpreter time ratios (CPU), not GPU speed; changes "
            "are also pruned by the compile report for the target GPU (failures, large register spills). A change "
            "replaces the incumbent only if it beats it by more than 5% and by more than the evaluation's measured "
            "A/A noise band (interpreter times are noisy); `kopt rescore` re-times the candidates on a GPU.")


def preflight(config: RunConfig, task: Task | None = None) -> None:
    """Before anything is created: the model can be built (its key is set, a replayed run exists) and a network
    endpoint answers and takes the key. ModelError says what is wrong."""
    model = build_model(config, task)
    try:
        check = getattr(model, "preflight", None)
        if check is not None:
            check()
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()


def builtin_for(task: Task, device: str, agent: int | None = None) -> Model:
    """The built-in policy, given what the task declares it may tune and rewrite; agent N of several starts its
    search from another constant (so the agents of one run explore different directions first)."""
    from kopt.agent.builtin import BuiltinModel, Rewrite, Tunable
    cfg = task.config
    on_cpu = device == "cpu"
    return BuiltinModel(cfg.editable_file, [Tunable(t.name, tuple(t.values)) for t in cfg.tunables],
                        list(cfg.constraints), [Rewrite(name, fn) for name, fn in task.load_rewrites()],
                        margin=0.05 if on_cpu else 0.02, note=CPU_NOTE if on_cpu else "", order=agent or 0)


def build_model(config: RunConfig, task: Task | None = None, on_retry: RetryHook | None = None,
                outage_budget_s: float | None = None, device: str = "cpu", consumed: int = 0,
                agent: int | None = None) -> Model:
    """The run's model client (`agent`: which of several); `consumed`: model responses the run (or that agent)
    already recorded (replay starts after them)."""
    check_spec(config.model)
    kind, _, rest = config.model.partition(":")
    pricing = Pricing(config.price_input_per_mtok, config.price_output_per_mtok)
    if config.model == "builtin":
        if task is None:
            from kopt.agent.builtin import BuiltinModel
            return BuiltinModel(config.editable_file)
        return builtin_for(task, device, agent)
    if kind == "replay":
        from kopt.harness.replay import ReplayModel
        return ReplayModel(Path(rest), start=consumed, agent=agent)
    from kopt.agent.retry import RetryPolicy
    retry = RetryPolicy() if outage_budget_s is None else RetryPolicy(outage_budget_s=outage_budget_s)
    client = CLIENTS[kind]
    cls = getattr(importlib.import_module(client.module), client.cls)
    key = api_key(config, kind)
    return cls(rest, base_url=config.base_url or client.base_url, api_key=key, pricing=pricing, retry=retry,
               on_retry=on_retry, api_key_env=(config.api_key_env or client.key_env) if key else None)
