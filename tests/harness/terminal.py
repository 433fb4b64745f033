"""A command in a pseudo-terminal, read as a person sees it: `Screen.wait_for` waits on what is shown (never
on a sleep), with ANSI control sequences removed. Not a test module."""

from __future__ import annotations

import os
import re
import time

import pexpect

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Screen:
    def __init__(self, args: list[str], timeout_s: float = 300.0, cwd: str = REPO):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COLUMNS", "LINES"))}
        env.update(TERM="xterm-256color", NO_COLOR="1")
        self.child = pexpect.spawn(args[0], args[1:], cwd=cwd, env=env, dimensions=(60, 200), encoding="utf-8",
                                   codec_errors="replace", timeout=timeout_s)
        self.raw = ""
        self.mark = 0  # wait_for searches what came after the last match

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def _read(self, timeout_s: float) -> bool:
        try:
            self.raw += self.child.read_nonblocking(1 << 16, timeout=timeout_s)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return False
        return True

    def wait_for(self, pattern: str, timeout_s: float = 300.0) -> re.Match:
        """The first match of `pattern` after the previous one; AssertionError with the screen if none comes."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.text, self.mark)
            if found:
                self.mark = found.end()
                return found
            alive = self._read(0.5)
            if not alive and not regex.search(self.text, self.mark):
                raise AssertionError(f"the command ended without showing {pattern!r}; it showed:\n{self.text[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not shown within {timeout_s:.0f} s; the screen:\n{self.text[-4000:]}")

    def interrupt(self) -> None:
        self.child.sendintr()  # the terminal's Ctrl-C: SIGINT to the foreground process group

    def finish(self, timeout_s: float = 300.0) -> int:
        """Wait for the command to end; its exit status."""
        deadline = time.monotonic() + timeout_s
        while self._read(0.5):
            if time.monotonic() > deadline:
                self.child.kill(9)
                raise AssertionError(f"still running {timeout_s:.0f} s later; the screen:\n{self.text[-4000:]}")
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -(self.child.signalstatus or 0)
