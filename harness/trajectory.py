"""trajectory.jsonl: the append-only event log, the single source of truth of a run.

One JSON object per line, flushed and fsynced per event; appending costs the same at event
10 and at event 100,000. A crash can leave a torn last line: `read` drops it (and truncates
the file to the last complete event) so the log stays valid.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

from kopt.harness import events
from kopt.harness.events import UnsupportedTrajectory

TRAJECTORY = "trajectory.jsonl"
Event = events.Base  # any event of harness.events

__all__ = ["TRAJECTORY", "Event", "CorruptTrajectory", "UnsupportedTrajectory", "read", "iter_events", "Writer",
           "write_atomic"]


class CorruptTrajectory(ValueError):
    """A line other than the last is unreadable: resuming would silently lose the events after it."""


def read(path: Path, repair: bool = True) -> tuple[list[Event], int]:
    """All complete events and the byte length they occupy (see `scan`)."""
    log = scan(path, repair)
    found = list(log)
    return found, log.size


class scan:  # noqa: N801 (an iterator read like a function)
    """The complete events of a log, one at a time (a resume folds them without holding them all).

    Only the last line can be torn by a crash (no newline, or cut JSON): it is dropped and, with
    repair, cut from the file once the iteration ends. An unreadable line anywhere else raises
    CorruptTrajectory and the file is left untouched: dropping everything after it would lose
    recorded work. A log in a format this kopt does not read raises UnsupportedTrajectory.
    `size`: the byte length the complete events occupy, once iterated.
    """

    def __init__(self, path: Path, repair: bool = True):
        self.path, self.repair, self.size = path, repair, 0

    def __iter__(self) -> Iterator[Event]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.splitlines(keepends=True)
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                break  # only the last line can lack its newline
            try:
                event = events.parse(line)
            except UnsupportedTrajectory as exc:
                raise UnsupportedTrajectory(f"{self.path}: {exc}") from None
            except (ValueError, UnicodeDecodeError):
                if number == len(lines):
                    break
                raise CorruptTrajectory(f"{self.path}: line {number} of {len(lines)} is not a valid event; the "
                                        f"{len(lines) - number} events after it are intact. Repair or remove that "
                                        "line by hand, then resume.") from None
            self.size += len(line)
            yield event
        if self.repair and self.size < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(self.size)
                f.flush()
                os.fsync(f.fileno())


def iter_events(path: Path) -> Iterator[Event]:
    """Stream events without repairing (safe while a run is writing); stops at the first unreadable line."""
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            try:
                yield events.parse(line)
            except UnsupportedTrajectory as exc:
                raise UnsupportedTrajectory(f"{path}: {exc}") from None
            except (ValueError, UnicodeDecodeError):
                return


class Writer:
    """Appends events; seq and elapsed continue from what the log already holds."""

    def __init__(self, path: Path, next_seq: int = 0, elapsed_offset_s: float = 0.0, fsync: bool = True):
        self.path = path
        self.seq = next_seq
        self.fsync = fsync
        self._offset = elapsed_offset_s
        self._start = time.monotonic()
        self._file = open(path, "ab")

    @property
    def elapsed_s(self) -> float:
        return self._offset + (time.monotonic() - self._start)

    def append(self, event: Event | str, /, **data: Any) -> Event:
        """Stamp the envelope (seq, time, elapsed) on an event and append it; `append("type", **fields)`
        builds and validates the event from plain data."""
        if isinstance(event, str):
            event = events.make(event, **data)
        event.seq, event.time, event.elapsed_s = self.seq, round(time.time(), 6), round(self.elapsed_s, 6)
        self._file.write(events.dump(event) + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.seq += 1
        return event

    def offset(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def write_atomic(path: Path, text: str) -> None:
    """Replace a small file atomically (write, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
