"""Compare a candidate's outputs with the trusted reference (never in the candidate's process).

It runs in the trusted orchestrator, on CPU tensors or on the GPU's (the outputs trusted code
read back from the candidate's buffers).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

BF16_ULP_BITS = 8  # bf16 keeps 8 significant bits
# An fp32 relative error in this range is what TF32 dots give (10 mantissa bits, about 5e-4 per product)
TF32_RANGE = (1e-5, 1e-2)
TF32_HINT = ("; if the kernel's fp32 tl.dot does not ask for input_precision=\"ieee\" (or \"tf32x3\"), an error of "
             "this size is what TF32 gives: it is the NVIDIA default, and the CPU check runs it the same way (if it "
             "does ask, look elsewhere: a dropped option or a skipped key gives errors of this size too)")


def ulp(magnitude: float, dtype: str) -> float:
    bits = {"bfloat16": BF16_ULP_BITS, "float16": 11, "float32": 24}[dtype]
    return 2.0 ** (math.floor(math.log2(max(magnitude, 1e-30))) - bits + 1)


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = (out.double() - ref.double()).abs()
    norm = float(ref.double().norm())
    return float(diff.norm()) / max(norm, 1e-30), float(diff.max()) if diff.numel() else 0.0


def compare(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any], dtype: str,
            base: torch.Tensor | None = None, shown: Callable[[Any], Any] | None = None,
            ) -> tuple[str | None, float | None, float | None]:
    """(reason or None, rel_l2, max_abs). Fail closed: non-finite values are never tolerated. `shown` maps an
    index into `out` to the one the message names (gathered rows: an index into the whole output)."""
    shown = shown or (lambda index: index)
    if out.shape != ref.shape:
        return f"output shape {tuple(out.shape)} != expected {tuple(ref.shape)}", None, None
    bad = ~torch.isfinite(out)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()
        return (f"{int(bad.sum())} non-finite output values in {len(rows)} rows (first row "
                f"{shown((int(rows[0]),))[0]}): "
                "rows never written, or a NaN from an unreferenced pool slot"), None, None
    rel, worst = errors(out, ref)
    excess = (out.double() - ref.double()).abs() - (tol["atol"] + tol["rtol"] * ref.double().abs())
    if rel > tol["rel_l2"] or (excess > 0).any():
        at = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape)) if excess.numel() else ()
        hint = TF32_HINT if dtype == "float32" and TF32_RANGE[0] < rel < TF32_RANGE[1] else ""
        bound = "" if rel > tol["rel_l2"] else (  # which of the two limits failed
            f" (within the L2 limit, but an element is off by more than atol {tol['atol']:g} + rtol "
            f"{tol['rtol']:g} x |expected|)")
        return (f"wrong result: rel. L2 error {rel:.3g} (limit {tol['rel_l2']:.3g}), max abs error {worst:.3g}; "
                f"worst element {shown(at)}: got {float(out[at]):.5g}, expected {float(ref[at]):.5g}{bound}{hint}"), rel, worst
    factor = tol.get("comparative_factor")
    if factor is not None and base is not None:
        base_rel, base_worst = errors(base, ref)
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        if rel > factor * base_rel + 2.0 ** -BF16_ULP_BITS or worst > factor * base_worst + ulp(scale, dtype):
            return (f"less accurate than the baseline: rel. L2 {rel:.3g} vs baseline {base_rel:.3g}, max abs "
                    f"{worst:.3g} vs {base_worst:.3g} (allowed: {factor}x the baseline + one ulp)"), rel, worst
    return None, rel, worst


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


def judge(out: torch.Tensor, ref: torch.Tensor, tol: dict[str, Any], dtype: str,
          shown: Callable[[Any], Any] | None = None) -> tuple[str | None, Any, float | None, float | None]:
    """(reason or None, index of the worst element, rel. L2 error, max abs error)."""
    reason, rel, worst = compare(out, ref.to(out.device) if ref.device != out.device else ref, tol, dtype,
                                 shown=shown)
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


# ---- outputs of a run of a sample of the programs (interp.take_sampled): only what was written is judged
def written(out: torch.Tensor, poison: float) -> torch.Tensor:
    """The elements a sampled run wrote: those no longer the drawn poison (a NaN written is wrong, not unwritten)."""
    return out != torch.tensor(poison, dtype=out.dtype)


def row_mask(wrote: torch.Tensor) -> torch.Tensor:
    """The (token, head) rows with any written element: what the reference is asked for (`only=`)."""
    return wrote.flatten(2).any(2) if wrote.dim() > 2 else wrote


def sampled_pair(out: torch.Tensor, expected: torch.Tensor, wrote: torch.Tensor,
                 rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The written rows only (gathered: a sample is a few rows of a large output), unwritten elements of them
    zero on both sides (a row split across programs may be half written); and each gathered row's index."""
    at = rows.nonzero()
    pick = tuple(at.t())
    w = wrote[pick]
    got = torch.where(w, out[pick], torch.zeros((), dtype=out.dtype))
    ref = torch.where(w, expected[pick].to(out.device), torch.zeros((), dtype=expected.dtype))
    return got, ref, at


def full_index(at: torch.Tensor) -> Callable[[Any], Any]:
    """An index into a gathered pair (sampled_pair) as an index into the whole output."""
    return lambda index: None if index is None else tuple(int(i) for i in at[index[0]]) + tuple(index[1:])
