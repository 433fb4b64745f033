"""`kopt selftest`: can this machine's numbers be trusted? One line per check, then a verdict.

Versions, the device and its driver, a full evaluation of the pinned baseline (its wall time by
phase, and the A/A noise band: the baseline timed against itself), an honest variant that must
pass, and cheats that must be rejected where the verifier says they are. The kernels are patches
of the small rmsnorm task's baseline, made at run time, each applied exactly once.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Callable

from kopt.verifier.evaluate import evaluate
from kopt.verifier.task import Task, load_task
from kopt.verifier.verdict import Verdict

TRITON_RANGE = ((3, 6), (3, 9))  # the range pyproject.toml allows
HONEST = ("BLOCK_N = 256", "BLOCK_N = 512")
# (name, what it does, old text, new text, the phase that must reject it)
CHEATS = (
    ("host read", "reads a tensor value on the host to skip work",
     "    if rows == 0:\n", "    if float(x.abs().max()) == 0.0:\n        return\n    if rows == 0:\n", "gate"),
    ("weight ignored", "drops the weight from the result",
     "(x * rstd * w)", "(x * rstd)", "correctness"),
    ("half the rows", "launches programs for half of the rows",
     "_rmsnorm_kernel[(rows,)]", "_rmsnorm_kernel[((rows + 1) // 2,)]", "correctness"),
    ("store past the row", "writes one element past each row (into the next row, or past the output)",
     "(x * rstd * w).to(OUT.dtype.element_ty), mask=mask)",
     "(x * rstd * w).to(OUT.dtype.element_ty), mask=start + offs < n_cols + 1)", "correctness"),
)
MAX_TRUSTED_BAND = 0.02  # a GPU whose A/A band is wider than this is too noisy to trust small speedups


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warn: bool = False  # informative, does not decide the verdict

    def line(self) -> str:
        mark = "WARN" if self.warn and not self.ok else ("PASS" if self.ok else "FAIL")
        return f"{mark:4}  {self.name}: {self.detail}"


def patch(source: str, old: str, new: str, name: str) -> str:
    if source.count(old) != 1:
        raise RuntimeError(f"selftest kernel {name!r}: its patch no longer applies to the rmsnorm baseline")
    return source.replace(old, new)


def versions() -> Check:
    import torch
    import triton
    version = tuple(int(x) for x in triton.__version__.split(".")[:2])
    ok = TRITON_RANGE[0] <= version <= TRITON_RANGE[1]
    detail = (f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}"
              f" ({'supported' if ok else 'NOT in the supported range'} 3.6-3.9)")
    return Check("versions", ok, detail)


def device_check(device: str) -> Check:
    import torch
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return Check("device", False, "--device cuda but no CUDA GPU is visible")
        index = int(device.split(":")[1]) if ":" in device else 0
        props = torch.cuda.get_device_properties(index)
        return Check("device", True, f"{props.name} (sm_{props.major}{props.minor}), CUDA {torch.version.cuda}, "
                                     f"{torch.cuda.device_count()} visible")
    if device == "sim":
        return Check("device", True, "simulated: the GPU path's protocol on the CPU interpreter (never GPU speed)")
    return Check("device", True, "CPU: ahead-of-time compile and the Triton interpreter; no GPU timing here")


def baseline_checks(verdict: Verdict, device: str) -> list[Check]:
    wall = ", ".join(f"{k} {v:.1f} s" for k, v in verdict.wall_s.items())
    checks = [Check("baseline evaluation", verdict.passed, f"{verdict.status}"
                    + (f" ({verdict.reason})" if verdict.reason else "") + f"; wall by phase: {wall}")]
    t = verdict.timing
    if t is None:
        return checks
    if t.kind == "interpreter":
        ratios = [w.speedup for w in t.workloads]
        spread = max(abs(r - 1.0) for r in ratios) if ratios else float("nan")
        band = f"+-{t.noise_band:.0%}" if t.noise_band is not None else "not measured"
        checks.append(Check("A/A noise band", True, f"interpreter: {band} (the baseline timed against itself); its "
                            f"ratios against its own copy span +-{spread:.0%} over {len(ratios)} cases: interpreter "
                            "times say nothing about GPU speed", warn=True))
    else:
        band = t.noise_band or 0.0
        trusted = t.kind != "gpu" or band <= MAX_TRUSTED_BAND
        ties = sum(w.tie for w in t.workloads)
        checks.append(Check("A/A noise band", trusted, f"+-{band:.1%} ({t.kind}); the baseline against itself is a "
                            f"tie on {ties} of {len(t.workloads)} workloads"
                            + ("" if trusted else f": wider than {MAX_TRUSTED_BAND:.0%}, small speedups are noise")))
    return checks


def run(device: str = "auto", task: Task | None = None, say: Callable[[str], None] = lambda _m: None) -> list[Check]:
    from kopt.verifier.evaluate import resolve_device
    device = resolve_device(device)
    task = task or load_task("rmsnorm")
    source = task.baseline_path.read_text()
    checks = [versions(), device_check(device)]
    if not checks[-1].ok:
        return checks
    say("evaluating the pinned baseline (the A/A check)")
    checks += baseline_checks(evaluate(source, task, device=device), device)
    say("evaluating an honest variant")
    honest = evaluate(patch(source, *HONEST, "honest"), task, device=device)
    checks.append(Check("honest variant passes", honest.passed, f"{HONEST[1]}: {honest.status}"
                        + (f" ({honest.reason})" if honest.reason else "")))
    for name, what, old, new, phase in CHEATS:
        say(f"evaluating the cheat {name!r}")
        verdict = evaluate(patch(source, old, new, name), task, device=device)
        caught = verdict.status == "rejected" and (verdict.phase or "").split(" ")[0] == phase  # "correctness (bf16)"
        checks.append(Check(f"cheat rejected: {name}", caught, f"{what}: {verdict.status} at {verdict.phase}"
                            + ("" if caught else f" (expected: rejected at {phase})")))
    return checks


def conclusion(checks: list[Check]) -> tuple[bool, str]:
    failed = [c.name for c in checks if not c.ok and not c.warn]
    if failed:
        return False, f"NOT TRUSTED: {', '.join(failed)} failed"
    return True, "TRUSTED: the verifier accepts honest kernels and rejects the cheats on this machine"


def cmd_selftest(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from kopt.verifier.devices import check_name
    err = Console(stderr=True)
    try:
        check_name(args.device)
        task = load_task(args.task)
    except ValueError as exc:
        err.print(f"[bold red]kopt: error:[/] {escape(str(exc))}", highlight=False)
        return 2
    console = Console(highlight=False, soft_wrap=True)  # one line per check, whatever the terminal width
    with err.status("selftest") as status:
        checks = run(args.device, task, say=status.update)
    for check in checks:
        colour = "yellow" if check.warn and not check.ok else ("green" if check.ok else "red")
        console.print(f"[{colour}]{escape(check.line())}[/]")
    trusted, line = conclusion(checks)
    console.print(f"[bold {'green' if trusted else 'red'}]{escape(line)}[/]")
    return 0 if trusted else 1
