"""Helpers for the verifier's self-tests (tests/verifier): task copies and verdict summaries (the
kernels are tests/verifier/panel.py's).

Every evaluation here is real: the static gate, child processes, the Triton interpreter and
the fp64 reference. Secrets are fixed so that seeds and hidden cases are deterministic.

Task copies ("sub-tasks") keep the real task's files and case definitions but select a few
of its cases, dtypes and seeds (and may lower the timeouts). They are used only to show that
a kernel is *rejected*: rejection is monotone in the case set (any failing case run rejects
the whole evaluation, and a case's seeds depend only on the secret, its id, dtype and seed
index), so a kernel rejected on a subset of the real cases is rejected on all of them. A
kernel that must *pass* is evaluated on the real, full task; where the default suite shows a
second honest kernel of a kind, it uses SPREAD (every head-dim path, a mask, a window, a cap,
non-causal and a hidden case, in every dtype) and the full task runs under `pytest -m long`.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any, Callable

from kopt.verifier.evaluate import evaluate
from kopt.verifier.task import Task, load_task
from kopt.verifier.verdict import Verdict

SECRET = 1234  # fixed: deterministic seeds and hidden cases
# the suffix of a GPU workload's row checked on a sample of its programs (verifier/cpu.py)
SAMPLED = " (sampled programs)"
TASK_NAME = "extend_attention"
# a fifth of the full task's case runs, reaching each of its code paths: ragged + scrambled (C1), non-causal
# (C4), a tree mask (C5), a window (C6), a cap with Lq != Lv at D=192 (C7), D=256 with GQA 8 (C14)
SPREAD: dict[str, Any] = {"cases": ["C1", "C4", "C5", "C6", "C7", "C14"], "seeds": 1, "hidden": 1}


# ---- a minimal TOML writer, enough for task.toml (tomllib only reads)
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Tables as [a.b] headers, top-level lists of tables as [[a]]; anything deeper inline."""
    def nested(v: Any) -> bool:
        return _is_table(v) or (_is_table_array(v) and not prefix)

    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not nested(v)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        name = f"{prefix}{key}"
        if _is_table(value):
            scalars = {k: v for k, v in value.items() if not _is_table(v)}
            if scalars or not value:
                out += f"\n[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in scalars.items())
            tables = {k: v for k, v in value.items() if _is_table(v)}
            if tables:
                out += dump_toml(tables, prefix=f"{name}.")
        elif _is_table_array(value) and not prefix:
            for entry in value:
                out += f"\n[[{name}]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in entry.items())
    return out


def make_task_copy(dest: Path, *, cases: list[str] | None = None, dtypes: list[str] | None = None,
                   seeds: int | None = None, hidden: int | None = None,
                   timeouts: dict[str, float] | None = None, raises: bool = False,
                   workloads: list[str] | None = None, params: dict[str, dict] | None = None,
                   probes: int = 0) -> Task:
    """A copy of the real task directory with a subset of its CPU cases, dtypes and seeds (and of its
    must-raise checks: only with `raises`, and only those whose case is kept), and of its GPU workloads
    (dry-run, and checked on a sample of their programs when the CPU checks their dtype). `params`: case id ->
    parameters that replace the case's own (a layout fixed instead of drawn by seed, say). `probes`: the
    hidden probes (none unless asked: a test judges the rows it names)."""
    source = load_task(TASK_NAME).root
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    raw = tomllib.loads((dest / "task.toml").read_text())
    if cases is not None:
        known = {c["id"]: c for c in raw["cases"]}
        missing = [c for c in cases if c not in known]
        assert not missing, f"the real task has no case {missing}: the test's defence is gone"
        raw["cases"] = [known[c] for c in cases]
    for case_id, changes in (params or {}).items():
        case = next((c for c in raw["cases"] if c["id"] == case_id), None)
        assert case is not None, f"no case {case_id} to change"
        case.update(changes)
    raw["raises"] = [r for r in raw.get("raises", []) if raises and r["case"] in {c["id"] for c in raw["cases"]}]
    if workloads is not None:
        raw["workloads"] = [w for w in raw["workloads"] if w["id"] in workloads]
        assert len(raw["workloads"]) == len(workloads), f"the real task lacks a workload of {workloads}"
    if dtypes is not None:
        raw["cpu"]["dtypes"] = dtypes
    if seeds is not None:
        raw["cpu"]["seeds"] = seeds
    if hidden is not None:
        raw["cpu"]["hidden_cases"] = hidden
    raw["cpu"]["hidden_probes"] = probes
    if timeouts:
        raw.setdefault("timeouts", {}).update(timeouts)
    (dest / "task.toml").write_text(dump_toml(raw))
    task = load_task(dest)
    assert task.name == TASK_NAME
    return task


def describe(verdict: Verdict) -> str:
    """A compact verdict for assertion messages."""
    failed = [f"{c.case}/{c.dtype}" for c in verdict.cases if not c.passed]
    return f"status={verdict.status} phase={verdict.phase} reason={verdict.reason!r} failed={failed}"


def cached_verdicts(task: Task, kernel_file: Callable[[str], Path]) -> Callable[[str | Path], Verdict]:
    """get("mut_zeros") (a panel kernel, or a Path): evaluate() on `task`, once per kernel."""
    cache: dict[str, Verdict] = {}

    def get(name: str | Path) -> Verdict:
        key = str(name)
        if key not in cache:
            path = name if isinstance(name, Path) else kernel_file(name)
            cache[key] = evaluate(path, task, device="cpu", secret=SECRET)
        return cache[key]

    return get
