"""Compare a candidate's outputs with the trusted reference (never in the candidate's process).

On CPU this runs in the orchestrator; on GPU in a trusted child (the reference and the
baseline's outputs for bf16's comparative rule are computed there, on the device).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

BF16_ULP_BITS = 8  # bf16 keeps 8 significant bits


def ulp(magnitude: float, dtype: str) -> float:
    bits = {"bfloat16": BF16_ULP_BITS, "float16": 11, "float32": 24}[dtype]
    return 2.0 ** (math.floor(math.log2(max(magnitude, 1e-30))) - bits + 1)


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = (out.double() - ref.double()).abs()
    norm = float(ref.double().norm())
    return float(diff.norm()) / max(norm, 1e-30), float(diff.max()) if diff.numel() else 0.0


def compare(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any], dtype: str,
            base: torch.Tensor | None = None) -> tuple[str | None, float | None, float | None]:
    """(reason or None, rel_l2, max_abs). Fail closed: non-finite values are never tolerated."""
    if out.shape != ref.shape:
        return f"output shape {tuple(out.shape)} != expected {tuple(ref.shape)}", None, None
    bad = ~torch.isfinite(out)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()
        return (f"{int(bad.sum())} non-finite output values in {len(rows)} rows (first row {int(rows[0])}): "
                "rows never written, or a NaN from an unreferenced pool slot"), None, None
    rel, worst = errors(out, ref)
    excess = (out.double() - ref.double()).abs() - (tol["atol"] + tol["rtol"] * ref.double().abs())
    if rel > tol["rel_l2"] or (excess > 0).any():
        at = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape)) if excess.numel() else ()
        return (f"wrong result: rel. L2 error {rel:.3g} (limit {tol['rel_l2']:.3g}), max abs error {worst:.3g}; "
                f"worst element {at}: got {float(out[at]):.5g}, expected {float(ref[at]):.5g}"), rel, worst
    factor = tol.get("comparative_factor")
    if factor is not None and base is not None:
        base_rel, base_worst = errors(base, ref)
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        if rel > factor * base_rel + 2.0 ** -BF16_ULP_BITS or worst > factor * base_worst + ulp(scale, dtype):
            return (f"less accurate than the baseline: rel. L2 {rel:.3g} vs baseline {base_rel:.3g}, max abs "
                    f"{worst:.3g} vs {base_worst:.3g} (allowed: {factor}x the baseline + one ulp)"), rel, worst
    return None, rel, worst


def check_items(reference: Any, items: list[dict], results: dict[str, dict], tolerances: dict[str, dict],
                device: str, baseline: Callable | None = None, positional: int = 0) -> list[dict[str, Any]]:
    """One verdict row per item; an item the candidate never produced fails."""
    rows = []
    for item in items:
        row = {"case": item["case"], "dtype": item["dtype"], "hidden": item.get("hidden", False),
               "passed": False, "rel_l2": None, "max_abs": None, "reason": None, "interpreter_s": None}
        rows.append(row)
        entry = results.get(item["key"])
        if entry is None:
            row["reason"] = "not run (an earlier call failed)"
            continue
        row["interpreter_s"] = entry.get("wall_s") if device == "cpu" else None
        if entry["problems"]:
            row["reason"] = "; ".join(entry["problems"])
            continue
        dtype = getattr(torch, item["dtype"])
        tol = tolerances[item["dtype"]]
        inputs = reference.make_inputs(item["params"], dtype, item["seed"], device)
        expected = reference.reference(inputs)
        base_out = None
        if baseline is not None and tol.get("comparative_factor") is not None:
            base_out = _run_baseline(baseline, inputs, positional, list(expected))
        for name, ref in expected.items():
            out = entry["outputs"][name].to(ref.device)
            reason, row["rel_l2"], row["max_abs"] = compare(out, ref, tol, item["dtype"],
                                                            None if base_out is None else base_out[name])
            repeat = entry.get("repeat_diff", {}).get(name)
            if reason is None and repeat is not None and repeat > tol["atol"]:
                reason = (f"two identical calls disagree by {repeat:.3g} (different output poison): stale memory, "
                          "unwritten rows or a race")
            if reason:
                row["reason"] = f"{name}: {reason}"
                break
        row["passed"] = row["reason"] is None
    return rows


def _run_baseline(fn: Callable, inputs: dict[str, Any], positional: int, outputs: list[str]) -> dict[str, torch.Tensor]:
    outs = {n: torch.zeros_like(inputs[n]) for n in outputs}
    call = dict(inputs, **outs)
    names = list(call)
    fn(*[call[n] for n in names[:positional]], **{n: call[n] for n in names[positional:]})
    return outs


def check_outputs(job: dict, load: Callable[[str, str], Any]) -> dict[str, Any]:
    """Child entry (GPU): outputs file in, verdict rows out."""
    results = torch.load(job["outputs_file"], weights_only=True)
    reference = load(job["reference"], "kopt_task_reference")
    baseline = load(job["baseline"], "kopt_task_baseline") if job.get("baseline") else None
    fn = getattr(baseline, job["entry_point"]) if baseline else None
    return {"rows": check_items(reference, job["items"], results, job["tolerances"], job["device"], fn,
                                job["positional_args"])}


# ---- the CPU path (verifier/cpu.py): one row per item, judged in the trusted process
def new_row(item: dict) -> dict[str, Any]:
    return {"case": item["case"], "dtype": item["dtype"], "hidden": item.get("hidden", False), "passed": False,
            "rel_l2": None, "max_abs": None, "reason": None, "interpreter_s": None}


def worst_index(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any]) -> tuple[int, ...] | None:
    if out.shape != ref.shape or not out.numel():
        return None
    bad = ~torch.isfinite(out)
    if bad.any():
        return tuple(int(i) for i in torch.unravel_index(bad.flatten().nonzero()[0, 0], out.shape))
    excess = (out.double() - ref.double()).abs() - (tol["atol"] + tol["rtol"] * ref.double().abs())
    return tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))


def judge(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any],
          dtype: str) -> tuple[str | None, Any, float | None, float | None]:
    """(reason or None, index of the worst element, rel. L2 error, max abs error)."""
    reason, rel, worst = compare(out, ref.to(out.device) if ref.device != out.device else ref, tol, dtype)
    return reason, (worst_index(out, ref, tol) if reason else None), rel, worst


GROUP_FACTOR = 4.0  # a part's relative L2 error may be this many times the whole output's limit
PART_FLOOR = 1e-2  # parts with an RMS under this fraction of the whole output's are measured against it


def group_failure(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any], groups: list[tuple[str, Any]]) -> str | None:
    """Errors judged per part as well as globally: the first part (a head of a request, a row) whose relative
    L2 error exceeds GROUP_FACTOR x the limit, so a wrong part hides in no long right one. A part whose
    reference is tiny next to the whole output's (under PART_FLOOR of its RMS) is measured against that
    floor instead, so rounding on near-zero values is no failure."""
    limit = GROUP_FACTOR * tol["rel_l2"]
    whole = float(ref.double().norm()) / max(ref.numel(), 1) ** 0.5
    for label, index in groups:
        r, o = ref[index].double(), out[index].double()
        if not r.numel():
            continue
        norm = max(float(r.norm()), PART_FLOOR * whole * r.numel() ** 0.5, 1e-30)
        rel = float((o - r).norm()) / norm
        if rel > limit:
            return (f"wrong result in {label}: rel. L2 error {rel:.3g} there (limit per part {limit:.3g}; the whole "
                    "output may pass: a wrong part must not be diluted by right ones)")
    return None


def repeat_disagreement(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor],
                        tol: dict[str, Any]) -> str | None:
    for name, out in first.items():
        diff = (out.double() - second[name].double()).abs()
        worst = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
        if worst > tol["atol"]:
            return (f"{name}: two calls on the same inputs disagree by {worst:.3g} (the second with another output "
                    "poison and the grid's programs in reverse order): stale memory, unwritten rows, a result that "
                    "depends on program order, or a race")
    return None


def locate(reference: Any, inputs: dict[str, Any], output: str, index: Any, hidden: bool = False) -> str:
    """The task's own words for the case and the worst element (reference.describe), if it has them;
    a hidden case is described without its lengths."""
    describe = getattr(reference, "describe", None)
    if describe is None:
        return ""
    try:
        return describe(inputs, output, index, hidden=hidden)
    except Exception as exc:  # a task's describer must never turn a verdict into a crash
        return f"(the task could not describe the case: {type(exc).__name__})"
