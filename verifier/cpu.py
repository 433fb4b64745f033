"""The CPU path of an evaluation: ahead-of-time compile, correctness under the interpreter, the
baseline's interpreter times; every deciding check made here, outside the candidate's process.

Each (case, dtype, seed) item is called once; items that repeat are called twice more with the
same buffers: again with another output poison and the grid's programs in reverse order (the
outputs must agree), then with new content written into the same buffers and a few prefix
slots re-pointed, programs shuffled (checked against a fresh reference), so a result cached
across calls or depending on program order fails.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kopt.verifier import check
from kopt.verifier.devices import HostDevice
from kopt.verifier.session import CallResult, ChildFailure, Inputs, Session, pack
from kopt.verifier.task import Task

POISONS = (float("nan"), 1.0e4)
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
CPU_CHILD_MEMORY = 16 << 30
BASELINE_MIN_TIMEOUT_S = 900.0
# A GPU workload's exact shapes under the interpreter, each launch running a sample of its programs: until
# this many of them stored something, or this many were run (programs past a request's end store nothing)
PROBE_SAMPLE = (2, 4096)
# A hidden shape in the workloads' regime (the task's holdout_probes): three requests of one size, so a sample
# over the grid's first axis in turns (interp) reaches each of them twice when that axis is the request's (two
# heads: in a head whose weight sits on a few keys, a path that skips keys can be right by chance)
HIDDEN_PROBE_SAMPLE = (6, 4096, True)
# The baseline's own error on a hidden case (bf16's comparative rule), on a sample of its programs
BASELINE_SAMPLE = (12, 4096)
POISON_FLOOR = 1.0e4
AA_CALLS = 4  # baseline items timed twice more (warm) for the interpreter's A/A band: 8 calls, a short phase
HOST = HostDevice()


def coin(secret: int, *parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, (secret, *parts))).encode()).hexdigest()[:8], 16)


def job_for(task: Task, mode: str, module: str = "kopt_candidate", target: str | None = None) -> dict[str, Any]:
    cfg = task.config
    return {"entry_point": cfg.entry_point, "module": module, "positional_args": cfg.positional_args,
            "mode": mode, "target": target}


@dataclass
class Checked:
    """What one session found: a row per item, interpreter wall times, autotune configs seen."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    autotune: dict[str, int] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    configs_run: dict[str, set[int]] = field(default_factory=dict)
    listed_ran: dict[str, set[int]] = field(default_factory=dict)  # kernel -> listed autotune configs run
    notes: list[str] = field(default_factory=list)  # what could not be checked (workload probes): unverified
    # a GPU workload whose exact shapes the CPU cannot judge (its sampled programs depend on programs not run):
    # an `error` verdict unless a case run failed (evaluate.judge_phases), never `ok` with a note
    unjudged: list[str] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)  # item -> max |reference| (the comparative rule's ulp)


class Correctness:
    """One dtype's items through one candidate process, judged here as they come back."""

    def __init__(self, task: Task, source: str, items: list[dict], secret: int, cancel: threading.Event,
                 raises: bool, device: HostDevice = HOST,
                 workload_configs: Callable[[], dict[str, dict[int, list[str]]] | None] | None = None,
                 probes: list[dict] = ()):
        self.task, self.source, self.items, self.secret, self.cancel = task, source, items, secret, cancel
        self.probes = list(probes)  # GPU workloads checked on a sample of their programs (check_probe)
        self.device = device
        self.reference = task.load_reference()
        self.outputs = task.config.outputs
        self.raises = raises
        self.calls = 0
        self.result = Checked()
        self.autotune = 0  # configs of the largest autotuned kernel seen so far
        self.errors: dict[str, tuple[float, float]] = {}  # item -> (rel. L2, max abs) of its first call
        self.on_item: Callable[[], None] | None = None  # told as each item is judged (progress display)
        # kernel -> listed autotune config -> the GPU workloads the pruner gives it (None: no compile report)
        self.workload_configs = workload_configs

    def inputs(self, item: dict, variant: int, like: Inputs | None = None) -> Inputs:
        tensors = self.reference.make_inputs(item["params"], DTYPES[item["dtype"]], item["seed"],
                                             self.device.tensor_device, **({"variant": variant} if variant else {}))
        return self.device.pack(tensors, self.outputs, like)

    def call(self, session: Session, label: str, item: dict, inputs: Inputs, poison: float, order: str,
             override: dict | None = None, choice: int | None = None,
             forced: dict[str, int] | None = None, sample: tuple | None = None) -> CallResult:
        self.calls += 1
        if choice is None:
            choice = self.calls % self.autotune if self.autotune > 1 else None
        result = session.call(label, item["key"], inputs, self.outputs, poison=poison,
                              end_aligned=bool(coin(self.secret, item["key"], self.calls) % 2),
                              program_order=order, order_seed=coin(self.secret, "order", item["key"]),
                              autotune_choice=choice, override=override, autotune_forced=forced, sample=sample)
        self.result.keys.update(result.keys)
        for kernel, ran in result.reply.get("configs_ran", {}).items():
            self.result.listed_ran.setdefault(kernel, set()).update(ran)
        if result.autotune:
            self.result.autotune.update(result.autotune)
            self.autotune = max(result.autotune.values())
            for kernel, count in result.autotune.items():
                if count > 1:
                    self.result.configs_run.setdefault(kernel, set()).add((choice or 0) % count)
        return result

    def run(self) -> Checked:
        tol = self.task.config.tolerance
        dev = self.device
        with Session(self.source, job_for(self.task, dev.child_mode), interpret=dev.interpret,
                     timeout_s=self.task.config.timeouts.correctness_s, memory_bytes=dev.child_memory_bytes,
                     cancel=self.cancel, device=dev) as session:
            for item in self.items:
                self.result.rows.append(self.check_item(session, item, tol[item["dtype"]].model_dump()))
                if self.on_item is not None:
                    self.on_item()
            for probe in self.probes:
                row = self.check_probe(session, probe, tol[probe["dtype"]].model_dump())
                if row is not None:
                    self.result.rows.append(row)
            if self.workload_configs is not None:
                self.check_workload_configs(session, tol)
            if self.raises:
                self.result.rows += self.check_raises(session)
        return self.result

    def check_workload_configs(self, session: Session, tol: Any) -> None:
        """Threat 30 through an autotune pruner: a config the pruner gives only workload-sized inputs
        (which the CPU cannot run) is forced, past the pruner, on every case of this dtype; a wrong
        result fails that case's row. A config that is not in the autotune list cannot be forced,
        so a pruner that makes one up for a workload fails the first case."""
        if not self.result.listed_ran:  # no autotuned kernel ran here: nothing could be forced
            return
        wanted = self.workload_configs()
        rows = dict(zip((item["key"] for item in self.items), self.result.rows))
        for kernel, picks in sorted((wanted or {}).items()):
            for index, workloads in sorted(picks.items()):
                if index in self.result.listed_ran.get(kernel, set()):
                    continue
                where = f"autotune config {index} of {kernel}, which the pruner gives {', '.join(workloads)}"
                if index < 0:
                    first = rows[self.items[0]["key"]] if self.items else None
                    if first is not None and first["passed"]:
                        first["passed"], first["reason"] = False, (
                            f"the pruner gives {', '.join(workloads)} a config of {kernel} that is not in its "
                            "@triton.autotune list: kopt checks every config a GPU workload may run on the CPU "
                            "cases, so a pruner must choose from the listed configs")
                    continue
                for item in self.items:
                    row = rows[item["key"]]
                    if not row["passed"]:
                        continue
                    inputs = self.inputs(item, 0)
                    try:
                        label = f"calling case {item['case']} ({item['dtype']}) under {where}" if not item["hidden"] \
                            else f"calling a hidden case ({item['dtype']}) under {where}"
                        result = self.call(session, label, item, inputs, POISONS[0], "forward", choice=0,
                                           forced={kernel: index})
                        reason = self.judge(result, inputs, tol[item["dtype"]].model_dump(), item)
                    finally:
                        inputs.close()
                    if reason is not None:
                        row["passed"], row["reason"] = False, (
                            f"under {where} (forced on this case: a config a GPU workload may run must be right "
                            f"on every case): {reason}")
                        break

    def check_probe(self, session: Session, item: dict, tol: dict) -> dict[str, Any] | None:
        """Threat 30 at the source: a GPU workload's exact inputs (every size, the page table, the pool), each
        launch running only a sample of its programs, drawn from the secret (interp.take_sampled); what they
        wrote is checked against the reference of those rows. Whatever the kernel's host code, heuristics,
        pruner or kernel decide from the sizes, they decide as on the GPU. A kernel the sample cannot judge
        (two launches in a call, atomics) is unjudged (`Checked.unjudged`): the verdict is an `error`, since
        a branch on the workloads' sizes alone would otherwise pass unseen (an independent panel's kernel
        halved the prefix at Hkv >= 4 and P >= 1024 and added an empty second launch: `ok` with a note)."""
        if self.result.unjudged:  # (the first one decides; the others would only repeat it)
            return None
        what = f"GPU workload {item['case']}'s exact shapes" if not item["hidden"] else \
            "a hidden shape in the GPU workloads' regime"
        label = f"calling {what} ({item['dtype']}) on a sample of its programs"
        row = check.new_row(dict(item, case=f"{item['case']} (sampled programs)"))
        keys = set(self.result.keys)
        choice = coin(self.secret, "probe", item["key"]) % self.autotune if self.autotune > 1 else 0
        inputs = self.inputs(item, 0)
        # the poison: far above any attention output (a mean of values), and drawn, so no kernel writes it
        # on purpose; a NaN the kernel writes (a slot it should not read) is a wrong output, not "unwritten"
        poison = POISON_FLOOR * (1.0 + coin(self.secret, "poison", item["key"]) % 4096 / 4096)
        try:
            result = self.call(session, label, item, inputs, poison, "shuffle", choice=choice,
                               sample=HIDDEN_PROBE_SAMPLE if item["hidden"] else PROBE_SAMPLE)
            exc = result.exception
            if exc is not None and exc["type"] == "InterpreterLimitation":
                self.result.keys = keys  # (its specializations stay as unverified as they were)
                self.result.unjudged.append(f"{what} cannot be checked on a sample of its programs: "
                                            f"{exc['message']}")
                return None
            sampled = result.reply.get("sampled") or []
            row["interpreter_s"] = result.wall_s
            reason = self.judge(result, inputs, tol, item) if exc is not None or result.problems else None
            if reason is None:
                reason = self.judge_sampled(result, inputs, tol, item, sampled, poison)
        finally:
            inputs.close()
        if reason == "":
            self.result.keys = keys
            return None
        runs = ", ".join(f"{stored} of {ran} programs run stored" for ran, stored in sampled)
        row["passed"], row["reason"] = reason is None, (
            None if reason is None else f"on {what} ({runs}): {reason}")
        return row

    def judge_sampled(self, result: CallResult, inputs: Inputs, tol: dict, item: dict,
                      sampled: list, poison: float) -> str | None:
        """The sampled programs' writes (the elements no longer the poison) against the reference of
        those rows; "" when nothing was written (the workload stays unverified, with a note)."""
        only_rows = getattr(self.reference, "reference")
        for name in self.outputs:
            out = result.outputs[name]
            wrote = check.written(out, poison)
            if not wrote.any():
                self.result.notes.append(f"{item['case']}: the sampled programs ({sampled}) wrote nothing, so its "
                                         "shapes were not checked")
                return ""
            rows = check.row_mask(wrote)
            got, ref, at = check.sampled_pair(out, only_rows(inputs.tensors, only=rows)[name], wrote, rows)
            reason, index, _, _ = check.judge(got, ref, tol, item["dtype"], shown=check.full_index(at))
            if reason:
                where = check.locate(self.reference, inputs.tensors, name, check.full_index(at)(index), item["hidden"])
                return f"{name}: {reason}" + (f" ({where})" if where else "")
        return None

    def check_item(self, session: Session, item: dict, tol: dict) -> dict[str, Any]:
        label = f"calling case {item['case']} ({item['dtype']})" if not item["hidden"] else \
            f"calling a hidden case ({item['dtype']})"
        row = check.new_row(item)
        first_in = self.inputs(item, 0)
        try:
            first = self.call(session, label, item, first_in, POISONS[0], "forward", choice=0)
            self.result.wall_s[item["key"]] = first.wall_s
            row["interpreter_s"] = first.wall_s
            reason = self.judge(first, first_in, tol, item)
            for choice in range(1, self.autotune):  # a GPU may pick any autotune config: check each
                if reason is None:
                    other = self.call(session, f"{label} (autotune config {choice})", item, first_in, POISONS[0],
                                      "forward", choice=choice)
                    reason = self.judge(other, first_in, tol, item)
                    if reason is not None:
                        reason = f"under autotune config {choice}: {reason}"
            if reason is None and item["repeat"]:
                second = self.call(session, label + ", again", item, first_in, POISONS[1], "reverse")
                reason = self.judge(second, first_in, tol, item)
                if reason is not None:
                    reason = ("second call on the same inputs (output poisoned with 1e4, the grid's programs in "
                              "reverse order: a GPU runs them in any order): " + reason)
                else:
                    reason = check.repeat_disagreement(first.outputs, second.outputs, tol)
                if reason is None and self.has_variants():
                    fresh = self.inputs(item, 1, like=first_in)
                    try:
                        third = self.call(session, label + " with new inputs in the same buffers", item, fresh,
                                          POISONS[0], "shuffle")
                        reason = self.judge(third, fresh, tol, item)
                        if reason is not None:
                            reason = ("third call, new content in the same buffers and a few prefix slots "
                                      "re-pointed (programs shuffled): " + reason)
                    finally:
                        fresh.close()
        finally:
            first_in.close()
        row["passed"], row["reason"] = reason is None, reason
        row["rel_l2"], row["max_abs"] = self.errors.get(item["key"], (None, None))
        return row

    def has_variants(self) -> bool:
        import inspect
        return "variant" in inspect.signature(self.reference.make_inputs).parameters

    def judge(self, result: CallResult, inputs: Inputs, tol: dict, item: dict) -> str | None:
        if result.exception is not None:
            exc = result.exception
            if exc["type"] == "InterpreterLimitation":
                raise InterpreterLimit(f"{exc['message']}" + (f"\n{exc['where']}" if exc["where"] else ""))
            if exc["type"] == "DataRace":  # a wrong kernel on these inputs: the row fails, naming its case
                return f"a race between programs: {exc['message']}"
            # a hidden item's message is the kernel's own text, made from inputs it saw: its sizes and options
            # (an independent panel's kernel raised with them in the message), which an agent must not learn
            message = exc["message"] if not item.get("hidden") else (
                "(the message is withheld on a hidden case: it could carry the case's sizes)")
            raise CandidateError(f"{exc['type']}: {message}" + (f"\n{exc['where']}" if exc["where"] else ""))
        if result.problems:
            return "; ".join(result.problems)
        expected = self.reference.reference(inputs.tensors)
        for name, ref in expected.items():
            reason, index, rel, worst = check.judge(result.outputs[name], ref, tol, item["dtype"])
            if rel is not None:  # the first call's errors: what the baseline's are compared with
                self.errors.setdefault(item["key"], (rel, worst))
                self.result.scales.setdefault(item["key"], float(ref.abs().max()) if ref.numel() else 0.0)
            if reason:
                where = check.locate(self.reference, inputs.tensors, name, index, item["hidden"])
                return f"{name}: {reason}" + (f" ({where})" if where else "")
            reason = part_failure(self.reference, inputs.tensors, name, result.outputs[name], ref, tol, item["hidden"])
            if reason:
                return f"{name}: {reason}"
        return None

    def check_raises(self, session: Session) -> list[dict[str, Any]]:
        rows = []
        cases = {c.id: c for c in self.task.config.cases}
        dtype = self.items[0]["dtype"] if self.items else "float32"
        for spec in self.task.config.raises:
            item = {"key": f"raises-{spec.id}", "case": f"raises:{spec.id}", "params": cases[spec.case].params, "dtype": dtype,
                    "seed": coin(self.secret, spec.id), "hidden": False}
            row = check.new_row(item)
            inputs = self.inputs(item, 0)
            try:
                result = self.call(session, f"checking that {spec.id} raises", item, inputs, POISONS[0], "forward",
                                   override=spec.set)
            finally:
                inputs.close()
            exc = result.exception
            options = ", ".join(f"{k}={v!r}" for k, v in spec.set.items())
            wanted = [spec.exception] if isinstance(spec.exception, str) else spec.exception
            if exc is None:
                row["reason"] = f"with {options} the entry point must raise {' or '.join(wanted)}; it returned normally"
            elif not set(wanted) & set(exc["mro"]):
                row["reason"] = (f"with {options} the entry point must raise {' or '.join(wanted)}; it raised "
                                 f"{exc['type']}")
            row["passed"] = row["reason"] is None
            rows.append(row)
        return rows


def part_failure(reference: Any, inputs: dict[str, Any], name: str, out: torch.Tensor, ref: torch.Tensor,
                 tol: dict, hidden: bool = False) -> str | None:
    """check.group_failure over the task's parts of the output (reference.error_groups), if it names any."""
    groups = getattr(reference, "error_groups", None)
    if groups is None:
        return None
    reason = check.group_failure(out, ref.to(out.device), tol, groups(inputs, name))
    if reason and hidden:  # a hidden case's part labels would leak its request count
        return "wrong result in one part of the output (a head of a request) of a hidden case"
    return reason


class CandidateError(Exception):
    """The entry point raised on a call that must succeed (a rejection with its message)."""


class InterpreterLimit(Exception):
    """The interpreter cannot run a construct the kernel uses: an `error`, not the kernel's fault."""


@dataclass
class Baseline:
    """What the pinned baseline did on the candidate's inputs: interpreter times, and for dtypes with a
    comparative rule (bf16) its own error against the reference on every item."""

    times: dict[str, float] = field(default_factory=dict)
    again: dict[str, tuple[float, float]] = field(default_factory=dict)  # two warm calls on the same inputs: A/A
    errors: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # key -> rel, max abs, max |ref|
    sampled: set[str] = field(default_factory=set)  # the keys whose errors a sample of programs measured


def baseline_run(task: Task, timed: list[dict], compared: list[dict], cancel: threading.Event,
                 device: HostDevice = HOST) -> Baseline:
    """The pinned baseline on the same inputs as the candidate (trusted code, its own process)."""
    reference = task.load_reference()
    out = Baseline()
    tolerances = task.config.tolerance
    timed_keys = {i["key"] for i in timed}
    todo = timed + [i for i in compared if i["key"] not in timed_keys]
    compared_keys = {i["key"] for i in compared}
    # the pinned baseline is trusted: its slowness on a busy machine is no reason to fail anything
    timeout_s = max(task.config.timeouts.correctness_s, BASELINE_MIN_TIMEOUT_S)
    with Session(task.baseline_path.read_text(), job_for(task, device.child_mode, "kopt_baseline"),
                 interpret=device.interpret, timeout_s=timeout_s, memory_bytes=device.child_memory_bytes,
                 cancel=cancel, device=device) as s:
        for item in todo:
            inputs = device.pack(reference.make_inputs(item["params"], DTYPES[item["dtype"]], item["seed"],
                                                       device.tensor_device), task.config.outputs)
            # a hidden case's own error, for the comparative rule only, on a sample of the baseline's programs
            # under the interpreter (the longest hidden case cost the baseline 15 s of a 90 s evaluation)
            sample = BASELINE_SAMPLE if (device.interpret and item["hidden"] and item["key"] not in timed_keys
                                         and samples_rows(reference)) else None
            poison = POISON_FLOOR * 1.5 if sample else 0.0
            try:
                result = s.call(f"running the baseline on {item['case']}", item["key"], inputs, task.config.outputs,
                                poison=poison, end_aligned=False, sample=sample, order_seed=item["seed"])
                if result.exception is not None:
                    raise ChildFailure(f"the baseline raised {result.exception['type']}: "
                                       f"{result.exception['message']}")
                if item["key"] in timed_keys:
                    out.times[item["key"]] = result.wall_s
                if item["key"] in timed_keys and len(out.again) < AA_CALLS:
                    # two more calls, both warm: a process's first call of a specialization carries the
                    # interpreter's one-time setup (tens of times a warm call on small cases), so the first
                    # call against a second would measure that setup, not the noise
                    pair = [s.call(f"running the baseline on {item['case']} again", item["key"], inputs,
                                   task.config.outputs, poison=0.0, end_aligned=False).wall_s for _ in range(2)]
                    out.again[item["key"]] = tuple(pair)
                if item["key"] in compared_keys:
                    tol = tolerances[item["dtype"]].model_dump()
                    out.errors[item["key"]] = (baseline_errors_sampled(reference, inputs, result, poison, tol, item)
                                               if sample else baseline_errors(reference, inputs, result, tol, item))
                    if sample:
                        out.sampled.add(item["key"])
            finally:
                inputs.close()
    return out


def samples_rows(reference: Any) -> bool:
    """Whether the task's reference computes chosen rows only (`only=`): what a sampled run is judged by."""
    return "only" in inspect.signature(reference.reference).parameters


def baseline_errors(reference: Any, inputs: Inputs, result: CallResult, tol: dict,
                    item: dict) -> tuple[float, float, float]:
    errors = (0.0, 0.0, 0.0)
    for name, ref in reference.reference(inputs.tensors).items():
        _, _, rel, worst = check.judge(result.outputs[name], ref, tol, item["dtype"])
        errors = (rel or 0.0, worst or 0.0, float(ref.abs().max()) if ref.numel() else 0.0)
    return errors


def baseline_errors_sampled(reference: Any, inputs: Inputs, result: CallResult, poison: float, tol: dict,
                            item: dict) -> tuple[float, float, float]:
    """The baseline's error over the rows its sampled programs wrote: an estimate of its error over all of
    them, which the comparative rule's factor and ulp absorb (the candidate runs every program)."""
    errors = (0.0, 0.0, 0.0)
    for name in result.outputs:
        out = result.outputs[name]
        wrote = check.written(out, poison)
        if not wrote.any():
            raise ChildFailure(f"the baseline's sampled programs wrote nothing on {item['case']}")
        rows = check.row_mask(wrote)
        got, ref, _ = check.sampled_pair(out, reference.reference(inputs.tensors, only=rows)[name], wrote, rows)
        _, _, rel, worst = check.judge(got, ref, tol, item["dtype"])
        errors = (rel or 0.0, worst or 0.0, float(ref.abs().max()) if ref.numel() else 0.0)
    return errors


def comparative(rows: list[dict], items: list[dict], base: Baseline, task: Task,
                scales: dict[str, float] | None = None) -> None:
    """bf16's rule: the candidate's error at most `comparative_factor` x the baseline's on the same inputs,
    plus one bf16 ulp at the output's magnitude (a 5% logit-scale error hides inside bf16's own bounds).
    The magnitude is the whole output's (`scales`, from the candidate's full reference) where the baseline's
    error was measured on a sample of its rows (a sample of small rows would make the ulp too small)."""
    for row, item in zip(rows, items):
        factor = task.config.tolerance[item["dtype"]].comparative_factor
        if factor is None or not row["passed"] or item["key"] not in base.errors or row["rel_l2"] is None:
            continue
        base_rel, base_worst, scale = base.errors[item["key"]]
        scale = max(scale, (scales or {}).get(item["key"], 0.0))
        if row["rel_l2"] > factor * base_rel + 2.0 ** -check.BF16_ULP_BITS or \
                row["max_abs"] > factor * base_worst + check.ulp(scale, item["dtype"]):
            row["passed"] = False
            row["reason"] = (f"less accurate than the baseline on the same inputs: rel. L2 {row['rel_l2']:.3g} vs "
                             f"{base_rel:.3g}, max abs {row['max_abs']:.3g} vs {base_worst:.3g} (allowed: {factor:g}x "
                             "the baseline's + one ulp)")


def compile_calls(task: Task, source: str, items: list[dict], target: str, cancel: threading.Event,
                  workloads: list[tuple[str, dict]] | None = None) -> dict[str, Any]:
    """Ahead-of-time compile of every kernel the entry point launches on `items` (real CPU tensors),
    and on the GPU workloads given as meta tensors (nothing runs): the compile child's report."""
    reference = task.load_reference()
    with Session(source, job_for(task, "compile", target=target), interpret=False,
                 timeout_s=task.config.timeouts.compile_s, memory_bytes=CPU_CHILD_MEMORY, cancel=cancel) as s:
        launched = 0
        for item in items:
            inputs = pack(reference.make_inputs(item["params"], DTYPES[item["dtype"]], item["seed"], "cpu"),
                          task.config.outputs)
            try:
                result = s.call(f"compiling for case {item['case']}", item["key"], inputs, task.config.outputs,
                                poison=0.0, end_aligned=False)
            finally:
                inputs.close()
            if result.exception is not None:
                exc = result.exception
                return {"error": f"{exc['type']}: {exc['message']}" + (f"\n{exc['where']}" if exc["where"] else ""),
                        "kernels": []}
            launched += len(result.keys)
        report = s.request("report")
        names = {item["key"]: f"{item['case']}/{item['dtype']}" for item in items}
        for kernel in report.get("kernels", []):  # which case's call compiled it, in the task's words
            kernel["case"] = names.get(kernel.get("case"), kernel.get("case"))
        if not launched:
            report["error"] = report.get("error") or "the entry point launched no Triton kernel"
        report["launches"], report["workload_keys"], report["launch_errors"] = [], {}, {}
        report["workload_configs"] = {}
        gpu_dtype = DTYPES[task.config.gpu.dtypes[0]]
        for workload_id, params in workloads or []:
            inputs = pack(reference.make_inputs(params, gpu_dtype, coin(0, workload_id), "meta"), task.config.outputs)
            result = s.call(f"dry-running workload {workload_id} on meta tensors", f"workload-{workload_id}", inputs,
                            task.config.outputs, poison=0.0, end_aligned=False)
            if result.exception is not None:
                exc = result.exception
                report["launch_errors"][workload_id] = f"{exc['type']}: {exc['message'][:300]}"
                continue
            if result.reply.get("error"):
                report["launch_errors"][workload_id] = result.reply["error"]
            report["launches"] += [dict(row, workload=workload_id) for row in result.reply.get("rows", [])]
            report["workload_keys"][workload_id] = result.reply.get("workload_keys", [])
            for kernel, picked in result.reply.get("configs_picked", {}).items():
                for index in picked:
                    report["workload_configs"].setdefault(kernel, {}).setdefault(int(index), []).append(workload_id)
        return report
