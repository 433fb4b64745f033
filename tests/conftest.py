"""Shared fixtures: the repository's tasks, loaded the way a user loads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kopt.verifier.task import load_task

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "kernels" / "extend_attention" / "baseline.py"


@pytest.fixture(scope="session")
def extend_task():
    return load_task("extend_attention")
