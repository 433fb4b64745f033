"""Two-stage Ctrl-C (and SIGTERM): the first asks the run to stop after the current step, the second
stops it now, resumably.

"Now" kills the verifier's child processes (the evaluation in progress comes back unusable and is
never recorded: its call is redone on resume) and abandons a model call in flight (its request is
re-issued on resume). Nothing is abandoned half-written: the handler raises only while the main
thread waits on a model call, never while it records.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kopt.verifier import sandbox

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):
    """A second interrupt: leave at once (resumably). A BaseException so that no tool or client catches it."""


class Interrupts:
    def __init__(self, on_change: Callable[[], None] | None = None):
        self.requested: str | None = None  # why the run stops after the current step
        self.now: str | None = None  # why it stops at once
        self.on_change = on_change  # told after each interrupt (a display)
        self._abandonable = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread (tests): no handlers
                pass

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        sandbox.allow_children()

    def handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = f"{name} received"
        else:
            self.now = f"{name} received twice: stopped at once"
            sandbox.kill_children()
        if self.on_change is not None:
            self.on_change()
        if self.now and self._abandonable:
            raise StopNow(self.now)

    def check(self) -> None:
        """At a safe point: leave now if a second interrupt came."""
        if self.now:
            raise StopNow(self.now)

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """A wait a second interrupt may cut short (a model call). Signals reach the main thread only, so only
        its waits are cut there; an agent's thread (a run of several) is left by the main thread instead,
        which stops waiting for it (Run.execute_agents) after the recorder refuses further events."""
        if threading.current_thread() is not threading.main_thread():
            self.check()
            yield
            return
        outer, self._abandonable = self._abandonable, True
        try:
            if self.now:
                raise StopNow(self.now)
            yield
        finally:
            self._abandonable = outer

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Recording inside an abandonable wait (a retry's event): never cut short."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        outer, self._abandonable = self._abandonable, False
        try:
            yield
        finally:
            self._abandonable = outer


class Abandonable:
    """A model whose call a second interrupt may abandon."""

    def __init__(self, model: Any, interrupts: Interrupts):
        self.model, self.interrupts = model, interrupts
        self.name = model.name

    def complete(self, messages, tools):
        with self.interrupts.abandonable():
            return self.model.complete(messages, tools)
