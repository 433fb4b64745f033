"""Shared fixtures: the repository's tasks, loaded the way a user loads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from kopt.verifier.task import Task, load_task
from tests.verifier.panel_support import TASK_NAME, make_task_copy

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "kernels" / "extend_attention" / "baseline.py"


@pytest.fixture(scope="session")
def extend_task():
    return load_task("extend_attention")


@pytest.fixture(scope="session")
def sub_task(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Task]:
    """sub_task(cases=[...], dtypes=[...], seeds=1, hidden=0, timeouts={...}) -> a task copy."""
    made: dict[str, Task] = {}

    def make(**kwargs: Any) -> Task:
        key = json.dumps(kwargs, sort_keys=True)
        if key not in made:
            made[key] = make_task_copy(tmp_path_factory.mktemp("task") / TASK_NAME, **kwargs)
        return made[key]

    return make


@pytest.fixture(params=["spread", pytest.param("full", marks=pytest.mark.long)])
def spread_task(request, sub_task, extend_task) -> Task:
    """The task on SPREAD's cases in the default suite; the full task under `pytest -m long`."""
    from tests.verifier.panel_support import SPREAD
    return sub_task(**SPREAD) if request.param == "spread" else extend_task
