"""Every evaluated source, immutable, with its Verdict: candidates/0001.py + 0001.json.

Content-hash cache: the same source is never verified twice in a run. An evaluation that was
interrupted (source written, verdict not) keeps its id and is verified on the next attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kopt.harness.trajectory import write_atomic
from kopt.verifier.verdict import INTERPRETER_LABEL, Verdict

# What a score is, by the verdict's timing kind: a GPU speedup, or a ratio that is not one.
LABELS = {"gpu": "GPU geomean speedup", "interpreter": f"{INTERPRETER_LABEL} time ratio",
          "simulated": "simulated time ratio"}


@dataclass
class Candidate:
    id: int
    sha256: str
    verdict: Verdict | None
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.id:04d}"

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed


def score(verdict: Verdict | None) -> tuple[float | None, str]:
    """The number a candidate is ranked by, and what it is: a GPU geomean or an interpreter ratio."""
    if verdict is None or not verdict.passed or verdict.timing is None:
        return None, ""
    t = verdict.timing
    value = {"gpu": t.geomean_speedup, "interpreter": t.interpreter_ratio, "simulated": t.simulated_ratio}[t.kind]
    if value is None and t.kind != "gpu":  # files written before the ratio had its own field
        value = next((v for v in (t.simulated_ratio, t.interpreter_ratio, t.geomean_speedup) if v is not None), None)
    return value, LABELS[t.kind]


def rank(candidate: Candidate) -> tuple | None:
    """How a passing candidate ranks for best.py (None: it did not pass)."""
    v = candidate.verdict
    value = score(v)[0]
    if v is None or not v.passed or value is None:
        return None
    return (1, value, -candidate.id) if v.timing.kind == "gpu" else (0, candidate.id)


def load(path: Path) -> tuple[Verdict | None, dict[str, Any]]:
    """A candidate file's verdict and meta (note, parent, tool index): the one reader of candidates/NNNN.json.
    (None, {}) before it is written; an unreadable file raises."""
    if not path.exists():
        return None, {}
    record = json.loads(path.read_text())
    return Verdict.model_validate(record["verdict"]), record.get("meta") or {}


def read(path: Path) -> tuple[Verdict | None, dict[str, Any]]:
    """`load` for readers of a run that may be live or from another version: (None, {}) if unreadable."""
    try:
        return load(path)
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None, {}


class CandidateStore:
    def __init__(self, run_dir: Path):
        self.dir = run_dir / "candidates"
        self.dir.mkdir(exist_ok=True)
        self.run_dir = run_dir
        self.items: dict[int, Candidate] = {}
        self.by_sha: dict[str, int] = {}
        self._best: Candidate | None = None
        self._lock = threading.RLock()  # agents of one run share the store: ids and best.py under it
        self._claims: dict[str, threading.Lock] = {}
        for py in sorted(self.dir.glob("[0-9][0-9][0-9][0-9].py")):
            cid = int(py.stem)
            verdict, meta = load(py.with_suffix(".json"))
            sha = hashlib.sha256(py.read_bytes()).hexdigest()
            self.items[cid] = Candidate(cid, sha, verdict, meta)
            self.by_sha[sha] = cid
            self._consider(self.items[cid])

    def _consider(self, candidate: Candidate) -> bool:
        """Keep the running best; True if this one is it now. GPU-timed candidates rank by speedup (ties go to
        the earlier one); where nothing was timed on a GPU the latest passing candidate is the one delivered,
        since an interpreter "best" is mostly its noise (ranked above by nothing but the order of passing)."""
        if rank(candidate) is None or (self._best is not None and rank(candidate) <= rank(self._best)):
            return False
        self._best = candidate
        return True

    def write_best(self, cid: int, why: str) -> None:
        """best.py: the candidate's source, labelled when its score is not a GPU speedup."""
        source = self.path(cid).read_text()
        v = self.items[cid].verdict
        if v is None or v.timing is None or v.timing.kind != "gpu":
            source = (f"# kopt: candidate {cid:04d} ({why}); not timed on a GPU: use `kopt rescore {self.run_dir}` "
                      "on a GPU machine\n" + source)
        write_atomic(self.run_dir / "best.py", source)

    def path(self, cid: int) -> Path:
        return self.dir / f"{cid:04d}.py"

    def claim(self, source: str) -> threading.Lock:
        """Held while one source is snapshotted, evaluated and logged: a second agent with the same source waits,
        then finds it evaluated (never verified twice at once, never logged twice)."""
        sha = hashlib.sha256(source.encode()).hexdigest()
        with self._lock:
            return self._claims.setdefault(sha, threading.Lock())

    def snapshot(self, source: str) -> Candidate:
        """The candidate holding this exact source: an existing one, or a new immutable file."""
        sha = hashlib.sha256(source.encode()).hexdigest()
        with self._lock:
            if sha in self.by_sha:
                return self.items[self.by_sha[sha]]
            cid = max(self.items, default=0) + 1
            path = self.path(cid)
            write_atomic(path, source)
            os.chmod(path, 0o444)
            self.items[cid] = Candidate(cid, sha, None, {})
            self.by_sha[sha] = cid
            return self.items[cid]

    def record(self, cid: int, verdict: Verdict, meta: dict[str, Any]) -> None:
        with self._lock:
            self._record(cid, verdict, meta)

    def _record(self, cid: int, verdict: Verdict, meta: dict[str, Any]) -> None:
        candidate = self.items[cid]
        candidate.verdict, candidate.meta = verdict, meta
        write_atomic(self.path(cid).with_suffix(".json"),
                     json.dumps({"id": cid, "sha256": candidate.sha256, "meta": meta,
                                 "verdict": verdict.model_dump(mode="json")}, indent=1))
        if self._consider(candidate):
            gpu = verdict.timing is not None and verdict.timing.kind == "gpu"
            self.write_best(cid, "the best GPU speedup" if gpu else "the latest passing candidate")

    def best(self) -> Candidate | None:
        return self._best

    def leaderboard(self, n: int = 5) -> list[Candidate]:
        with self._lock:
            ranked = [c for c in self.items.values() if score(c.verdict)[0] is not None]
        return sorted(ranked, key=lambda c: (-score(c.verdict)[0], c.id))[:n]
