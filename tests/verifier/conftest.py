"""Fixtures for the verifier's self-tests: panel kernels written to files and cached verdicts (the
real task and task copies are tests/conftest.py's `extend_task` and `sub_task`).

See panel_support.py for why task copies ("sub-tasks") may be used to show a rejection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from tests.verifier import panel
from tests.verifier.panel_support import cached_verdicts

from kopt.verifier.task import Task
from kopt.verifier.verdict import Verdict


@pytest.fixture(scope="session")
def kernel_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """kernel_file("mut_zeros") -> that kernel of tests/verifier/panel.py, written to a file once."""
    root = tmp_path_factory.mktemp("panel")

    def write(name: str) -> Path:
        path = root / f"{name}.py"
        return path if path.is_file() else panel.write(name, root)

    return write


@pytest.fixture(scope="session")
def full_verdict(extend_task: Task, kernel_file: Callable[[str], Path]) -> Callable[[str | Path], Verdict]:
    """full_verdict("mut_zeros"): evaluate() on the real task, once per kernel."""
    return cached_verdicts(extend_task, kernel_file)
