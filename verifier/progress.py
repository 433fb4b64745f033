"""What an evaluation is doing now, for a caller's display: never part of a Verdict, never trusted.

`evaluate(..., progress=fn)` calls `fn(Progress(...))` from the trusted parent only (the
orchestrator and its phase threads), at each phase and as each case run is judged, so a long
evaluation can show "correctness: 34 of 116 case runs". The callback may be called from several
threads at once; a Tracker serialises the calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    phase: str  # gate | checking (compile, correctness and the baseline, in parallel) | check | timing
    done: int = 0  # case runs judged so far
    total: int = 0  # case runs to judge (0: this phase judges none)
    message: str = ""  # one line for a person

    @property
    def text(self) -> str:
        count = f" ({self.done} of {self.total} case runs)" if self.total else ""
        return (self.message or self.phase) + count


ProgressFn = Callable[[Progress], None]


class Tracker:
    """Counts case runs as trusted code judges them (from the phase threads) and reports each step."""

    def __init__(self, report: ProgressFn | None):
        self.report = report
        self.lock = threading.Lock()
        self.current = Progress("starting")

    def phase(self, name: str, message: str = "", total: int = 0) -> None:
        with self.lock:
            self.current = Progress(name, 0, total, message)
            self._send()

    def __call__(self, message: str) -> None:
        """A step said in words only (what `progress` received before it was typed): no case counts."""
        self.phase("step", message)

    def item_done(self) -> None:
        with self.lock:
            c = self.current
            self.current = Progress(c.phase, min(c.done + 1, c.total) if c.total else c.done + 1, c.total, c.message)
            self._send()

    def _send(self) -> None:
        if self.report is not None:
            self.report(self.current)
